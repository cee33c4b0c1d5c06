"""The hand-crafted features of a prepared dataset, computed once into the prepared folder and reloaded: the song
vectors of the scikit-learn baselines (``baseline/source=handcrafted``) and of ``song_features=handcrafted``
(:mod:`tagretrieval.data.song_features`, for ``model=features|fused``), one cache for both.

``PREPARED/handcrafted_features.npz`` holds::

    manifest    JSON text: {"cache_version", "params": HandcraftedExtractor.params(), "names": [...]}
    track_ids   str [n_done]
    values      float32 [n_done, n_features]   (every level: see tagretrieval.audio.handcrafted)

The file is rewritten (atomically) every ``save_every`` new tracks, so an interrupted run resumes where it
stopped; tracks of the dataset that are missing from it are computed, the others reused. A file made with
other parameters is refused, naming every difference. Tracks whose audio cannot be decoded, is shorter than
one STFT window, or gives NaN/inf features are skipped with a reason (and examined again on the next run).

Extraction runs with single-threaded BLAS/OpenMP, in this process and in every worker: one clip's matrices are
too small to split across threads (measured: 66 ms per 4.5 s clip with OpenBLAS's default threads on a busy
2-core machine, 21 ms with one thread). Use ``num_workers`` for parallelism.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from tagretrieval.audio import AudioDecodeError, load_audio
from tagretrieval.audio.handcrafted import HandcraftedExtractor, feature_names
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.runtime.errors import UserError
from tagretrieval.runtime.files import atomic_savez
from tagretrieval.runtime.processes import exit_with_parent

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_FILE = "handcrafted_features.npz"
JOB_TRACKS = 8  # tracks per job sent to a worker process
NOT_COMPUTED = "not in the feature cache, and the data is only read (data_read_only): not computed"


class FeatureCacheMismatchError(UserError, ValueError):
    """A feature cache was made with other parameters; the message names the file and every difference."""


@dataclass
class FeatureMatrix:
    """Song features of every track of a dataset, with the tracks that have none.

    Attributes:
        values: float32 ``[n_tracks, n_features]``, row ``i`` for ``dataset.tracks`` row ``i``; rows of
            tracks without features (``~valid``) are 0 and must not be used.
        names: ``[n_features]`` feature names.
        valid: bool ``[n_tracks]``.
        skipped: track id -> why it has no features.
        description: where the values come from (for messages and reports).
    """

    values: np.ndarray
    names: list[str]
    valid: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def columns(self, names: Sequence[str]) -> "FeatureMatrix":
        """The same tracks restricted to the features ``names`` (KeyError naming unknown ones)."""
        index = {n: j for j, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"features not in {self.description or 'the matrix'}: {missing}")
        return FeatureMatrix(values=self.values[:, [index[n] for n in names]], names=list(names), valid=self.valid,
                             skipped=self.skipped, description=self.description)


def read_cache(path: Path, *, params: dict, names: list[str],
               what: str = "hand-crafted feature cache") -> dict[str, np.ndarray]:
    """Track id -> features ``[n_features]`` from ``path`` ({} if absent); other parameters are refused (``what``
    names the cache in the message)."""
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        manifest = json.loads(str(data["manifest"]))
        found = {"cache_version": manifest.get("cache_version"), **manifest.get("params", {})}
        expected = {"cache_version": CACHE_VERSION, **params}
        diffs = [f"{k}: expected {expected.get(k)!r}, found {found.get(k)!r}"
                 for k in sorted(set(expected) | set(found)) if expected.get(k) != found.get(k)]
        if manifest.get("names") != names and not diffs:
            diffs.append("feature names differ")
        if diffs:
            raise FeatureCacheMismatchError(
                f"{what} {path} was made with other parameters; refusing to use it (delete it "
                "to recompute, or set another cache_file):\n  " + "\n  ".join(diffs))
        return dict(zip(data["track_ids"].tolist(), data["values"]))


def write_cache(path: Path, cache: dict[str, np.ndarray], *, params: dict, names: list[str]) -> None:
    manifest = json.dumps({"cache_version": CACHE_VERSION, "params": params, "names": names})
    ids = list(cache)
    values = np.stack([cache[t] for t in ids]) if ids else np.zeros((0, len(names)), np.float32)
    atomic_savez(path, manifest=np.array(manifest), track_ids=np.array(ids, dtype=str), values=values)


def extract_one(extractor: HandcraftedExtractor, path: str) -> tuple[np.ndarray | None, str | None]:
    """``(features [n_features], None)`` of one audio file, or ``(None, reason)`` when it is skipped."""
    try:
        y = load_audio(path, sample_rate=extractor.sample_rate)
    except AudioDecodeError as error:
        return None, f"decode error: {error}"
    if y.shape[0] < extractor.n_fft:
        return None, f"too short: {y.shape[0]} samples < n_fft={extractor.n_fft}"
    values = extractor(y)
    if not np.isfinite(values).all():
        return None, "non-finite features"
    return values, None


_WORKER_EXTRACTOR: HandcraftedExtractor | None = None


def _init_worker(extractor: HandcraftedExtractor) -> None:
    global _WORKER_EXTRACTOR
    exit_with_parent()  # a parent killed with SIGKILL cannot shut the pool down
    threadpool_limits(limits=1)  # for the life of the worker (module doc)
    extractor.warm_up()  # numba compiles here, once per worker
    _WORKER_EXTRACTOR = extractor


def _worker_job(items: list[tuple[str, str]]) -> list[tuple[str, np.ndarray | None, str | None]]:
    return [(track_id, *extract_one(_WORKER_EXTRACTOR, path)) for track_id, path in items]


def _jobs(items: list[tuple[str, str]]):
    for start in range(0, len(items), JOB_TRACKS):
        yield items[start:start + JOB_TRACKS]


def handcrafted_features(dataset: PreparedDataset, extractor: HandcraftedExtractor, *, level: str,
                         cache_path: str | Path | None = None, num_workers: int = 0, save_every: int = 1000,
                         progress: bool = True, compute: bool = True) -> FeatureMatrix:
    """The ``level`` features of every track of ``dataset``, from and into the cache (module doc).

    Args:
        cache_path: the cache file; None: ``dataset.root / "handcrafted_features.npz"``.
        num_workers: 0 computes in this process; ``n > 0`` uses ``n`` "spawn" worker processes, each warming
            librosa's numba kernels up once, with at most ``2 * n`` jobs of :data:`JOB_TRACKS` tracks in flight.
        save_every: rewrite the cache after this many newly computed tracks (and at the end).
        compute: False reads the cache only: tracks it lacks are skipped (:data:`NOT_COMPUTED`), nothing is written.

    Raises:
        FeatureCacheMismatchError: the cache was made with other parameters.
        ValueError: no track has an audio path (a dataset imported without audio).
    """
    if num_workers < 0 or save_every < 1:
        raise ValueError(f"num_workers must be >= 0 and save_every >= 1, got {num_workers} and {save_every}")
    cache_path = Path(cache_path) if cache_path is not None else dataset.root / CACHE_FILE
    params, names = extractor.params(), extractor.names
    cache = read_cache(cache_path, params=params, names=names)
    paths = dataset.tracks["audio_path"].tolist()
    no_audio = [t for t, p in zip(dataset.track_ids, paths) if not p]
    if len(no_audio) == len(paths):
        raise ValueError(f"dataset '{dataset.name}' ({dataset.root}) has no audio paths (tracks.csv audio_path is "
                         "empty): hand-crafted features need the audio; use another source (cf, features)")
    skipped, todo = cache_todo(dataset, cache, compute=compute)
    if todo:
        log.info("hand-crafted features: %d of %d tracks to compute (%d cached in %s), %d worker(s)", len(todo),
                 len(paths), len(paths) - len(todo) - len(no_audio), cache_path, num_workers)
        new = 0
        bar = tqdm(total=len(todo), unit="track", desc="hand-crafted features", disable=not progress)

        def record(results) -> None:
            nonlocal new
            for track_id, values, reason in results:
                if values is None:
                    skipped[track_id] = reason
                else:
                    cache[track_id] = values
                    new += 1
                    if new % save_every == 0:
                        write_cache(cache_path, cache, params=params, names=names)
            bar.update(len(results))

        try:
            if num_workers == 0:
                with threadpool_limits(limits=1):
                    extractor.warm_up()
                    for job in _jobs(todo):
                        record([(t, *extract_one(extractor, p)) for t, p in job])
            else:
                with cf.ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(extractor,)) as pool:
                    in_flight: set[cf.Future] = set()
                    for job in _jobs(todo):
                        if len(in_flight) >= 2 * num_workers:
                            done, in_flight = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                            for future in done:
                                record(future.result())
                        in_flight.add(pool.submit(_worker_job, job))
                    for future in cf.as_completed(in_flight):
                        record(future.result())
        finally:
            bar.close()
            if new:
                write_cache(cache_path, cache, params=params, names=names)
    matrix = cached_matrix(dataset, cache, skipped, names=names, what="hand-crafted features",
                           description=f"hand-crafted features ({cache_path})")
    return matrix.columns(feature_names(level=level, n_mfcc=extractor.n_mfcc))


def cache_todo(dataset: PreparedDataset, cache: dict[str, np.ndarray], *,
               compute: bool) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``(skipped, todo)``: track id -> why it has no features (no audio path; with ``compute`` off, not in
    ``cache``), and the ``(track id, audio path)`` pairs to compute."""
    paths = dataset.tracks["audio_path"].tolist()
    skipped = {t: "no audio_path in tracks.csv" for t, p in zip(dataset.track_ids, paths) if not p}
    todo = [(t, p) for t, p in zip(dataset.track_ids, paths) if p and t not in cache]
    if not compute:
        skipped.update((t, NOT_COMPUTED) for t, _ in todo)
        todo = []
    return skipped, todo


def cached_matrix(dataset: PreparedDataset, cache: dict[str, np.ndarray], skipped: dict[str, str], *,
                  names: list[str], what: str, description: str) -> FeatureMatrix:
    """The :class:`FeatureMatrix` of ``dataset``'s tracks from ``cache`` (rows of ``skipped`` tracks invalid); the
    skipped tracks are logged (the first five with their reasons) under ``what``."""
    if skipped:
        shown = "; ".join(f"{t}: {r}" for t, r in list(skipped.items())[:5])
        log.warning("%s: %d track(s) skipped (%s%s)", what, len(skipped), shown, " ..." if len(skipped) > 5 else "")
    values = np.zeros((len(dataset.track_ids), len(names)), dtype=np.float32)
    valid = np.zeros(len(dataset.track_ids), dtype=bool)
    for i, track_id in enumerate(dataset.track_ids):
        if track_id in cache and track_id not in skipped:
            values[i], valid[i] = cache[track_id], True
    return FeatureMatrix(values=values, names=names, valid=valid, skipped=skipped, description=description)
