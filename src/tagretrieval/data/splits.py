"""Artist-disjoint train/valid/test splits that keep every tag present in every split where possible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tagretrieval.data.prepared import SPLITS


@dataclass(frozen=True)
class SplitOutcome:
    """``splits[i]`` is the split of track i; ``min_positives`` the smallest positive count of any tag in any split."""

    splits: np.ndarray
    min_positives: int
    n_draws: int
    satisfied: bool


def artist_disjoint_split(
    artists: Sequence[str],
    labels: np.ndarray,
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    min_positives: int = 1,
    max_draws: int = 200,
) -> SplitOutcome:
    """Assign whole artists to train/valid/test, redrawing until every tag has ``min_positives`` per split.

    This is the reference protocol (70/15/15, artist-disjoint, redrawn until each tag has enough positives
    in each split), made deterministic by ``seed`` and bounded by ``max_draws``: when no draw satisfies the
    threshold, the draw with the fewest (tag, split) shortfalls (then the largest minimum) is returned with
    ``satisfied=False`` so the caller can report it.

    Args:
        artists: artist of each track ``[n_tracks]``; tracks with an empty artist are their own artist.
        labels: multi-hot ``[n_tracks, n_tags]``.
        fractions: target share of tracks per split, in :data:`SPLITS` order.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (len(SPLITS),) or not np.isclose(fractions.sum(), 1.0) or (fractions <= 0).any():
        raise ValueError(f"fractions must be {len(SPLITS)} positive numbers summing to 1, got {fractions.tolist()}")
    artists = np.asarray([a if a else f"__track_{i}" for i, a in enumerate(map(str, artists))])
    artist_names, artist_of_track = np.unique(artists, return_inverse=True)
    n_artists = len(artist_names)
    if n_artists < len(SPLITS):
        raise ValueError(f"an artist-disjoint split needs at least {len(SPLITS)} artists, found {n_artists}")
    labels = np.asarray(labels, dtype=np.int64)
    songs_per_artist = np.bincount(artist_of_track, minlength=n_artists)
    positives_per_artist = np.zeros((n_artists, labels.shape[1]), dtype=np.int64)
    np.add.at(positives_per_artist, artist_of_track, labels)
    bounds = np.cumsum(fractions)[:-1] * len(artists)
    rng = np.random.default_rng(seed)
    best: tuple | None = None
    for draw in range(1, max_draws + 1):
        order = rng.permutation(n_artists)
        # an artist goes to the split in which its first song would fall
        start = np.cumsum(songs_per_artist[order]) - songs_per_artist[order]
        split_of_ordered = np.searchsorted(bounds, start, side="right")
        # never leave a split without artists
        for s in range(len(SPLITS)):
            if not (split_of_ordered == s).any():
                split_of_ordered[-(len(SPLITS) - s)] = s
        split_of_artist = np.empty(n_artists, dtype=np.int64)
        split_of_artist[order] = split_of_ordered
        counts = np.stack([positives_per_artist[split_of_artist == s].sum(0) for s in range(len(SPLITS))])
        shortfalls = int((counts < min_positives).sum())
        score = (shortfalls, -int(counts.min()))
        if best is None or score < best[0]:
            best = (score, split_of_artist.copy(), int(counts.min()))
        if shortfalls == 0:
            break
    (shortfalls, _), split_of_artist, min_count = best
    splits = np.asarray(SPLITS)[split_of_artist[artist_of_track]]
    return SplitOutcome(splits=splits, min_positives=min_count, n_draws=draw, satisfied=shortfalls == 0)
