"""Write a model's embedding space to plain files, for notebooks, other tools and the viewer.

Layout of an export folder::

    track_embeddings.npy   float32 [n_tracks, D], rows L2-normalised (dot product = cosine similarity)
    tag_embeddings.npy     float32 [n_tags, D], rows L2-normalised, in the same space
    tracks.csv             track_id, artist, tags (';'-joined), split, audio_path   (row i = embedding row i)
    tracks.parquet         the same table (needs pyarrow)
    tags.csv               tag, category                                          (row j = embedding row j)
    export.json            what was exported: checkpoint, dataset, split, shapes, "normalized": true

Every file is written atomically (:mod:`tagretrieval.runtime.files`): an interrupted export leaves whole files, old or new,
never half of one; ``export.json`` is written last, so a folder with it holds a complete export.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.runtime.files import atomic_save_npy, atomic_write, atomic_write_json, atomic_write_text

TRACK_TABLE_COLUMNS: tuple[str, ...] = ("track_id", "artist", "tags", "split", "audio_path")


def track_table(dataset: PreparedDataset) -> pd.DataFrame:
    """One row per track of ``dataset`` with columns :data:`TRACK_TABLE_COLUMNS`; ``tags`` joined with ``';'``."""
    tags = np.asarray(dataset.tags, dtype=object)
    joined = [";".join(tags[row.astype(bool)]) for row in dataset.labels]
    table = dataset.tracks[["track_id", "artist", "split", "audio_path"]].copy()
    table.insert(2, "tags", joined)
    return table.reset_index(drop=True)[list(TRACK_TABLE_COLUMNS)]


def write_export(folder: str | Path, *, track_embeddings: np.ndarray, tracks: pd.DataFrame,
                 tag_embeddings: np.ndarray, tags: Sequence[str], categories: Sequence[str],
                 info: dict) -> dict[str, Path]:
    """Write the files of the module docstring into ``folder``; returns ``{name: path}``.

    Args:
        track_embeddings: ``[n_tracks, D]``, L2-normalised (as every ``Searcher.embed_*`` returns them).
        tracks: ``n_tracks`` rows with columns :data:`TRACK_TABLE_COLUMNS`, in embedding order.
        tag_embeddings: ``[n_tags, D]``, L2-normalised, row ``j`` for ``tags[j]``.
        tags, categories: ``n_tags`` names and their categories.
        info: recorded in ``export.json`` (e.g. checkpoint and dataset), next to the shapes.
    """
    track_embeddings = np.asarray(track_embeddings, dtype=np.float32)
    tag_embeddings = np.asarray(tag_embeddings, dtype=np.float32)
    if track_embeddings.ndim != 2 or len(track_embeddings) != len(tracks):
        raise ValueError(f"track_embeddings {track_embeddings.shape} do not match {len(tracks)} tracks")
    if tag_embeddings.shape != (len(tags), track_embeddings.shape[1]) or len(categories) != len(tags):
        raise ValueError(f"tag_embeddings {tag_embeddings.shape}, {len(tags)} tags and {len(categories)} categories "
                         f"do not match (expected [{len(tags)}, {track_embeddings.shape[1]}])")
    if list(tracks.columns) != list(TRACK_TABLE_COLUMNS):
        raise ValueError(f"tracks has columns {list(tracks.columns)}, expected {list(TRACK_TABLE_COLUMNS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("track_embeddings.npy", "tag_embeddings.npy", "tracks.csv",
                                               "tracks.parquet", "tags.csv", "export.json")}
    atomic_save_npy(paths["track_embeddings.npy"], track_embeddings)
    atomic_save_npy(paths["tag_embeddings.npy"], tag_embeddings)
    tracks = tracks.reset_index(drop=True)
    atomic_write_text(paths["tracks.csv"], tracks.to_csv(index=False))
    parquet = io.BytesIO()
    tracks.to_parquet(parquet, index=False)
    atomic_write(paths["tracks.parquet"], lambda f: f.write(parquet.getbuffer()))
    tag_table = pd.DataFrame({"tag": list(tags), "category": list(categories)})
    atomic_write_text(paths["tags.csv"], tag_table.to_csv(index=False))
    summary = {**info, "n_tracks": len(tracks), "n_tags": len(tags), "embedding_dim": int(track_embeddings.shape[1]),
               "normalized": True}
    atomic_write_json(paths["export.json"], summary)
    return paths
