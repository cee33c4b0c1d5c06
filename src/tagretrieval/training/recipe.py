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

How training follows the number of processes (``world_size``, docs/scale-out.md "Scaling rules"), all in
:func:`scale_plan`, which the task layer applies and prints and ``python -m tagretrieval.training.recipe --table``
tabulates:

- the epoch's crop budget is **global**: ``pairs_per_epoch`` is shared by the ranks, so an epoch sees the same crops
  whatever the world size, in ``pairs_per_epoch / (batch_size x world_size)`` steps;
- the learning rate is ``optimizer.lr`` (one process's) x ``sqrt(world_size)`` (``scaling.lr: sqrt``, the
  square-root rule for Adam-type optimizers; ``linear`` or ``none`` on request);
- the warm-up is counted in **pairs**: ``scheduler.warmup_steps`` steps of one process's batch, i.e.
  ``warmup_steps x batch_size`` pairs, which ``world_size`` processes see in ``ceil(warmup_steps / world_size)`` steps;
- validation reads at most ``scaling.valid_crop_fraction`` (25%) of the training crops between two validations
  (``validation.max_songs: null``: a seeded subset of the valid split, never fewer than ``MIN_VALID_SONGS`` songs; a
  given ``validation.max_songs`` is kept).

How long training runs is not chosen here: it stops when validation stops improving (``callbacks.early_stopping``),
within ``trainer.max_epochs``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tagretrieval.models.branches import PAPER_CNN_CHANNELS

__all__ = ["CPU_CNN_CHANNELS", "CROPS_PER_SONG", "GPU_CNN_CHANNELS", "LR_SCALING", "MAX_CROPS_PER_EPOCH",
           "MIN_CROPS_PER_EPOCH", "MIN_VALID_SONGS", "ScalePlan", "auto_cnn_channels", "auto_pairs_per_epoch",
           "lr_factor", "recipe_block", "scale_plan", "scale_table"]

CPU_CNN_CHANNELS: tuple[int, ...] = (8, 16, 16, 32, 32, 64, 128)
"""Twice the demo CNN's widths: on 2 CPU cores 1.3x its time per crop (docs/recipe.md: measured)."""
GPU_CNN_CHANNELS: tuple[int, ...] = tuple(PAPER_CNN_CHANNELS)
CROPS_PER_SONG = 4
"""Training crops per training song and epoch."""
MIN_CROPS_PER_EPOCH = 2048
"""An epoch of a small dataset still has this many crops (validation stays a small part of the time)."""
MAX_CROPS_PER_EPOCH: Mapping[str, int] = {"cpu": 12288, "gpu": 262144}
"""The most crops of an epoch, over all ranks together (an epoch is the same work whatever the world size)."""
LR_SCALING = ("sqrt", "linear", "none")
"""How ``optimizer.lr`` (one process's rate) grows with the world size (``scaling.lr``)."""
MIN_VALID_SONGS = 1000
"""The validation budget never validates on fewer songs than this (fewer make model selection noisy; a small valid
split is validated whole)."""


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


def lr_factor(world_size: int, *, rule: str) -> float:
    """The learning rate's multiplier at ``world_size`` processes: ``sqrt(world_size)``, ``world_size`` or 1."""
    if rule not in LR_SCALING:
        raise ValueError(f"scaling.lr must be one of {LR_SCALING}, got {rule!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return {"sqrt": math.sqrt(world_size), "linear": float(world_size), "none": 1.0}[rule]


@dataclass(frozen=True)
class ScalePlan:
    """What a training run does at its world size (:func:`scale_plan`); counts are global (all ranks) unless said."""

    world_size: int
    batch_size: int            # pairs per rank and step
    global_batch: int          # pairs per optimizer step, batch_size x world_size
    pairs_per_epoch: int
    steps_per_epoch: int       # optimizer steps of an epoch (every rank takes them together)
    crops_per_epoch: int       # training crops of an epoch, pairs x train_chunks (untagged negatives not counted)
    lr: float
    lr_rule: str
    warmup_pairs: int
    warmup_steps: int
    valid_songs: int           # songs of each validation
    valid_crop_reads: int      # crops read by each validation, valid_songs x n_valid_chunks
    valid_whole: bool          # the whole valid split

    def rows(self) -> list[tuple[str, str]]:
        """The plan as recipe-block rows."""
        return [
            ("scale", f"{self.world_size} process(es): global batch {self.global_batch:,} pairs, "
                      f"{self.steps_per_epoch:,} steps per epoch ({self.crops_per_epoch:,} crops), "
                      f"lr {self.lr:.3g} ({self.lr_rule} rule), warm-up {self.warmup_steps:,} steps "
                      f"({self.warmup_pairs:,} pairs)"),
            ("validation", f"{self.valid_songs:,} songs, {self.valid_crop_reads:,} crop reads per validation"
                           + (" (the whole valid split)" if self.valid_whole else " (a seeded subset)")),
        ]


def scale_plan(*, world_size: int, n_train_songs: int, n_valid_songs: int, batch_size: int, device: str,
               train_chunks: int, base_lr: float, base_warmup_steps: int, n_valid_chunks: int,
               lr_rule: str = "sqrt", valid_crop_fraction: float = 0.25, pairs_per_epoch: int | None = None,
               max_valid_songs: int | None = None, validate_every_n_epochs: int = 1) -> ScalePlan:
    """The recipe at ``world_size`` processes (the module docstring's rules), from the data and the one-process
    settings: ``batch_size`` pairs per rank, ``base_lr`` (``optimizer.lr``), ``base_warmup_steps``
    (``scheduler.warmup_steps``, steps of one process's batch), ``pairs_per_epoch`` (None: auto), and validation's
    ``max_valid_songs`` (None: the budget, ``valid_crop_fraction`` of the training crops of the
    ``validate_every_n_epochs`` epochs between validations, at least ``MIN_VALID_SONGS`` songs).

    Raises:
        ValueError: an unknown rule or device, sizes < 1, a fraction outside (0, 1].
    """
    if not 0 < valid_crop_fraction <= 1:
        raise ValueError(f"scaling.valid_crop_fraction must be in (0, 1], got {valid_crop_fraction}")
    if min(n_valid_chunks, validate_every_n_epochs) < 1 or base_warmup_steps < 0:
        raise ValueError("n_valid_chunks and validate_every_n_epochs must be >= 1, warm-up steps >= 0")
    if pairs_per_epoch is None:
        pairs_per_epoch = auto_pairs_per_epoch(n_train_songs=n_train_songs, batch_size=batch_size,
                                               world_size=world_size, device=device, train_chunks=train_chunks)
    global_batch = batch_size * world_size
    crops = pairs_per_epoch * train_chunks
    warmup_pairs = base_warmup_steps * batch_size
    if max_valid_songs is not None:
        songs = min(n_valid_songs, max_valid_songs)
    else:
        budget = int(valid_crop_fraction * crops * validate_every_n_epochs) // n_valid_chunks
        songs = min(n_valid_songs, max(MIN_VALID_SONGS, budget))
    return ScalePlan(
        world_size=world_size, batch_size=batch_size, global_batch=global_batch, pairs_per_epoch=pairs_per_epoch,
        steps_per_epoch=pairs_per_epoch // global_batch, crops_per_epoch=crops,
        lr=base_lr * lr_factor(world_size, rule=lr_rule), lr_rule=lr_rule, warmup_pairs=warmup_pairs,
        warmup_steps=math.ceil(warmup_pairs / global_batch), valid_songs=songs,
        valid_crop_reads=songs * n_valid_chunks, valid_whole=songs == n_valid_songs)


def scale_table(world_sizes: Sequence[int], **settings) -> str:
    """A Markdown table of :func:`scale_plan` at each of ``world_sizes`` (``settings``: its other arguments)."""
    lines = ["| GPUs | global batch | pairs / epoch | steps / epoch | crops / epoch | lr | warm-up steps (pairs) | "
             "valid songs | valid crop reads | of the epoch's crops |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for world_size in world_sizes:
        p = scale_plan(world_size=world_size, **settings)
        lines.append(f"| {world_size} | {p.global_batch:,} | {p.pairs_per_epoch:,} | {p.steps_per_epoch:,} | "
                     f"{p.crops_per_epoch:,} | {p.lr:.3g} | {p.warmup_steps:,} ({p.warmup_pairs:,}) | "
                     f"{p.valid_songs:,} | {p.valid_crop_reads:,} | {p.valid_crop_reads / p.crops_per_epoch:.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tagretrieval.training.recipe --table ...``: the scaling rules as a table (docs/scale-out.md)."""
    parser = argparse.ArgumentParser(prog="python -m tagretrieval.training.recipe", description=main.__doc__)
    parser.add_argument("--table", action="store_true", required=True, help="print the table of scale_plan")
    parser.add_argument("--world-sizes", type=int, nargs="+", required=True)
    parser.add_argument("--train-songs", type=int, required=True)
    parser.add_argument("--valid-songs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True, help="sampler.batch_size (pairs per rank)")
    parser.add_argument("--train-chunks", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True, help="optimizer.lr (one process's)")
    parser.add_argument("--warmup-steps", type=int, required=True, help="scheduler.warmup_steps (one process's)")
    parser.add_argument("--valid-chunks", type=int, required=True, help="validation.n_chunks")
    parser.add_argument("--device", choices=sorted(MAX_CROPS_PER_EPOCH), required=True)
    parser.add_argument("--lr-rule", choices=LR_SCALING, required=True, help="scaling.lr")
    parser.add_argument("--valid-crop-fraction", type=float, required=True, help="scaling.valid_crop_fraction")
    args = parser.parse_args(argv)
    print(scale_table(args.world_sizes, n_train_songs=args.train_songs, n_valid_songs=args.valid_songs,
                      batch_size=args.batch_size, device=args.device, train_chunks=args.train_chunks,
                      base_lr=args.lr, base_warmup_steps=args.warmup_steps, n_valid_chunks=args.valid_chunks,
                      lr_rule=args.lr_rule, valid_crop_fraction=args.valid_crop_fraction))


if __name__ == "__main__":
    main()
