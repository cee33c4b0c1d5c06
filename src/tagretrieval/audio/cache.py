"""A self-describing on-disk cache of log-mels, one ``.npy`` per track, and the job that fills it.

Layout::

    root/manifest.json          {"layout_version": 1, "frontend_params": {...front-end params + "dtype"}}
    root/<ab>/<name>.npy        one float32/float16 array [n_mels, n_frames] per track

``<ab>`` is the first two hex digits of ``sha1(track_id)``: 256 fan-out folders keep a 100k-track cache at
~400 files per folder. ``<name>`` is the track id itself when it is made only of ``[A-Za-z0-9._-]``, does
not start with ``.`` and is at most 200 characters; any other id (``a/b c``, unicode, very long) is stored
as ``sha1=<40 hex digits>``. ``=`` never occurs in a plain name, so the two kinds never collide.
(On a case-insensitive file system, plain ids that differ only in case could collide; Linux is assumed.)

Writes go to a hidden temp file ``.<name>.<random>.tmp`` in the same folder, then ``os.replace``: a reader
only ever sees complete entries, and a temp file left by a killed writer is never taken for an entry.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from tagretrieval.audio.frontend import MelFrontend
from tagretrieval.audio.io import AudioDecodeError, load_audio

LAYOUT_VERSION: int = 1
MANIFEST_NAME = "manifest.json"
CACHE_DTYPES: tuple[str, ...] = ("float32", "float16")
SILENCE_PEAK = 1e-6
"""A track whose decoded peak absolute amplitude is below this is skipped as silent."""

_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


class CacheMismatchError(Exception):
    """A mel cache was made with other parameters than the ones asked for; names the cache and every difference."""


def cache_params(frontend: MelFrontend, *, dtype: str = "float32") -> dict:
    """The full parameter dict of a cache filled by ``frontend``: its ``params()`` plus the storage ``dtype``."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {CACHE_DTYPES}, got {dtype!r}")
    return {**frontend.params(), "dtype": dtype}


def _differences(expected: dict, found: dict) -> list[str]:
    missing = object()
    lines = []
    for key in sorted(set(expected) | set(found)):
        want, have = expected.get(key, missing), found.get(key, missing)
        if want != have:
            lines.append(f"{key}: expected {'<absent>' if want is missing else repr(want)}, "
                         f"found {'<absent>' if have is missing else repr(have)}")
    return lines


class MelCache:
    """One ``.npy`` log-mel ``[n_mels, n_frames]`` per track under ``root``, described by ``root/manifest.json``.

    Args:
        root: cache folder; created with its manifest if absent.
        frontend_params: the full parameters, as given by :func:`cache_params` (must hold ``"dtype"`` and
            ``"n_mels"``). Opening a cache whose manifest differs raises :class:`CacheMismatchError`.
    """

    def __init__(self, root: str | Path, *, frontend_params: dict):
        for key in ("dtype", "n_mels"):
            if key not in frontend_params:
                raise ValueError(f"frontend_params lacks {key!r}; build them with cache_params(frontend, dtype=...)")
        if frontend_params["dtype"] not in CACHE_DTYPES:
            raise ValueError(f"cache dtype must be one of {CACHE_DTYPES}, got {frontend_params['dtype']!r}")
        self.root = Path(root)
        self.frontend_params = json.loads(json.dumps(frontend_params))  # as it will read back from disk
        self.dtype = np.dtype(self.frontend_params["dtype"])
        self.n_mels = int(self.frontend_params["n_mels"])
        manifest = {"layout_version": LAYOUT_VERSION, "frontend_params": self.frontend_params}
        manifest_path = self.root / MANIFEST_NAME
        if manifest_path.exists():
            self._check_manifest(manifest_path, manifest)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            text = json.dumps(manifest, indent=2, sort_keys=True)
            _atomic_write(manifest_path, lambda f: f.write(text.encode()))

    @classmethod
    def open(cls, root: str | Path, *, frontend: MelFrontend) -> "MelCache":
        """An existing cache, checked against ``frontend`` (its storage dtype is read from the manifest)."""
        manifest_path = Path(root) / MANIFEST_NAME
        if not manifest_path.exists():
            raise FileNotFoundError(f"no mel cache at {root} ({MANIFEST_NAME} missing): prepare the data first")
        dtype = json.loads(manifest_path.read_text()).get("frontend_params", {}).get("dtype", "float32")
        return cls(root, frontend_params=cache_params(frontend, dtype=dtype))

    def _check_manifest(self, manifest_path: Path, expected: dict) -> None:
        try:
            found = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CacheMismatchError(f"mel cache {self.root}: unreadable {MANIFEST_NAME} ({error})") from error
        if not isinstance(found, dict):
            raise CacheMismatchError(f"mel cache {self.root}: {MANIFEST_NAME} is not a JSON object")
        diffs = _differences({"layout_version": LAYOUT_VERSION}, {"layout_version": found.get("layout_version")})
        found_params = found.get("frontend_params")
        diffs += _differences(expected["frontend_params"], found_params if isinstance(found_params, dict) else {})
        if diffs:
            raise CacheMismatchError(f"mel cache {self.root} was made with other parameters; refusing to use it "
                                     "(use another folder or delete it):\n  " + "\n  ".join(diffs))

    def path_for(self, track_id: str) -> Path:
        """File of ``track_id``: ``root/<first 2 hex of sha1(id)>/<id or sha1=<hex>>.npy`` (see module doc)."""
        if not isinstance(track_id, str) or not track_id:
            raise ValueError(f"track ids must be non-empty strings, got {track_id!r}")
        digest = hashlib.sha1(track_id.encode("utf-8", errors="surrogatepass")).hexdigest()
        name = track_id if _PLAIN_ID.fullmatch(track_id) else f"sha1={digest}"
        return self.root / digest[:2] / f"{name}.npy"

    def has(self, track_id: str) -> bool:
        """Whether a complete entry for ``track_id`` exists."""
        return self.path_for(track_id).is_file()

    def write(self, track_id: str, mel: np.ndarray) -> None:
        """Store ``mel [n_mels, n_frames]`` (cast to the cache dtype) atomically, replacing any old entry.

        Raises ValueError naming the track for a wrong shape or non-finite values (also after a float16 cast).
        """
        mel = np.asarray(mel)
        if mel.ndim != 2 or mel.shape[0] != self.n_mels or mel.shape[1] == 0:
            raise ValueError(f"track {track_id!r}: expected a mel [n_mels={self.n_mels}, n_frames], "
                             f"got shape {mel.shape}")
        with np.errstate(over="ignore"):  # an overflow to inf is reported just below
            stored = np.ascontiguousarray(mel, dtype=self.dtype)
        if not np.isfinite(stored).all():
            raise ValueError(f"track {track_id!r}: mel has NaN/inf values (as {self.dtype}); not cached")
        path = self.path_for(track_id)
        path.parent.mkdir(exist_ok=True)
        _atomic_write(path, lambda f: np.save(f, stored, allow_pickle=False))

    def read(self, track_id: str, *, mmap: bool = True) -> np.ndarray:
        """The cached mel ``[n_mels, n_frames]`` in the cache dtype; memory-mapped read-only when ``mmap``."""
        path = self.path_for(track_id)
        if not path.is_file():
            raise FileNotFoundError(f"track {track_id!r} is not in the mel cache {self.root} (no {path})")
        mel = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if mel.ndim != 2 or mel.shape[0] != self.n_mels or mel.dtype != self.dtype:
            raise ValueError(f"track {track_id!r}: cache entry {path} has shape {mel.shape} and dtype {mel.dtype}, "
                             f"expected [{self.n_mels}, n_frames] {self.dtype}")
        return mel


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Run ``write(f)`` on a temp file next to ``path``, then ``os.replace`` it onto ``path`` (no fsync: a
    crash may lose the entry, never leave a partial one). The temp file is removed if writing fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class PrepareOutcome:
    """What :func:`prepare_mels` did; ``done`` and ``skipped`` follow the order of the input items."""

    done: list[str]  # ids whose mel is in the cache (computed now or before)
    n_computed: int  # how many mels this call computed (the rest of ``done`` was cached before)
    skipped: dict[str, str]  # id -> "decode error: ...", "silent", "too short: ...", "non-finite"


def _compute_and_store(cache: MelCache, frontend: MelFrontend, track_id: str, path: str | Path,
                       min_seconds: float) -> str | None:
    """Compute and cache one track's mel; returns None on success or the reason it was skipped.

    Same computation as :func:`mel_from_file`, inlined so the file is decoded once for the checks and the mel.
    """
    try:
        y = load_audio(path, sample_rate=frontend.sample_rate)  # [n_samples]
    except AudioDecodeError as error:
        return f"decode error: {error}"
    if y.shape[0] < min_seconds * frontend.sample_rate:
        return f"too short: {y.shape[0] / frontend.sample_rate:.2f} s < min_seconds={min_seconds} s"
    if np.abs(y).max() < SILENCE_PEAK:
        return "silent"
    with torch.no_grad():
        mel = frontend(torch.from_numpy(y).to(frontend.window.device)).cpu().numpy()  # [n_mels, n_frames]
    if not np.isfinite(mel).all():
        return "non-finite"
    cache.write(track_id, mel)
    return None


_WORKER_STATE: tuple[MelCache, MelFrontend, float] | None = None


def _exit_with_parent() -> None:
    """Exit this worker as soon as its parent process is gone: a parent killed with SIGKILL cannot shut the pool
    down, and ProcessPoolExecutor workers would otherwise block forever on the call queue (each holding torch)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(cache: MelCache, frontend: MelFrontend, min_seconds: float) -> None:
    global _WORKER_STATE
    _exit_with_parent()
    torch.set_num_threads(1)  # num_workers processes x 1 thread, not num_workers x n_cores
    _WORKER_STATE = (cache, frontend, min_seconds)


def _worker_job(track_id: str, path: str) -> str | None:
    cache, frontend, min_seconds = _WORKER_STATE
    return _compute_and_store(cache, frontend, track_id, path, min_seconds)


def prepare_mels(cache: MelCache, items: Sequence[tuple[str, str | Path]], frontend: MelFrontend, *,
                 num_workers: int = 0, min_seconds: float = 0.0, progress: bool = True) -> PrepareOutcome:
    """Fill ``cache`` with the log-mel of every ``(track_id, audio_path)`` in ``items`` not cached yet.

    Resumable: tracks already in the cache are neither decoded nor recomputed, and each entry is written
    atomically, so an interrupted run is finished by running it again. Memory stays bounded: items are
    streamed and each mel is written as soon as it is computed (by the worker that computed it).
    ``num_workers > 0`` uses that many "spawn" processes (fork is unsafe with torch/OpenMP thread pools in
    the parent) with one torch thread each and at most ``2 * num_workers`` jobs in flight; 0 runs in-process.

    Never crashes on bad audio: undecodable files, silent files (peak ``|y| < 1e-6``), files shorter than
    ``min_seconds`` and mels with NaN/inf are skipped, with a reason in ``PrepareOutcome.skipped``. Skipped
    tracks are not remembered: a later run examines them again.

    Raises:
        CacheMismatchError: ``frontend`` is not the front end the cache was made with.
        ValueError: a track id appears twice in ``items``.
    """
    if num_workers < 0 or min_seconds < 0:
        raise ValueError(f"num_workers and min_seconds must be >= 0, got {num_workers} and {min_seconds}")
    expected = json.loads(json.dumps(cache_params(frontend, dtype=cache.frontend_params["dtype"])))
    diffs = _differences(expected, cache.frontend_params)
    if diffs:
        raise CacheMismatchError(f"mel cache {cache.root} was made with another front end than the one given:"
                                 "\n  " + "\n  ".join(diffs))
    seen: set[str] = set()
    for track_id, _ in items:
        if track_id in seen:
            raise ValueError(f"track id {track_id!r} appears more than once in items")
        seen.add(track_id)
    del seen

    status: dict[str, str | None] = {}  # track id -> None (in the cache) or the skip reason; input order
    n_computed = 0
    bar = tqdm(total=len(items), unit="track", desc="log-mels", disable=not progress)

    def pending():
        for track_id, path in items:
            status[track_id] = None
            if cache.has(track_id):
                bar.update()
            else:
                yield track_id, path

    def record(track_id: str, reason: str | None) -> None:
        nonlocal n_computed
        status[track_id] = reason
        n_computed += reason is None
        bar.update()
        bar.set_postfix(computed=n_computed, refresh=False)

    todo = pending()
    first = next(todo, None)
    try:
        if first is not None and num_workers == 0:
            # one clip's STFT is too small to split across threads: several threads only spin-wait
            # (measured here: 27 ms per 6 s clip on 1 thread, 440 ms on 2 threads of a loaded machine)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for track_id, path in itertools.chain([first], todo):
                    record(track_id, _compute_and_store(cache, frontend, track_id, path, min_seconds))
            finally:
                torch.set_num_threads(threads)
        elif first is not None:
            initargs = (cache, copy.deepcopy(frontend).to("cpu"), min_seconds)
            with cf.ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=initargs) as pool:
                in_flight: dict[cf.Future, str] = {}
                for track_id, path in itertools.chain([first], todo):
                    if len(in_flight) >= 2 * num_workers:
                        finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                        for future in finished:
                            record(in_flight.pop(future), future.result())
                    in_flight[pool.submit(_worker_job, track_id, str(path))] = track_id
                for future in cf.as_completed(in_flight):
                    record(in_flight[future], future.result())
    finally:
        bar.close()
    return PrepareOutcome(done=[t for t, reason in status.items() if reason is None], n_computed=n_computed,
                          skipped={t: reason for t, reason in status.items() if reason is not None})
