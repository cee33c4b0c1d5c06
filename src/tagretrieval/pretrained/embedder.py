"""One clip -> a musicnn network's outputs averaged over the clip's 3-s patches: song embeddings and taggrams.

A clip (any sample rate; :func:`tagretrieval.audio.load_audio` resamples it to musicnn's 16 kHz) goes through
musicnn's front end (:mod:`.frontend`), is cut into non-overlapping 187-frame (3-s) patches (a clip shorter than one
is repeated to one, the last incomplete patch is dropped) and every patch goes through the network; the clip's
value of an output is the **mean over its patches** (for ``taggram``, the mean of the per-patch sigmoids, as
musicnn's ``extractor`` taggram averaged over time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tagretrieval.audio import load_audio
from tagretrieval.pretrained.frontend import MusicnnFrontend, patches
from tagretrieval.pretrained.weights import MODELS, load_pretrained, model_tags
from tagretrieval.runtime.errors import ConfigError

__all__ = ["ARCHITECTURES", "EMBEDDER_VERSION", "LAYERS", "WEIGHTS", "MusicnnEmbedder", "check_layer", "pretrained_model"]

EMBEDDER_VERSION = 1
WEIGHTS = ("MTT", "MSD")
"""MTT: trained on MagnaTagATune; MSD: on the Million Song Dataset (:data:`.weights.MODELS`)."""
ARCHITECTURES = ("musicnn", "vgg")
LAYERS: dict[str, tuple[str, ...]] = {
    "musicnn": ("penultimate", "pooled", "max_pool", "mean_pool", "taggram"),
    "vgg": ("pooled", "taggram"),
}
"""The outputs usable as song vectors, per architecture: musicnn ``penultimate`` (200, the layer before the
classifier), ``pooled`` (1506: ``max_pool`` and ``mean_pool``, 753 each, side by side), ``taggram`` (50); VGG
``pooled`` (256: pool5 flattened, the classifier's input) and ``taggram``."""


def pretrained_model(*, weights: str, architecture: str) -> str:
    """The wheel's model name of ``weights`` (MTT | MSD) and ``architecture`` (musicnn | vgg): ``MTT_musicnn``..."""
    if weights not in WEIGHTS:
        raise ConfigError(f"musicnn weights={weights!r} is not one of {list(WEIGHTS)}")
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"musicnn architecture={architecture!r} is not one of {list(ARCHITECTURES)}")
    name = f"{weights}_{architecture}"
    assert name in MODELS, name
    return name


def check_layer(model: str, layer: str, layers: dict[str, tuple[str, ...]] = LAYERS) -> str:
    """The architecture of the wheel's ``model`` after checking that ``layer`` is one of its ``layers`` (default
    :data:`LAYERS`; ``model=musicnn`` passes its own, without the taggram).

    Raises:
        ConfigError: an unknown model, or a layer its architecture does not have; the message lists the choices.
    """
    if model not in MODELS:
        raise ConfigError(f"unknown pretrained model {model!r}: expected one of {sorted(MODELS)}")
    architecture = MODELS[model]["architecture"]
    if layer not in layers[architecture]:
        raise ConfigError(f"layer={layer!r} is not an output of the {architecture} networks: expected one of "
                          f"{list(layers[architecture])}")
    return architecture


class MusicnnEmbedder:
    """A pretrained musicnn network applied to whole clips (module doc).

    Args:
        model: ``MTT_musicnn`` | ``MSD_musicnn`` | ``MTT_vgg`` | ``MSD_vgg``.
        layer: the output :meth:`__call__` returns, one of :data:`LAYERS` of the model's architecture.
        batch_size: patches per forward pass.
        device: ``"cpu"`` or ``"cuda"``.

    The network is read from the wheel on first use (``MusicnnMissingError`` naming the install command if it is
    not installed); the front end computes in float32 (docs/pretrained.md, "The float16 cast").
    """

    sample_rate = 16000

    def __init__(self, *, model: str, layer: str, batch_size: int = 64, device: str = "cpu") -> None:
        check_layer(model, layer)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.layer, self.batch_size, self.device = model, layer, int(batch_size), str(device)
        self.tags: tuple[str, ...] = model_tags(model)
        self.frontend = MusicnnFrontend()
        self._network = None
        self._dim: int | None = None

    def with_layer(self, layer: str) -> "MusicnnEmbedder":
        """The same network giving ``layer`` (ConfigError if its architecture lacks it); the network is read now
        (MusicnnMissingError without the wheel) and shared, not read twice."""
        other = MusicnnEmbedder(model=self.model, layer=layer, batch_size=self.batch_size, device=self.device)
        other._network = self.network
        return other

    @property
    def network(self) -> torch.nn.Module:
        if self._network is None:
            self._network = load_pretrained(self.model, device=self.device)
        return self._network

    def params(self) -> dict:
        """Everything that determines the vectors (JSON), for the manifest of a cache of them."""
        return {"embedder_version": EMBEDDER_VERSION, "model": self.model, "layer": self.layer,
                "frontend": self.frontend.params(), "patches": "non-overlapping, short clips repeated, mean"}

    @property
    def dim(self) -> int:
        """Values in one vector of ``layer`` (one forward pass of a silent patch, the first time)."""
        if self._dim is None:
            with torch.no_grad():
                out = self.network(torch.zeros(1, 96, 187, device=self.device))
            self._dim = int(out[self.layer].shape[1])
        return self._dim

    @property
    def names(self) -> list[str]:
        """``[dim]`` names of the values: ``MTT_musicnn.penultimate000``..., the tags for ``taggram``."""
        if self.layer == "taggram":
            return [f"{self.model}.taggram.{tag}" for tag in self.tags]
        return [f"{self.model}.{self.layer}{j:04d}" for j in range(self.dim)]

    def outputs(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the network for the clip ``y`` (float32 ``[n_samples]`` at 16 kHz), each the mean over
        the clip's patches: ``{name: float32 [size]}`` (the names of :data:`.musicnn.MODEL_OUTPUTS`)."""
        y = torch.as_tensor(np.asarray(y, dtype=np.float32))
        if y.ndim != 1 or y.shape[0] == 0:
            raise ValueError(f"expected a mono clip [n_samples], got shape {tuple(y.shape)}")
        with torch.no_grad():
            x = patches(self.frontend(y.to(self.device)))  # [n_patches, 96, 187]
            sums: dict[str, torch.Tensor] = {}
            for start in range(0, len(x), self.batch_size):
                out = self.network(x[start:start + self.batch_size])
                for key, value in out.items():
                    total = value.double().sum(dim=0)
                    sums[key] = total if key not in sums else sums[key] + total
        return {key: (value / len(x)).float().cpu().numpy() for key, value in sums.items()}

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """The clip's ``layer`` vector, float32 ``[dim]`` (``y``: float32 ``[n_samples]`` at 16 kHz)."""
        return self.outputs(y)[self.layer]

    def taggram(self, y: np.ndarray) -> np.ndarray:
        """The clip's tag probabilities, float32 ``[50]`` in the order of :attr:`tags` (mean over patches)."""
        return self.outputs(y)["taggram"]

    def load(self, path: str | Path) -> np.ndarray:
        """An audio file decoded, mixed to mono and resampled to 16 kHz (``AudioDecodeError`` if it cannot be)."""
        return load_audio(path, sample_rate=self.sample_rate)
