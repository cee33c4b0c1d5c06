"""Tag and song embedding networks, reference-checkpoint import, and spec-based rebuilding."""

from tagretrieval.models.branches import (
    PAPER_CNN_CHANNELS,
    ConvBlock,
    EmbeddingConv,
    GatedFusion,
    MLPBranch,
    ShortChunkCNN,
)
from tagretrieval.models.reference import (
    ReferenceKind,
    convert_reference_state_dict,
    detect_reference_kind,
    load_reference_checkpoint,
    model_from_reference,
)
from tagretrieval.models.retrieval import (
    AcousticModel,
    ConcatModel,
    CulturalModel,
    HybridModel,
    TagRetrievalModel,
    cut_eval_chunks,
)
from tagretrieval.models.features import FeaturesModel
from tagretrieval.models.spec import SpecMixin, build_from_spec, resolve_target

__all__ = [
    "FeaturesModel",
    "PAPER_CNN_CHANNELS",
    "AcousticModel",
    "ConcatModel",
    "ConvBlock",
    "CulturalModel",
    "EmbeddingConv",
    "GatedFusion",
    "HybridModel",
    "MLPBranch",
    "ReferenceKind",
    "ShortChunkCNN",
    "SpecMixin",
    "TagRetrievalModel",
    "build_from_spec",
    "convert_reference_state_dict",
    "cut_eval_chunks",
    "detect_reference_kind",
    "load_reference_checkpoint",
    "model_from_reference",
    "resolve_target",
]
