"""Filling the mel store: decode every track, compute its log-mel, append it to the packed store, skip-and-report.

The store itself (layout, commit protocol, reading) is :mod:`tagretrieval.audio.store`; the per-file cache it
replaced is :mod:`tagretrieval.audio.legacy_cache`, converted here on first use (:func:`open_for_prepare`).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import itertools
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tagretrieval.audio.frontend import MelFrontend
from tagretrieval.audio.io import AudioDecodeError, load_audio
from tagretrieval.audio.legacy_cache import LegacyMelCache
from tagretrieval.audio.store import (
    CacheMismatchError,
    MelStore,
    cache_params,
    check_mel,
    differences,
    read_layout_version,
)
from tagretrieval.runtime.processes import exit_with_parent

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-6
"""A track whose decoded peak absolute amplitude is below this is skipped as silent."""
LEGACY_SUFFIX = ".v1"
"""``mels/`` holding the old per-file cache is renamed ``mels.v1/`` while its entries move into the packed store."""


def open_for_prepare(root: str | Path, *, frontend_params: dict) -> MelStore:
    """The store at ``root`` to fill, created if absent; an old per-file cache there is set aside for conversion.

    The old cache (layout version 1) is renamed ``<root>.v1``; :func:`prepare_mels` then moves each of its mels into
    the store instead of recomputing it, and removes it when done.
    """
    root = Path(root)
    legacy = root.with_name(root.name + LEGACY_SUFFIX)
    if read_layout_version(root) == 1:
        if legacy.exists():
            raise CacheMismatchError(f"both {root} and {legacy} hold an old per-file mel cache; remove one")
        LegacyMelCache(root, frontend_params=frontend_params)  # refuses one made with other parameters
        log.warning("the mel cache at %s uses the old per-file layout: converting it into the packed store "
                    "(mels are moved, not recomputed)", root)
        os.replace(root, legacy)
    return MelStore(root, frontend_params=frontend_params)


@dataclass
class PrepareOutcome:
    """What :func:`prepare_mels` did; ``done`` and ``skipped`` follow the order of the input items."""

    done: list[str]  # ids whose mel is in the store (computed now, converted, or stored before)
    n_computed: int  # how many mels this call computed (the rest of ``done`` was stored or converted)
    skipped: dict[str, str]  # id -> "empty: ...", "decode error: ...", "silent", "too short: ...", "non-finite"
    n_converted: int = 0  # mels moved from an old per-file cache


def compute_mel(frontend: MelFrontend, path: str | Path, *, min_seconds: float, n_mels: int,
                dtype: np.dtype, track_id: str) -> tuple[np.ndarray | None, str | None]:
    """One track's stored mel ``[n_frames, n_mels]`` in ``dtype``, or ``(None, reason)`` why it is skipped.

    Same computation as :func:`mel_from_file`, inlined so the file is decoded once for the checks and the mel.
    """
    try:
        if os.path.getsize(path) == 0:
            return None, f"empty: {path} has 0 bytes"
    except OSError:
        pass  # missing or unreadable: load_audio names the problem
    try:
        y = load_audio(path, sample_rate=frontend.sample_rate)  # [n_samples]
    except AudioDecodeError as error:
        return None, f"decode error: {error}"
    if y.shape[0] < min_seconds * frontend.sample_rate:
        return None, f"too short: {y.shape[0] / frontend.sample_rate:.2f} s < min_seconds={min_seconds} s"
    if np.abs(y).max() < SILENCE_PEAK:
        return None, "silent"
    with torch.no_grad():
        mel = frontend(torch.from_numpy(y).to(next(frontend.buffers()).device)).cpu().numpy()  # [n_mels, n_frames]
    try:
        return check_mel(track_id, mel, n_mels=n_mels, dtype=dtype), None
    except ValueError:
        return None, "non-finite"


_WORKER_STATE: tuple[MelFrontend, float, int, np.dtype] | None = None


def _init_worker(frontend: MelFrontend, min_seconds: float, n_mels: int, dtype: str) -> None:
    global _WORKER_STATE
    exit_with_parent()  # a parent killed with SIGKILL cannot shut the pool down
    torch.set_num_threads(1)  # num_workers processes x 1 thread, not num_workers x n_cores
    _WORKER_STATE = (frontend, min_seconds, n_mels, np.dtype(dtype))


def _worker_job(track_id: str, path: str) -> tuple[np.ndarray | None, str | None]:
    frontend, min_seconds, n_mels, dtype = _WORKER_STATE
    return compute_mel(frontend, path, min_seconds=min_seconds, n_mels=n_mels, dtype=dtype, track_id=track_id)


def prepare_mels(store: MelStore, items: Sequence[tuple[str, str | Path]], frontend: MelFrontend, *,
                 num_workers: int = 0, min_seconds: float = 0.0, progress: bool = True) -> PrepareOutcome:
    """Fill ``store`` with the log-mel of every ``(track_id, audio_path)`` in ``items`` not stored yet.

    Resumable: tracks already in the store are neither decoded nor recomputed, and the store commits every few
    seconds, so an interrupted run is finished by running it again (it recomputes at most the uncommitted tail).
    Mels found in an old per-file cache set aside by :func:`open_for_prepare` are moved, not recomputed.
    ``num_workers > 0`` computes in that many "spawn" processes (fork is unsafe with torch/OpenMP thread pools in
    the parent) with one torch thread each and at most ``2 * num_workers`` jobs in flight; this process appends
    their results to the store (one writer). 0 computes in-process.

    Never crashes on bad audio: empty files, undecodable files, silent files (peak ``|y| < 1e-6``), files shorter
    than ``min_seconds`` and mels with NaN/inf are skipped, with a reason in ``PrepareOutcome.skipped``. Skipped
    tracks are not remembered: a later run examines them again.

    Raises:
        CacheMismatchError: ``frontend`` is not the front end the store was made with.
        ValueError: a track id appears twice in ``items``.
    """
    if num_workers < 0 or min_seconds < 0:
        raise ValueError(f"num_workers and min_seconds must be >= 0, got {num_workers} and {min_seconds}")
    expected = json.loads(json.dumps(cache_params(frontend, dtype=store.frontend_params["dtype"])))
    diffs = differences(expected, store.frontend_params)
    if diffs:
        raise CacheMismatchError(f"mel store {store.root} was made with another front end than the one given:"
                                 "\n  " + "\n  ".join(diffs))
    seen: set[str] = set()
    for track_id, _ in items:
        if track_id in seen:
            raise ValueError(f"track id {track_id!r} appears more than once in items")
        seen.add(track_id)
    del seen
    legacy_root = store.root.with_name(store.root.name + LEGACY_SUFFIX)
    legacy = LegacyMelCache(legacy_root, frontend_params=store.frontend_params) if legacy_root.exists() else None

    status: dict[str, str | None] = {}  # track id -> None (in the store) or the skip reason; input order
    counts = {"computed": 0, "converted": 0}
    bar = tqdm(total=len(items), unit="track", desc="log-mels", disable=not progress)
    with store.writer() as writer:
        def pending():
            for track_id, path in items:
                status[track_id] = None
                if store.has(track_id):
                    bar.update()
                elif legacy is not None and legacy.has(track_id):
                    writer.add(track_id, legacy.read(track_id))
                    counts["converted"] += 1
                    bar.update()
                else:
                    yield track_id, path

        def record(track_id: str, result: tuple[np.ndarray | None, str | None]) -> None:
            stored, reason = result
            status[track_id] = reason
            if stored is not None:
                writer.add_stored(track_id, stored)
                counts["computed"] += 1
            bar.update()
            bar.set_postfix(computed=counts["computed"], refresh=False)

        todo = pending()
        first = next(todo, None)
        job = dict(min_seconds=min_seconds, n_mels=store.n_mels, dtype=store.dtype)
        try:
            if first is not None and num_workers == 0:
                # one clip's STFT is too small to split across threads: several threads only spin-wait
                # (measured here: 27 ms per 6 s clip on 1 thread, 440 ms on 2 threads of a loaded machine)
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    for track_id, path in itertools.chain([first], todo):
                        record(track_id, compute_mel(frontend, path, track_id=track_id, **job))
                finally:
                    torch.set_num_threads(threads)
            elif first is not None:
                initargs = (copy.deepcopy(frontend).to("cpu"), min_seconds, store.n_mels, str(store.dtype))
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
    if legacy is not None:
        shutil.rmtree(legacy_root)
        log.warning("converted %d mel(s) from the old per-file cache into the packed store %s; removed %s",
                    counts["converted"], store.root, legacy_root)
    return PrepareOutcome(done=[t for t, reason in status.items() if reason is None], n_computed=counts["computed"],
                          skipped={t: reason for t, reason in status.items() if reason is not None},
                          n_converted=counts["converted"])
