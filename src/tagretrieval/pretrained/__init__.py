"""Pretrained networks on real music: musicnn and its VGG baseline (musicnn 0.1.0's MTT and MSD weights) in torch.

What belongs here: the reader of the TF-1 checkpoint files (``checkpoint``), musicnn's own front end
(``frontend``), the networks (``musicnn``), whole clips through them (``embedder``), and where the weights are and
what their tags are (``weights``).
Layer 1 beside ``audio``: it may import ``runtime`` and ``audio`` only; the song features, baselines and models
that use these networks live in their own layers. The ``musicnn`` package is data only here (never imported):
``pip install --no-deps musicnn==0.1.0``.
"""

from tagretrieval.pretrained.checkpoint import CheckpointError, read_checkpoint
from tagretrieval.pretrained.embedder import LAYERS, MusicnnEmbedder, pretrained_model
from tagretrieval.pretrained.frontend import MUSICNN_FRONTEND, MusicnnFrontend, patches
from tagretrieval.pretrained.musicnn import Musicnn, MusicnnVGG, build_network
from tagretrieval.pretrained.weights import (INSTALL_HINT, MODELS, MusicnnMissingError, checkpoint_prefix,
                                             load_pretrained, model_tags, overlapping_dataset)

__all__ = [
    "INSTALL_HINT",
    "LAYERS",
    "MODELS",
    "MUSICNN_FRONTEND",
    "CheckpointError",
    "Musicnn",
    "MusicnnEmbedder",
    "MusicnnFrontend",
    "MusicnnMissingError",
    "MusicnnVGG",
    "build_network",
    "checkpoint_prefix",
    "load_pretrained",
    "model_tags",
    "overlapping_dataset",
    "patches",
    "pretrained_model",
    "read_checkpoint",
]
