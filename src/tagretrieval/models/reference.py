"""Import checkpoints of the reference implementation (minzwon/tag-based-music-retrieval, Lightning 0.9).

A reference checkpoint is ``{"state_dict": {"model.<key>": tensor, ...}, ...}``; the ``<key>`` sets are

- ``AudioModel``  -> ``acoustic``: ``spec_bn``, ``layer1..7`` (conv, bn), ``layer8`` (conv[, bn]), ``fc1/bn1/fc2``
- ``CFModel``     -> ``cultural``: ``cf_fc1/cf_bn1/cf_fc2``, ``fc1/bn1/fc2``
- ``HybridModel`` -> ``concat``: CNN with ``layer8`` to 200, ``cat_fc1/cat_bn1/cat_fc2`` (400->512->256), ``fc1/bn1/fc2``

(``fc1/bn1/fc2`` is always the tag branch.) Our modules use the same leaf names, so the conversion
renames the first key component only (``layer3.conv.weight`` -> ``cnn.layer3.conv.weight``,
``cf_bn1.running_var`` -> ``cf_branch.bn1.running_var``). The reference repository has two revisions of
``layer8``, with and without BatchNorm; both are accepted. Sizes are read from the weight shapes
(paper sizes for paper checkpoints); ``n_mels=128``, ``chunk_frames=173`` and ``n_eval_chunks=8`` are
the reference's input settings.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from tagretrieval.models.retrieval import AcousticModel, ConcatModel, CulturalModel, TagRetrievalModel

__all__ = [
    "ReferenceKind",
    "detect_reference_kind",
    "convert_reference_state_dict",
    "model_from_reference",
    "load_reference_checkpoint",
]

ReferenceKind = Literal["acoustic", "cultural", "concat"]

_LIGHTNING_PREFIX = "model."
_LAYER = re.compile(r"layer(\d+)$")
_RENAMES = {
    "spec_bn": "cnn.spec_bn",
    "fc1": "tag_branch.fc1",
    "bn1": "tag_branch.bn1",
    "fc2": "tag_branch.fc2",
    "cf_fc1": "cf_branch.fc1",
    "cf_bn1": "cf_branch.bn1",
    "cf_fc2": "cf_branch.fc2",
    "cat_fc1": "cat_branch.fc1",
    "cat_bn1": "cat_branch.bn1",
    "cat_fc2": "cat_branch.fc2",
}
_REFERENCE_INPUTS = {"n_mels": 128, "chunk_frames": 173, "n_eval_chunks": 8}


def _strip_lightning_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the LightningModule's ``model.`` prefix (all keys must carry it, or none)."""
    keys = list(state_dict)
    if not keys:
        raise ValueError("the reference state_dict is empty")
    prefixed = [key.startswith(_LIGHTNING_PREFIX) for key in keys]
    if all(prefixed):
        return {key[len(_LIGHTNING_PREFIX) :]: value for key, value in state_dict.items()}
    if not any(prefixed):
        return dict(state_dict)
    stray = sorted(key for key, is_prefixed in zip(keys, prefixed) if not is_prefixed)
    raise ValueError(f"reference state_dict mixes '{_LIGHTNING_PREFIX}'-prefixed keys with others: {stray[:10]}")


def detect_reference_kind(state_dict: Mapping[str, Tensor]) -> ReferenceKind:
    """Which reference network a state dict (with or without the ``model.`` prefix) belongs to.

    Raises:
        ValueError: the keys match none of the three reference networks.
    """
    keys = set(_strip_lightning_prefix(state_dict))
    has_cnn = "layer1.conv.weight" in keys
    if "cat_fc1.weight" in keys and has_cnn:
        return "concat"
    if "cf_fc1.weight" in keys and not has_cnn:
        return "cultural"
    if has_cnn and "fc1.weight" in keys and not any(key.startswith(("cf_", "cat_")) for key in keys):
        return "acoustic"
    raise ValueError(
        "not a recognised reference state_dict: expected the keys of AudioModel (spec_bn, layer1..8, fc1/bn1/fc2), "
        "CFModel (cf_fc1/cf_bn1/cf_fc2, fc1/bn1/fc2) or HybridModel (spec_bn, layer1..8, cat_fc1/cat_bn1/cat_fc2, "
        f"fc1/bn1/fc2); got {sorted(keys)[:20]}{' ...' if len(keys) > 20 else ''}"
    )


def _rename(key: str) -> str | None:
    head, _, rest = key.partition(".")
    if _LAYER.match(head):
        return f"cnn.{head}.{rest}"
    if head in _RENAMES:
        return f"{_RENAMES[head]}.{rest}"
    return None


def convert_reference_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[ReferenceKind, dict[str, Tensor]]:
    """Rename a reference state dict to ours: ``(kind, {our_key: tensor})``.

    Raises:
        ValueError: unrecognised network, or keys that have no counterpart (listed).
    """
    kind = detect_reference_kind(state_dict)
    converted: dict[str, Tensor] = {}
    unknown = []
    for key, value in _strip_lightning_prefix(state_dict).items():
        ours = _rename(key)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = value
    if unknown:
        raise ValueError(f"reference {kind} state_dict has keys with no counterpart in our model: {sorted(unknown)}")
    return kind, converted


def _shape(state_dict: Mapping[str, Tensor], key: str) -> torch.Size:
    if key not in state_dict:
        raise ValueError(f"reference state_dict lacks {key!r}, needed to read the network's sizes")
    return state_dict[key].shape


def _model_kwargs(kind: ReferenceKind, ours: Mapping[str, Tensor]) -> dict[str, object]:
    """Constructor arguments read from the converted weights' shapes."""
    hidden_dim, word_dim = _shape(ours, "tag_branch.fc1.weight")
    kwargs: dict[str, object] = {
        "word_dim": int(word_dim),
        "hidden_dim": int(hidden_dim),
        "embedding_dim": int(_shape(ours, "tag_branch.fc2.weight")[0]),
    }
    if kind == "cultural":
        kwargs["cf_dim"] = int(_shape(ours, "cf_branch.fc1.weight")[1])
        return kwargs
    n_layers = max(int(key.split(".")[1][len("layer") :]) for key in ours if key.startswith("cnn.layer"))
    channels = [int(_shape(ours, f"cnn.layer{index}.conv.weight")[0]) for index in range(1, n_layers)]
    output_layer = f"cnn.layer{n_layers}"
    cnn_out_dim = int(_shape(ours, f"{output_layer}.conv.weight")[0])
    kwargs.update(_REFERENCE_INPUTS, cnn_channels=channels, cnn_output_batchnorm=f"{output_layer}.bn.weight" in ours)
    if kind == "concat":
        kwargs["cnn_out_dim"] = cnn_out_dim
        kwargs["cf_dim"] = int(_shape(ours, "cat_branch.fc1.weight")[1]) - cnn_out_dim
    return kwargs


_CLASSES: dict[str, type[TagRetrievalModel]] = {
    "acoustic": AcousticModel,
    "cultural": CulturalModel,
    "concat": ConcatModel,
}


def model_from_reference(state_dict: Mapping[str, Tensor]) -> TagRetrievalModel:
    """Build the matching model (paper sizes for paper checkpoints), load the weights strictly, ``eval()``.

    Args:
        state_dict: the reference checkpoint's ``"state_dict"`` (``model.``-prefixed or not).
    Raises:
        ValueError: unrecognised keys, or keys/shapes that do not fit the rebuilt model (listed).
    """
    kind, ours = convert_reference_state_dict(state_dict)
    try:
        model = _CLASSES[kind](**_model_kwargs(kind, ours))
    except ValueError as error:
        raise ValueError(f"reference {kind} checkpoint has sizes we cannot rebuild: {error}") from error
    expected = set(model.state_dict())
    # Torch fills a missing BatchNorm `num_batches_tracked` itself (checkpoints from torch < 1.2).
    missing = sorted(key for key in expected - set(ours) if not key.endswith("num_batches_tracked"))
    unexpected = sorted(set(ours) - expected)
    if missing or unexpected:
        raise ValueError(
            f"reference {kind} state_dict does not fit {type(model).__name__}: "
            f"missing {missing or 'nothing'}; unexpected {unexpected or 'nothing'} (our key names)"
        )
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as error:
        raise ValueError(f"reference {kind} weights do not fit {type(model).__name__}: {error}") from error
    return model.eval()


def load_reference_checkpoint(path: str | Path, *, trusted: bool = False) -> TagRetrievalModel:
    """Load a reference checkpoint file (or a saved bare state dict) into our model, in eval mode.

    Args:
        path: ``.ckpt``/``.pth`` written by the reference trainer: ``{"state_dict": {...}, ...}``.
        trusted: allow full unpickling (``weights_only=False``), which can run arbitrary code. Only for
            files from a source you trust; the default loads tensors and plain containers only.
    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds other Python objects (and ``trusted`` is False), or no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds Python objects other than tensors (e.g. Lightning 0.9 hparams), which "
            "torch.load(weights_only=True) refuses. If you trust the file, pass trusted=True; or re-save "
            "just the weights once, in an environment that can unpickle it:\n"
            "    import torch; ckpt = torch.load(PATH, map_location='cpu', weights_only=False)\n"
            "    torch.save({'state_dict': ckpt['state_dict']}, 'reference_weights.ckpt')\n"
            f"(loader error: {str(error).splitlines()[0]})"
        ) from error
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint, Mapping) and checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        state_dict = checkpoint
    else:
        found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"{path} has no 'state_dict' (found {found})")
    try:
        return model_from_reference(state_dict)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
