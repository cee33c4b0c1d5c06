"""The four networks the ``musicnn`` 0.1.0 wheel ships, found without importing the package, and their tags.

``musicnn`` (ISC licence; Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio
tagging", ISMIR-LBD 2019) holds one TF-1 checkpoint folder per model inside the package: ``MTT_musicnn``,
``MSD_musicnn``, ``MTT_vgg``, ``MSD_vgg`` (trained on MagnaTagATune and the Million Song Dataset, 50 tags each).
Its declared dependencies are old pins (TensorFlow 1.x); the files are data, so it is installed with
``pip install --no-deps musicnn==0.1.0`` and never imported: :func:`checkpoint_prefix` finds the folder through
``importlib``'s metadata (the package's ``__init__`` is not run).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tagretrieval.pretrained.checkpoint import read_checkpoint
from tagretrieval.pretrained.musicnn import Musicnn, MusicnnVGG, build_network
from tagretrieval.runtime.errors import ConfigError, MissingFileError

__all__ = ["INSTALL_HINT", "MODELS", "MSD_TAGS", "MTT_TAGS", "MusicnnMissingError", "checkpoint_prefix",
           "load_pretrained", "model_tags", "overlapping_dataset"]

INSTALL_HINT = "pip install --no-deps musicnn==0.1.0"

# musicnn/configuration.py of musicnn 0.1.0, in the order of the networks' outputs
MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral")
MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House",
    "happy")

MODELS: dict[str, dict] = {
    "MTT_musicnn": {"architecture": "musicnn", "trained_on": "MagnaTagATune", "tags": MTT_TAGS},
    "MSD_musicnn": {"architecture": "musicnn", "trained_on": "Million Song Dataset", "tags": MSD_TAGS},
    "MTT_vgg": {"architecture": "vgg", "trained_on": "MagnaTagATune", "tags": MTT_TAGS},
    "MSD_vgg": {"architecture": "vgg", "trained_on": "Million Song Dataset", "tags": MSD_TAGS},
}
"""The shipped networks: architecture, training set, and their 50 tags in output order."""

# the datasets of this project each training set overlaps (evaluating there measures memorisation in part)
_OVERLAP = {"MagnaTagATune": ("mtat",), "Million Song Dataset": ("msd500",)}


class MusicnnMissingError(MissingFileError):
    """The ``musicnn`` package (the pretrained weights) is not installed."""


def _check_model(model: str) -> dict:
    if model not in MODELS:
        raise ConfigError(f"unknown pretrained model {model!r}: expected one of {sorted(MODELS)}")
    return MODELS[model]


def weights_installed() -> bool:
    """Whether the ``musicnn`` package (the weights) is installed, without importing it."""
    return importlib.util.find_spec("musicnn") is not None


def checkpoint_prefix(model: str) -> str:
    """The TF checkpoint prefix of ``model`` inside the installed ``musicnn`` package (the folder, with a ``/``).

    Raises:
        ConfigError: ``model`` is not one of :data:`MODELS`.
        MusicnnMissingError: the package is not installed, or lacks the model's files.
    """
    _check_model(model)
    spec = importlib.util.find_spec("musicnn")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise MusicnnMissingError(f"pretrained model {model!r} needs the musicnn weights: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / model
    if not (folder / ".index").is_file():
        raise MusicnnMissingError(f"the installed musicnn package has no {model} checkpoint at {str(folder)!r}: "
                                  f"reinstall it with {INSTALL_HINT}")
    return f"{folder}/"


def model_tags(model: str) -> tuple[str, ...]:
    """``model``'s 50 tags in the order of its outputs."""
    return _check_model(model)["tags"]


def overlapping_dataset(model: str, dataset: str) -> str | None:
    """A warning when ``model`` was trained on (a superset of) ``dataset`` (an importer name such as ``mtat``)."""
    trained_on = _check_model(model)["trained_on"]
    if dataset.lower() in _OVERLAP.get(trained_on, ()):
        return (f"warning: {model} was trained on {trained_on}, which contains the songs of data={dataset}: "
                "scores measured there are optimistic (the network has seen the evaluation songs)")
    return None


def load_pretrained(model: str, *, device: str | torch.device = "cpu") -> Musicnn | MusicnnVGG:
    """``model``'s network with its shipped weights, in eval mode, on ``device``.

    Raises:
        ConfigError: unknown ``model``.
        MusicnnMissingError: the weights are not installed.
        tagretrieval.pretrained.checkpoint.CheckpointError: the checkpoint files are truncated or corrupt.
    """
    info = _check_model(model)
    prefix = checkpoint_prefix(model)
    weights = read_checkpoint(prefix, keep=lambda name: not name.endswith(("/Adam", "/Adam_1")))
    network = build_network(info["architecture"], n_tags=len(info["tags"]))
    network.load_tf(weights)
    return network.eval().to(device)
