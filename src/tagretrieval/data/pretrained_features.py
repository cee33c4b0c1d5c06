"""Frozen embeddings of a pretrained musicnn network for every track of a prepared dataset, computed once into the
prepared folder and reloaded: the song features of ``song_features=musicnn`` (:mod:`tagretrieval.data.song_features`)
and the song vectors of ``+baseline=musicnn_probe`` (``baseline/source=musicnn``), one cache for both.

``PREPARED/musicnn_features/<model>.<layer>.npz`` (e.g. ``MTT_musicnn.penultimate.npz``) holds, as the hand-crafted
cache (:mod:`tagretrieval.data.feature_cache`)::

    manifest    JSON text: {"cache_version", "params": MusicnnEmbedder.params(), "names": [...]}
    track_ids   str [n_done]
    values      float32 [n_done, dim]

One file per network and layer: choosing other weights, architecture or layer computes (and keeps) another file, and
a file whose manifest does not match is refused. One forward pass gives every layer, so ``also_layers`` fills the
files of other layers of the same network in the same pass, for the tracks the pass computes (each kept in memory:
1,506 floats a track for ``pooled``), so that trying another layer later costs no second pass over the audio. Each track's vector is the mean over its audio's 3-s patches
(:mod:`tagretrieval.pretrained.embedder`; the audio is resampled to 16 kHz). The file is rewritten every
``save_every`` new tracks, so an interrupted run resumes; undecodable audio or non-finite outputs are skipped with a
reason (and examined again next time).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


def embed_one(embedder: MusicnnEmbedder, path: str) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(every output {layer: [size]}, None)`` of one audio file, or ``(None, reason)`` when it is skipped (its
    ``embedder.layer`` output not finite)."""
    try:
        y = embedder.load(path)
    except AudioDecodeError as error:
        return None, f"decode error: {error}"
    outputs = embedder.outputs(y)
    if not np.isfinite(outputs[embedder.layer]).all():
        return None, "non-finite outputs"
    return outputs, None


class _LayerCache:
    """The cache file of one more layer filled in the same pass (``also_layers``)."""

    def __init__(self, embedder: MusicnnEmbedder, layer: str, path: Path) -> None:
        self.layer, self.path = layer, path
        sibling = embedder.with_layer(layer)
        self.params, self.names = sibling.params(), sibling.names
        self.cache = read_cache(path, params=self.params, names=self.names, what=f"{embedder.model} feature cache")
        self.new = 0

    def add(self, track_id: str, outputs: dict[str, np.ndarray]) -> None:
        if track_id not in self.cache and np.isfinite(outputs[self.layer]).all():
            self.cache[track_id] = outputs[self.layer]
            self.new += 1

    def write(self) -> None:
        if self.new:
            write_cache(self.path, self.cache, params=self.params, names=self.names)


def pretrained_features(dataset: PreparedDataset, embedder: MusicnnEmbedder, *, path: str | Path,
                        save_every: int = 1000, progress: bool = True, compute: bool = True,
                        also_layers: Sequence[str] = ()) -> FeatureMatrix:
    """``embedder``'s vector of every track of ``dataset``, from and into the cache ``path`` (module doc); with
    ``compute`` off the cache is only read (as :func:`tagretrieval.data.feature_cache.handcrafted_features`).
    ``also_layers``: other layers of the network whose cache files (beside ``path``) the same pass fills.

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
        extra = [_LayerCache(embedder, layer, path.with_name(f"{embedder.model}.{layer}.npz"))
                 for layer in dict.fromkeys(also_layers) if layer != embedder.layer]
        log.info("%s %s embeddings: %d of %d tracks to compute (%d cached in %s), on %s", embedder.model,
                 embedder.layer, len(todo), len(paths), len(paths) - len(todo) - len(no_audio), path,
                 embedder.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = 0
        try:
            for track_id, audio in tqdm(todo, unit="track", desc=f"{embedder.model} embeddings", disable=not progress):
                outputs, reason = embed_one(embedder, audio)
                if outputs is None:
                    skipped[track_id] = reason
                    continue
                cache[track_id] = outputs[embedder.layer]
                for other in extra:
                    other.add(track_id, outputs)
                new += 1
                if new % save_every == 0:
                    write_cache(path, cache, params=params, names=names)
                    for other in extra:
                        other.write()
        finally:
            if new:
                write_cache(path, cache, params=params, names=names)
            for other in extra:
                other.write()
        if extra:
            log.info("%s embeddings also cached for %s (%s)", embedder.model,
                     ", ".join(f"{o.layer}: {o.new} new" for o in extra), path.parent)
    return cached_matrix(dataset, cache, skipped, names=names, what=f"{embedder.model} embeddings",
                         description=f"{embedder.model} {embedder.layer} embeddings ({path})")
