"""Collaborative-filtering item vectors: the MSD500 release's item factors, or implicit ALS on Taste Profile plays.

Files read:

- ``item_factors_MSD.npy`` ``[n_items, cf_dim]`` + ``items_index_MSD.tsv`` (one id per line, no header), from
  ``user_item_embs.tar.gz``;
- Taste Profile ``train_triplets.txt``: ``user<TAB>song<TAB>play_count``, no header (48M lines: streamed);
- ``sid_mismatches.txt``: lines like ``ERROR: <SOVJQTR12A8C13F2E4 TRMMMYQ128F932D901> artist - title != ...``,
  the (song, track) pairs whose Taste Profile song is not the track's audio.

Track ids map to song ids through ``unique_tracks.txt`` minus those mismatches (:func:`song_of_track`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse

from tagretrieval.data.prepared import check_finite_rows
from tagretrieval.data.report import PrepareReport

_MISMATCH = re.compile(r"<\s*(SO[A-Z0-9]{16})\s+(TR[A-Z0-9]{16})\s*>")


@dataclass
class CFTable:
    """CF vectors ``vectors [n_items, cf_dim]`` of the items ``ids`` (track or song ids); may be memory-mapped."""

    ids: list[str]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        self.row = {}
        for i, item in enumerate(self.ids):
            self.row.setdefault(item, i)

    def align(self, track_ids: Sequence[str], *, song_of: Mapping[str, str] | None = None,
              mismatched: frozenset[str] = frozenset(), report: PrepareReport) -> tuple[np.ndarray, np.ndarray]:
        """``(has [n_tracks] bool, vectors [n_has, cf_dim])`` for ``track_ids``, in their order.

        A track id is looked up as is, then through ``song_of`` (track -> song); a track in ``mismatched``
        is never mapped. Tracks without a vector are reported; NaN/inf vectors raise, naming the tracks.
        """
        rows = np.full(len(track_ids), -1, dtype=np.int64)
        for i, track_id in enumerate(track_ids):
            if track_id in self.row:
                rows[i] = self.row[track_id]
            elif track_id in mismatched:
                report.skip("sid mismatch", track_id, "listed in sid_mismatches.txt: no trusted song id for CF")
            elif song_of is not None and song_of.get(track_id) in self.row:
                rows[i] = self.row[song_of[track_id]]
            else:
                song = song_of.get(track_id) if song_of is not None else None
                report.skip("no CF vector", track_id, f"song {song} not in the CF index" if song
                            else "not in the CF index")
        has = rows >= 0
        vectors = np.asarray(self.vectors[rows[has]], dtype=np.float32)
        check_finite_rows(vectors, [t for t, ok in zip(track_ids, has) if ok], what="CF vectors")
        return has, vectors


def read_item_factors(factors_path: Path, index_path: Path) -> CFTable:
    """The release's ``item_factors_MSD.npy`` and ``items_index_MSD.tsv`` (row i of one is line i of the other)."""
    for path in (factors_path, index_path):
        if not path.exists():
            raise FileNotFoundError(f"CF item factors file not found: {path} (from user_item_embs.tar.gz; set "
                                    "data.item_factors / data.item_index, or data.cf=als or none)")
    vectors = np.load(factors_path, mmap_mode="r", allow_pickle=False)  # [n_items, cf_dim]; rows read on use
    with open(index_path, encoding="utf-8") as f:
        ids = [line.strip().split("\t")[0] for line in f if line.strip()]
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"{factors_path} has shape {vectors.shape} but {index_path} lists {len(ids)} ids")
    return CFTable(ids=ids, vectors=vectors)


def read_sid_mismatches(path: Path) -> set[tuple[str, str]]:
    """``(song_id, track_id)`` pairs of ``sid_mismatches.txt`` (the ids inside ``< >`` of each line)."""
    if not path.exists():
        raise FileNotFoundError(f"Taste Profile mismatch list not found: {path} (set data.sid_mismatches)")
    with open(path, encoding="utf-8", errors="replace") as f:
        return {(m.group(1), m.group(2)) for m in map(_MISMATCH.search, f) if m}


def song_of_track(track_ids: Sequence[str], song_ids: Sequence[str],
                  mismatches: set[tuple[str, str]]) -> tuple[dict[str, str], frozenset[str]]:
    """``(track -> song, mismatched tracks)`` from ``unique_tracks.txt`` columns minus the mismatch pairs."""
    mismatched = frozenset(track for _, track in mismatches)
    pairs = {t: s for t, s in zip(track_ids, song_ids) if (s, t) not in mismatches}
    return pairs, mismatched


@dataclass
class PlayMatrix:
    """``plays [n_users, n_songs]`` CSR (float32 play counts) and the song id of each column."""

    plays: scipy.sparse.csr_matrix
    song_ids: list[str]
    n_dropped_rows: int


def _codes(values: pd.Series, index: dict[str, int]) -> np.ndarray:
    """Global int32 codes of ``values``, adding unseen ones to ``index``; one dict lookup per distinct value."""
    categorical = pd.Categorical(values)
    lookup = np.fromiter((index.setdefault(v, len(index)) for v in categorical.categories), dtype=np.int64,
                         count=len(categorical.categories))
    return lookup[categorical.codes].astype(np.int32)


def read_triplets(path: Path, *, chunk_rows: int = 2_000_000) -> PlayMatrix:
    """Stream ``train_triplets.txt`` in chunks of ``chunk_rows`` lines into a sparse play matrix.

    Memory is about 12 bytes per triplet plus the id dictionaries (never the text). Lines with a missing
    field or a play count that is not a positive number are dropped and counted; repeated (user, song) pairs
    are summed.
    """
    if not path.exists():
        raise FileNotFoundError(f"Taste Profile triplets not found: {path} (set data.triplets)")
    users: dict[str, int] = {}
    songs: dict[str, int] = {}
    user_codes, song_codes, counts = [], [], []
    n_dropped = 0
    reader = pd.read_csv(path, sep="\t", header=None, names=["user", "song", "plays"], dtype=str,
                         keep_default_na=False, chunksize=chunk_rows, quoting=csv.QUOTE_NONE)
    for chunk in reader:
        plays = pd.to_numeric(chunk["plays"], errors="coerce").to_numpy(dtype=np.float64)
        ok = (np.isfinite(plays) & (plays > 0) & (chunk["user"] != "").to_numpy()
              & (chunk["song"] != "").to_numpy())
        n_dropped += int((~ok).sum())
        user_codes.append(_codes(chunk["user"][ok].str.strip(), users))
        song_codes.append(_codes(chunk["song"][ok].str.strip(), songs))
        counts.append(plays[ok].astype(np.float32))
    if not users:
        raise ValueError(f"{path}: no usable user<TAB>song<TAB>play_count line")
    plays = scipy.sparse.coo_matrix(
        (np.concatenate(counts), (np.concatenate(user_codes), np.concatenate(song_codes))),
        shape=(len(users), len(songs)),
    ).tocsr()
    plays.sum_duplicates()
    return PlayMatrix(plays=plays, song_ids=list(songs), n_dropped_rows=n_dropped)


def als_item_factors(plays: PlayMatrix, *, factors: int = 200, iterations: int = 15, regularization: float = 0.01,
                     alpha: float = 1.0, seed: int = 0, progress: bool = False) -> CFTable:
    """Song vectors ``[n_songs, factors]`` from implicit-feedback ALS (Hu et al. 2008) on the play counts.

    Uses ``implicit.als.AlternatingLeastSquares`` on the CPU, confidence ``alpha * play_count``, initialised from
    ``seed``: the same plays and seed give the same vectors (each ALS half-step solves every row on its own,
    so the thread count does not change the result). BLAS is held to one thread while it runs, as implicit asks.
    """
    try:
        from implicit.als import AlternatingLeastSquares
    except ImportError as error:
        raise ImportError("data.cf=als needs the 'implicit' package: pip install implicit") from error
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=regularization,
                                        alpha=alpha, random_state=seed, use_gpu=False)
        model.fit(plays.plays, show_progress=progress)
    return CFTable(ids=plays.song_ids, vectors=np.asarray(model.item_factors, dtype=np.float32))
