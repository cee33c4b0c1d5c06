"""musicnn and its VGG baseline (Pons & Serra, ISMIR-LBD 2019) as torch modules, loadable from the TF checkpoints.

The layer order, paddings and feature names follow ``musicnn/models.py`` of musicnn 0.1.0:

- TF's ``'same'`` padding of an even kernel ``k`` (stride 1) pads ``(k - 1) // 2`` before and the rest after;
  musicnn's explicit ``tf.pad`` of 3 frames each side is kept as such.
- TF kernels are ``HWIO`` (height = time, width = frequency) and are permuted to torch's ``OIHW``; dense kernels
  ``[in, out]`` are transposed.
- Batch norm is ``tf.layers.batch_normalization``'s: epsilon 1e-3, moving statistics (``momentum=0.01`` here is
  TF's 0.99), affine.
- The back end's flatten of ``concat([max_pool, mean_pool], axis=2)`` interleaves them: feature ``2 i`` is the
  max of channel ``i`` and ``2 i + 1`` its mean.

Inputs are musicnn's log-mel patches as this project lays out mels, ``[batch, n_mels=96, n_frames]``
(``pretrained.frontend`` computes them); musicnn's own arrays are ``[batch, n_frames, n_mels]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MODEL_OUTPUTS", "Musicnn", "MusicnnVGG", "build_network"]

TF_BN_EPSILON = 1e-3
TF_BN_MOMENTUM = 0.01  # torch's momentum is 1 - TF's (0.99)
N_MELS = 96
PATCH_FRAMES = 187

MODEL_OUTPUTS = {
    "musicnn": ("taggram", "logits", "max_pool", "mean_pool", "pooled", "penultimate"),
    "vgg": ("taggram", "logits", "pool5", "pooled"),
}
"""What each architecture's ``forward`` returns (``pooled`` is the song feature: see the classes)."""


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=TF_BN_EPSILON, momentum=TF_BN_MOMENTUM)


def _bn1d(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=TF_BN_EPSILON, momentum=TF_BN_MOMENTUM)


def _same_time_pad(x: Tensor, kernel_frames: int) -> Tensor:
    """TF 'same' padding along time (dim 2 of ``[batch, channels, time, freq]``) for stride 1."""
    before = (kernel_frames - 1) // 2
    return F.pad(x, (0, 0, before, kernel_frames - 1 - before))


class Musicnn(nn.Module):
    """musicnn: musically motivated front end (timbral + temporal filters), dense mid end, pooled back end.

    Args:
        n_tags: outputs of the last layer (50 for the shipped models).
        n_filters_midend: mid-end filters (64 for MTT_musicnn and MSD_musicnn).
        n_units_backend: penultimate units (200).

    ``forward(x [batch, 96, n_frames])`` (any ``n_frames >= 1``; musicnn was trained on 187) returns
    ``{"logits", "taggram" (sigmoid): [batch, n_tags], "max_pool", "mean_pool": [batch, 561 + 3 *
    n_filters_midend], "pooled": [batch, 2 * that] (max and mean side by side), "penultimate": [batch,
    n_units_backend]}``.
    """

    architecture = "musicnn"

    def __init__(self, *, n_tags: int = 50, n_filters_midend: int = 64, n_units_backend: int = 200):
        super().__init__()
        timbral_filters, temporal_filters = int(1.6 * 128), int(1.6 * 32)
        self.bn_input = _bn2d(1)
        self.timbral = nn.ModuleList(nn.Conv2d(1, timbral_filters, (7, int(f * N_MELS))) for f in (0.4, 0.7))
        self.timbral_bn = nn.ModuleList(_bn2d(timbral_filters) for _ in range(2))
        self.temporal_frames = (128, 64, 32)
        self.temporal = nn.ModuleList(nn.Conv2d(1, temporal_filters, (k, 1)) for k in self.temporal_frames)
        self.temporal_bn = nn.ModuleList(_bn2d(temporal_filters) for _ in range(3))
        frontend_channels = 2 * timbral_filters + 3 * temporal_filters  # 561
        self.midend = nn.ModuleList(
            nn.Conv1d(frontend_channels if i == 0 else n_filters_midend, n_filters_midend, 7) for i in range(3))
        self.midend_bn = nn.ModuleList(_bn1d(n_filters_midend) for _ in range(3))
        self.n_features = frontend_channels + 3 * n_filters_midend  # 753
        self.bn_pool = _bn1d(2 * self.n_features)
        self.dense = nn.Linear(2 * self.n_features, n_units_backend)
        self.bn_dense = _bn1d(n_units_backend)
        self.dropout = nn.Dropout(0.5)
        self.output = nn.Linear(n_units_backend, n_tags)

    def features(self, x: Tensor) -> Tensor:
        """``x [batch, 96, n_frames]`` -> the mid end's dense features ``[batch, 753, n_frames]``."""
        x = self.bn_input(x.transpose(1, 2).unsqueeze(1))  # [batch, 1, time, freq]
        padded = F.pad(x, (0, 0, 3, 3))
        front = [bn(F.relu(conv(padded))).amax(dim=3) for conv, bn in zip(self.timbral, self.timbral_bn)]
        front += [bn(F.relu(conv(_same_time_pad(x, k)))).amax(dim=3)
                  for conv, bn, k in zip(self.temporal, self.temporal_bn, self.temporal_frames)]
        out = [torch.cat(front, dim=1)]  # [batch, 561, time]
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn)):
            y = bn(F.relu(conv(F.pad(out[-1], (3, 3)))))
            out.append(y if i == 0 else y + out[-1])
        return torch.cat(out, dim=1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """See the class docstring."""
        features = self.features(x)
        max_pool, mean_pool = features.amax(dim=2), features.mean(dim=2)
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF's interleaved flatten
        penultimate = self.bn_dense(F.relu(self.dense(self.dropout(self.bn_pool(flat)))))
        logits = self.output(self.dropout(penultimate))
        return {"logits": logits, "taggram": torch.sigmoid(logits), "max_pool": max_pool, "mean_pool": mean_pool,
                "pooled": torch.cat([max_pool, mean_pool], dim=1), "penultimate": penultimate}

    def load_tf(self, weights: dict[str, "object"]) -> None:
        """Copy musicnn's TF variables (``read_checkpoint``'s dict) into this module; every one must be used."""
        loader = _TFLoader(weights)
        loader.bn(self.bn_input, "batch_normalization")
        convs = [*self.timbral, *self.temporal]
        bns = [*self.timbral_bn, *self.temporal_bn]
        for i, (conv, bn) in enumerate(zip(convs, bns)):
            loader.conv2d(conv, "conv2d" if i == 0 else f"conv2d_{i}")
            loader.bn(bn, f"batch_normalization_{i + 1}")
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn)):
            loader.conv1d(conv, f"conv2d_{i + 5}")
            loader.bn(bn, f"batch_normalization_{i + 6}")
        loader.bn(self.bn_pool, "batch_normalization_9")
        loader.dense(self.dense, "dense")
        loader.bn(self.bn_dense, "batch_normalization_10")
        loader.dense(self.output, "dense_1")
        loader.done()


class MusicnnVGG(nn.Module):
    """musicnn's VGG baseline: five 3x3 conv blocks with max pooling, then one dense layer.

    ``forward(x [batch, 96, 187])`` (exactly 187 frames, as musicnn requires) returns ``{"logits", "taggram":
    [batch, n_tags], "pool5": [batch, 2, n_filters] (time, filters, frequency squeezed), "pooled": [batch, 2 *
    n_filters] (pool5 flattened, time-major, as the dense layer reads it)}``.
    """

    architecture = "vgg"

    def __init__(self, *, n_tags: int = 50, n_filters: int = 128):
        super().__init__()
        self.bn_input = _bn2d(1)
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else n_filters, n_filters, 3, padding=1) for i in range(5))
        self.bns = nn.ModuleList(_bn2d(n_filters) for _ in range(5))
        self.pools = nn.ModuleList([nn.MaxPool2d((4, 1), (2, 2)), nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2),
                                    nn.MaxPool2d(2, 2), nn.MaxPool2d(4, 4)])
        self.dropout_conv = nn.Dropout(0.25)
        self.dropout = nn.Dropout(0.5)
        self.output = nn.Linear(2 * n_filters, n_tags)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """See the class docstring."""
        if x.shape[-1] != PATCH_FRAMES:
            raise ValueError(f"the VGG models take {PATCH_FRAMES}-frame patches, got {x.shape[-1]} frames")
        x = self.bn_input(x.transpose(1, 2).unsqueeze(1))  # [batch, 1, time, freq]
        for i, (conv, bn, pool) in enumerate(zip(self.convs, self.bns, self.pools)):
            x = pool(bn(F.relu(conv(self.dropout_conv(x) if i else x))))
        pool5 = x.permute(0, 2, 3, 1).flatten(2)  # NHWC [batch, 2, 1, filters] -> [batch, 2, filters]
        pooled = pool5.flatten(1)
        logits = self.output(self.dropout(pooled))
        return {"logits": logits, "taggram": torch.sigmoid(logits), "pool5": pool5, "pooled": pooled}

    def load_tf(self, weights: dict[str, "object"]) -> None:
        """Copy the VGG model's TF variables into this module; every one must be used."""
        loader = _TFLoader(weights)
        loader.bn(self.bn_input, "batch_normalization")
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            loader.conv2d(conv, f"{i + 1}CNN")
            loader.bn(bn, f"batch_normalization_{i + 1}")
        loader.dense(self.output, "dense")
        loader.done()


class _TFLoader:
    """Copies named TF variables into torch parameters, checking shapes, and that none is left over."""

    def __init__(self, weights: dict):
        self.weights = {k: v for k, v in weights.items() if not _is_training_state(k)}
        self.used: set[str] = set()

    def take(self, name: str) -> Tensor:
        if name not in self.weights:
            raise ValueError(f"the checkpoint has no variable {name!r}")
        self.used.add(name)
        return torch.from_numpy(self.weights[name])

    @staticmethod
    def _copy(target: Tensor, value: Tensor, name: str) -> None:
        if tuple(target.shape) != tuple(value.shape):
            raise ValueError(f"variable {name!r} has shape {tuple(value.shape)}, the module expects "
                             f"{tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(value)

    def conv2d(self, conv: nn.Conv2d, scope: str) -> None:
        self._copy(conv.weight, self.take(f"{scope}/kernel").permute(3, 2, 0, 1), f"{scope}/kernel")  # HWIO->OIHW
        self._copy(conv.bias, self.take(f"{scope}/bias"), f"{scope}/bias")

    def conv1d(self, conv: nn.Conv1d, scope: str) -> None:
        kernel = self.take(f"{scope}/kernel")  # [time, channels, 1, out]: a 2-d conv over the full width
        if kernel.shape[2] != 1:
            raise ValueError(f"variable {scope}/kernel has shape {tuple(kernel.shape)}, expected one input channel")
        self._copy(conv.weight, kernel[:, :, 0, :].permute(2, 1, 0), f"{scope}/kernel")
        self._copy(conv.bias, self.take(f"{scope}/bias"), f"{scope}/bias")

    def dense(self, linear: nn.Linear, scope: str) -> None:
        self._copy(linear.weight, self.take(f"{scope}/kernel").T, f"{scope}/kernel")
        self._copy(linear.bias, self.take(f"{scope}/bias"), f"{scope}/bias")

    def bn(self, bn: nn.modules.batchnorm._BatchNorm, scope: str) -> None:
        for attr, name in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                           ("running_var", "moving_variance")):
            self._copy(getattr(bn, attr), self.take(f"{scope}/{name}"), f"{scope}/{name}")

    def done(self) -> None:
        left = sorted(set(self.weights) - self.used)
        if left:
            raise ValueError(f"the checkpoint has variables the module does not use: {left[:5]}")


def _is_training_state(name: str) -> bool:
    """Adam's slots, its beta powers and the global step: saved by training, not part of the network."""
    return name.endswith(("/Adam", "/Adam_1")) or name in ("beta1_power", "beta2_power", "global_step")


def build_network(architecture: str, *, n_tags: int = 50) -> Musicnn | MusicnnVGG:
    """An untrained network of ``architecture`` (``"musicnn"`` or ``"vgg"``) with the shipped models' sizes."""
    if architecture == "musicnn":
        return Musicnn(n_tags=n_tags)
    if architecture == "vgg":
        return MusicnnVGG(n_tags=n_tags)
    raise ValueError(f"unknown musicnn architecture {architecture!r}: expected 'musicnn' or 'vgg'")
