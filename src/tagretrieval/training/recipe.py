"""The training recipe's automatic settings: what a ``null`` in the config becomes, from the data and the device.

Two settings are chosen at start unless given (docs/recipe.md); the task layer fills them in and prints the whole
recipe as one block (:func:`recipe_block`):

- ``sampler.pairs_per_epoch: null``: :func:`auto_pairs_per_epoch`, ``CROPS_PER_SONG`` training crops per training
  song and epoch (so an epoch, and with it the interval between validations, grows with the data; with
  ``train_chunks`` crops per pair, ``CROPS_PER_SONG / train_chunks`` pairs per song: the compute of an epoch does not
  depend on the context length), in whole batches on every rank, at least ``MIN_CROPS_PER_EPOCH`` and at most
  ``MAX_CROPS_PER_EPOCH`` of the device (a CPU epoch stays a few minutes long, so that early stopping can act);
- ``cnn_channels: null``: :func:`auto_cnn_channels`, the widest CNN the device trains in reasonable time: the
  paper's on a GPU, ``CPU_CNN_CHANNELS`` on a CPU.

How long training runs is not chosen here: it stops when validation stops improving (``callbacks.early_stopping``),
within ``trainer.max_epochs``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tagretrieval.models.branches import PAPER_CNN_CHANNELS

__all__ = ["CPU_CNN_CHANNELS", "CROPS_PER_SONG", "GPU_CNN_CHANNELS", "MAX_CROPS_PER_EPOCH", "MIN_CROPS_PER_EPOCH",
           "auto_cnn_channels", "auto_pairs_per_epoch", "recipe_block"]

CPU_CNN_CHANNELS: tuple[int, ...] = (8, 16, 16, 32, 32, 64, 128)
"""Twice the demo CNN's widths: on 2 CPU cores 1.3x its time per crop (docs/recipe.md: measured)."""
GPU_CNN_CHANNELS: tuple[int, ...] = tuple(PAPER_CNN_CHANNELS)
CROPS_PER_SONG = 4
"""Training crops per training song and epoch."""
MIN_CROPS_PER_EPOCH = 2048
"""An epoch of a small dataset still has this many crops (validation stays a small part of the time)."""
MAX_CROPS_PER_EPOCH: Mapping[str, int] = {"cpu": 12288, "gpu": 262144}


def auto_pairs_per_epoch(*, n_train_songs: int, batch_size: int, world_size: int, device: str,
                         train_chunks: int = 1) -> int:
    """``CROPS_PER_SONG x n_train_songs / train_chunks`` pairs (``train_chunks`` crops each), within
    ``[MIN_CROPS_PER_EPOCH, MAX_CROPS_PER_EPOCH[device]]`` crops, rounded up to whole steps of ``batch_size x
    world_size`` pairs (at least one step).

    Raises:
        ValueError: an unknown device, or sizes < 1.
    """
    if device not in MAX_CROPS_PER_EPOCH:
        raise ValueError(f"device must be one of {sorted(MAX_CROPS_PER_EPOCH)}, got {device!r}")
    if min(n_train_songs, batch_size, world_size, train_chunks) < 1:
        raise ValueError("n_train_songs, batch_size, world_size and train_chunks must be >= 1")
    crops = min(max(CROPS_PER_SONG * n_train_songs, MIN_CROPS_PER_EPOCH), MAX_CROPS_PER_EPOCH[device])
    step = batch_size * world_size
    return step * max(1, math.ceil(crops / train_chunks / step))


def auto_cnn_channels(*, device: str) -> list[int]:
    """The CNN widths for ``device`` (``"cpu"`` or ``"gpu"``)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    return list(GPU_CNN_CHANNELS if device == "gpu" else CPU_CNN_CHANNELS)


def recipe_block(rows: Sequence[tuple[str, str]], *, title: str) -> str:
    """The recipe as one aligned block: ``title`` then ``  name  value`` lines."""
    width = max(len(name) for name, _ in rows)
    return "\n".join([title, *(f"  {name.ljust(width)}  {value}" for name, value in rows)])
