"""Triplet sampling (config group ``sampler``), vectorised and seeded, correct under DDP.

Two halves, as in the reference implementation:

1. **Pairs** (data side, :meth:`PairSampler.pairs`): an (anchor tag, positive song) pair per row.
   ``random`` draws a song, then one of its tags; ``balanced`` draws a tag uniformly, then one of its songs.
   Each row also carries a uniform number in [0, 1) that places the training crop in the song.
2. **Negatives** (model side, :meth:`PairSampler.choose_negatives`): for anchor ``i`` the negative is a song of the
   same batch that does not carry tag ``i``; uniformly (``random``, ``balanced``) or with probability proportional
   to ``(cos(anchor, song) + 1) / 2`` (``balanced_weighted``: harder negatives more often).

**Untagged training songs** (no tag of the training vocabulary: MTAT ``split=pons``'s clips without a top-50 tag,
songs that carry only zero-shot held-out tags, untagged tracks of a folder) are never a positive, but they are
trained on as negatives: each batch appends :meth:`PairSampler.n_untagged` of them (their share of the training
set), as rows with the anchor tag :data:`UNTAGGED` (-1). They are candidate negatives of every anchor and the
multi-label loss sees them with all-zero targets; a dataset without untagged training songs gets the same batches
as before (the pairs are drawn first, from the same stream).

The reference drew pairs and negatives in per-row Python loops; here each batch is a few numpy/torch array
operations, which is what keeps a GPU fed (``scripts/benchmark.py``, section ``sampler``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

NEGATIVE_MODES = ("uniform", "weighted")
UNTAGGED = -1
"""The anchor tag of a batch row that is an untagged training song (a negative only, no pair of its own)."""


@dataclass(frozen=True)
class PositiveIndex:
    """Compressed positives of the training songs: both directions of a sparse multi-hot matrix.

    ``song_tags[song_start[s]:song_start[s+1]]`` are the tags of song ``s``;
    ``tag_songs[tag_start[t]:tag_start[t+1]]`` the songs (row numbers into ``songs``) of tag ``t``.
    """

    songs: np.ndarray        # int64 [n_songs]: dataset rows of the training songs
    song_tags: np.ndarray
    song_start: np.ndarray
    tag_songs: np.ndarray
    tag_start: np.ndarray

    @property
    def untagged(self) -> np.ndarray:
        """int64 ``[n_untagged]``: dataset rows of the training songs that carry no tag (negatives only)."""
        return self.songs[np.diff(self.song_start) == 0]

    @classmethod
    def from_labels(cls, labels: np.ndarray, rows: np.ndarray) -> "PositiveIndex":
        """``labels`` multi-hot ``[n_tracks, n_tags]``; ``rows`` the training rows to sample from."""
        sub = np.asarray(labels[rows], dtype=bool)
        song_of, tag_of = np.nonzero(sub)                  # row-major: grouped by song
        song_start = np.concatenate([[0], np.cumsum(sub.sum(1))]).astype(np.int64)
        order = np.argsort(tag_of, kind="stable")          # grouped by tag
        tag_start = np.concatenate([[0], np.cumsum(sub.sum(0))]).astype(np.int64)
        return cls(np.asarray(rows, dtype=np.int64), tag_of.astype(np.int64), song_start,
                   song_of[order].astype(np.int64), tag_start)

    @property
    def n_tags(self) -> int:
        return len(self.tag_start) - 1


def choose_negatives(*, anchors: torch.Tensor, songs: torch.Tensor, candidates: torch.Tensor, mode: str,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick a negative song of the batch for each anchor.

    Args:
        anchors: tag embeddings ``[P, D]`` of the batch's ``P`` pairs (only used by the weighted mode; no gradient
            flows).
        songs: song embeddings ``[B, D]``, ``B >= P``: the pairs' songs, then the batch's untagged songs.
        candidates: bool ``[P, B]``; ``candidates[i, j]``: song j may be the negative of anchor i
            (it does not carry tag i).
        mode: ``"uniform"``, or ``"weighted"`` (probability proportional to ``(cos(anchor, song) + 1) / 2``).
    Returns:
        ``(index [P] long into the B songs, valid [P] bool)``; a row without any candidate is invalid (its index is arbitrary).
    """
    if mode not in NEGATIVE_MODES:
        raise ValueError(f"unknown negative mode {mode!r}; expected one of {NEGATIVE_MODES}")
    weights = candidates.float()
    if mode == "weighted":
        with torch.no_grad():
            cosine = F.normalize(anchors, dim=-1) @ F.normalize(songs, dim=-1).T
            weights = weights * ((cosine + 1) / 2).clamp_min(1e-6)
    valid = candidates.any(dim=1)
    weights = torch.where(valid[:, None], weights, torch.ones_like(weights))
    index = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return index, valid


def untagged_per_batch(*, batch_size: int, n_untagged: int, n_songs: int) -> int:
    """Untagged songs appended to each batch of ``batch_size`` pairs, for ``n_untagged`` of ``n_songs`` training
    songs: ``round(batch_size * n_untagged / n_tagged)``, so that they have in the batch the share they have in the
    training set; at least 1 where there are any, at most ``batch_size`` (half the batch); 0 without any."""
    n_tagged = n_songs - n_untagged
    if n_untagged == 0 or n_tagged == 0:
        return 0
    return int(min(batch_size, max(1, round(batch_size * n_untagged / n_tagged))))


class PairSampler:
    """Base class; subclasses set :attr:`kind` (``"song"`` or ``"tag"`` first) and :attr:`negatives`."""

    kind = "song"
    negatives = "uniform"

    def __init__(self, *, batch_size: int = 128, pairs_per_epoch: int = 10_000, seed: int = 0) -> None:
        if batch_size < 2:
            raise ValueError("sampler.batch_size must be >= 2 (negatives come from the same batch)")
        self.batch_size = batch_size
        self.pairs_per_epoch = pairs_per_epoch
        self.seed = seed

    def batches_per_epoch(self, world_size: int) -> int:
        """Batches per rank and epoch: the epoch's pairs shared across ranks (full batches only).

        Raises:
            ValueError: ``pairs_per_epoch`` is smaller than one batch on every rank (no silent rounding up).
        """
        per_step = self.batch_size * world_size
        if self.pairs_per_epoch < per_step:
            raise ValueError(f"sampler.pairs_per_epoch={self.pairs_per_epoch} is less than one batch on each of the "
                             f"{world_size} rank(s) (sampler.batch_size={self.batch_size} x {world_size} = "
                             f"{per_step}): raise pairs_per_epoch or lower batch_size")
        return self.pairs_per_epoch // per_step

    def rng(self, *, epoch: int, rank: int, batch: int) -> np.random.Generator:
        """Independent stream per (seed, epoch, rank, batch): ranks never draw the same pairs."""
        return np.random.default_rng([self.seed, epoch, rank, batch])

    def pairs(self, index: PositiveIndex, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of (dataset row of the positive song, anchor tag, crop position in [0, 1)): float64 [n, 3]."""
        u = rng.random((n, 3))
        if self.kind == "song":
            has_tags = np.flatnonzero(np.diff(index.song_start) > 0)
            song = has_tags[(u[:, 0] * len(has_tags)).astype(np.int64)]
            count = index.song_start[song + 1] - index.song_start[song]
            tag = index.song_tags[index.song_start[song] + (u[:, 1] * count).astype(np.int64)]
        else:
            has_songs = np.flatnonzero(np.diff(index.tag_start) > 0)
            tag = has_songs[(u[:, 0] * len(has_songs)).astype(np.int64)]
            count = index.tag_start[tag + 1] - index.tag_start[tag]
            song = index.tag_songs[index.tag_start[tag] + (u[:, 1] * count).astype(np.int64)]
        return np.stack([index.songs[song], tag, u[:, 2]], axis=1)

    def n_untagged(self, index: PositiveIndex) -> int:
        """Untagged songs appended to each batch (:func:`untagged_per_batch`)."""
        return untagged_per_batch(batch_size=self.batch_size, n_untagged=len(index.untagged),
                                  n_songs=len(index.songs))

    def batch(self, index: PositiveIndex, rng: np.random.Generator) -> np.ndarray:
        """One training batch, float64 ``[batch_size + n_untagged, 3]``: :meth:`pairs` (drawn first, so a dataset
        without untagged songs gets exactly those), then :meth:`n_untagged` untagged songs drawn uniformly, with
        replacement, as rows (dataset row, :data:`UNTAGGED`, crop position)."""
        pairs = self.pairs(index, rng, self.batch_size)
        n_extra = self.n_untagged(index)
        if n_extra == 0:
            return pairs
        u = rng.random((n_extra, 2))
        untagged = index.untagged
        rows = untagged[(u[:, 0] * len(untagged)).astype(np.int64)]
        extra = np.stack([rows, np.full(n_extra, UNTAGGED), u[:, 1]], axis=1)
        return np.concatenate([pairs, extra])


class RandomPairSampler(PairSampler):
    """Reference ``random``: a song uniformly, then one of its tags; uniform in-batch negatives."""

    kind = "song"
    negatives = "uniform"


class BalancedPairSampler(PairSampler):
    """Reference ``balanced``: a tag uniformly, then one of its songs; uniform in-batch negatives."""

    kind = "tag"
    negatives = "uniform"


class BalancedWeightedPairSampler(PairSampler):
    """Reference ``balanced-weighted``: balanced pairs; negatives weighted by (cos + 1) / 2."""

    kind = "tag"
    negatives = "weighted"


class EpochBatchSampler(Sampler):
    """The training DataLoader's ``sampler``: yields one key per batch, ``float64 [batch_size + n_untagged, 3]``
    rows of (dataset row of the positive song, anchor tag, crop position in [0, 1)), for one rank
    (:meth:`PairSampler.batch`: the pairs, then the batch's untagged songs with the anchor tag :data:`UNTAGGED`).

    Batch ``b`` of epoch ``e`` on rank ``r`` is a pure function of ``(seed, e, r, b)``, so every epoch draws fresh
    pairs and crops and a resumed run continues the stream of an uninterrupted one. The epoch is read once, when an
    epoch's iteration starts: from ``epoch_fn`` (the datamodule passes the trainer's epoch counter, which a resume
    restores) or else from :meth:`set_epoch`. ``epoch_fn`` is what makes resuming right: in a resumed fit Lightning
    creates the first epoch's iterator, whose workers start prefetching batches at once, before it calls
    ``set_epoch``. Use it with ``DataLoader(..., sampler=this, batch_size=None)``.
    """

    def __init__(self, sampler: PairSampler, index: PositiveIndex, *, rank: int = 0, world_size: int = 1,
                 epoch_fn: Callable[[], int] | None = None) -> None:
        self.pair_sampler = sampler
        self.index = index
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.epoch_fn = epoch_fn
        self.n_batches = sampler.batches_per_epoch(world_size)  # raises early for an epoch shorter than a batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        epoch = self.epoch if self.epoch_fn is None else int(self.epoch_fn())
        for batch in range(self.n_batches):
            rng = self.pair_sampler.rng(epoch=epoch, rank=self.rank, batch=batch)
            yield self.pair_sampler.batch(self.index, rng)
