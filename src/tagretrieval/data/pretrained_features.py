"""Frozen embeddings of a pretrained musicnn network for every track of a prepared dataset, computed once into the
prepared folder and reloaded: the song features of ``song_features=musicnn`` (:mod:`tagretrieval.data.song_features`)
and the song vectors of ``+baseline=musicnn_probe`` (``baseline/source=musicnn``), one cache for both.

``PREPARED/musicnn_features/<model>.<layer>.npz`` (e.g. ``MTT_musicnn.penultimate.npz``) holds, as the hand-crafted
cache (:mod:`tagretrieval.data.feature_cache`)::

    manifest    JSON text: {"cache_version", "params": MusicnnEmbedder.params(), "names": [...]}
    track_ids   str [n_done]
    values      float32 [n_done, dim]

One file per network and layer: choosing other weights, architecture or layer computes (and keeps) another file, and
a file whose manifest does not match is refused. Each track's vector is the mean over its audio's 3-s patches
(:mod:`tagretrieval.pretrained.embedder`; the audio is resampled to 16 kHz). The file is rewritten every
``save_every`` new tracks, so an interrupted run resumes; undecodable audio or non-finite outputs are skipped with a
reason (and examined again next time).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tagretrieval.audio import AudioDecodeError
from tagretrieval.data.feature_cache import FeatureMatrix, cache_todo, cached_matrix, read_cache, write_cache
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.pretrained.embedder import MusicnnEmbedder

log = logging.getLogger(__name__)

CACHE_DIR = "musicnn_features"


def cache_path(dataset: PreparedDataset, embedder: MusicnnEmbedder, *, cache_dir: str = CACHE_DIR) -> Path:
    """Where ``embedder``'s vectors of ``dataset`` are cached: ``PREPARED/cache_dir/<model>.<layer>.npz``."""
    return dataset.root / cache_dir / f"{embedder.model}.{embedder.layer}.npz"


def embed_one(embedder: MusicnnEmbedder, path: str) -> tuple[np.ndarray | None, str | None]:
    """``(vector [dim], None)`` of one audio file, or ``(None, reason)`` when it is skipped."""
    try:
        y = embedder.load(path)
    except AudioDecodeError as error:
        return None, f"decode error: {error}"
    values = embedder(y)
    if not np.isfinite(values).all():
        return None, "non-finite outputs"
    return values, None


def pretrained_features(dataset: PreparedDataset, embedder: MusicnnEmbedder, *, path: str | Path,
                        save_every: int = 1000, progress: bool = True, compute: bool = True) -> FeatureMatrix:
    """``embedder``'s vector of every track of ``dataset``, from and into the cache ``path`` (module doc); with
    ``compute`` off the cache is only read (as :func:`tagretrieval.data.feature_cache.handcrafted_features`).

    Raises:
        FeatureCacheMismatchError: the cache was made with other parameters.
        ValueError: no track has an audio path (a dataset imported without audio).
        MusicnnMissingError: the musicnn weights are not installed (only when a track is to be computed).
    """
    if save_every < 1:
        raise ValueError(f"save_every must be >= 1, got {save_every}")
    path = Path(path)
    params = embedder.params()
    paths = dataset.tracks["audio_path"].tolist()
    no_audio = [t for t, p in zip(dataset.track_ids, paths) if not p]
    if len(no_audio) == len(paths):
        raise ValueError(f"dataset '{dataset.name}' ({dataset.root}) has no audio paths (tracks.csv audio_path is "
                         f"empty): {embedder.model} embeddings need the audio")
    names = embedder.names
    cache = read_cache(path, params=params, names=names, what=f"{embedder.model} feature cache")
    skipped, todo = cache_todo(dataset, cache, compute=compute)
    if todo:
        log.info("%s %s embeddings: %d of %d tracks to compute (%d cached in %s), on %s", embedder.model,
                 embedder.layer, len(todo), len(paths), len(paths) - len(todo) - len(no_audio), path,
                 embedder.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = 0
        try:
            for track_id, audio in tqdm(todo, unit="track", desc=f"{embedder.model} embeddings", disable=not progress):
                values, reason = embed_one(embedder, audio)
                if values is None:
                    skipped[track_id] = reason
                    continue
                cache[track_id] = values
                new += 1
                if new % save_every == 0:
                    write_cache(path, cache, params=params, names=names)
        finally:
            if new:
                write_cache(path, cache, params=params, names=names)
    return cached_matrix(dataset, cache, skipped, names=names, what=f"{embedder.model} embeddings",
                         description=f"{embedder.model} {embedder.layer} embeddings ({path})")
