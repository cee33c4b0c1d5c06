"""The packed mel store: log-mels laid out so that a training crop is one contiguous read.

Layout (``layout_version`` 2)::

    root/manifest.json        {"layout_version": 2, "frontend_params": {... + "dtype"},
                               "shards": [{"name": "shard-00000", "n_frames": F, "n_tracks": N}, ...]}
    root/shard-00000.mel      raw ``dtype`` values ``[F, n_mels]``, C order: the tracks' frames, each track contiguous
    root/shard-00000.idx.npz  ``track_ids`` str ``[N]``, ``offsets`` int64 ``[N]`` (first frame), ``n_frames`` int64 ``[N]``

Why this layout (measured in ``scripts/benchmark.py``, section ``loader``): the per-file cache it replaces stored
``[n_mels, n_frames]`` row-major, so a 173-frame crop touched all 128 rows, i.e. nearly the whole file, and cost a
stat + open + mmap per sample. Time-major, a crop of a song is ``chunk_frames * n_mels`` consecutive values: one
``preadv`` straight into the batch buffer, on file descriptors that each process opens once.

Guarantees (those of the per-file cache it replaces):

- **Self-describing**: the manifest holds the front-end parameters and storage dtype; a store made with other
  parameters is refused (:class:`CacheMismatchError` naming every difference).
- **Atomic and resumable**: one process writes at a time (:func:`tagretrieval.runtime.lock.exclusive` on
  ``root/.write.lock``), appending to the last shard. A track's frames are flushed (``fsync``) before an index
  names them; the shard's index, then the manifest (which lists the shards), are replaced atomically, every few
  seconds and at the end. Readers use only what the indexes of the listed shards name. A writer killed mid-way
  loses at most its uncommitted tracks: they are computed again, the others never; their bytes stay in the shard,
  unreferenced (the next writer appends after them).
- **Safe without a lock**: where the lock cannot be taken (a file system without ``flock``) or does not exclude
  (one whose ``flock`` is local to a node), two writers may append to one store at once. Each track is one
  ``O_APPEND`` write whose offset is read back from the file, never counted, and every commit merges by track id
  with what is on disk (:class:`MelStoreWriter`): no track ever reads another's frames. Two commits at the same
  instant can, rarely, drop one writer's last tracks, which the next import computes again.
- **Skip-and-report** stays with the job that fills the store (:func:`tagretrieval.audio.cache.prepare_mels`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagretrieval.runtime.errors import UserError
from tagretrieval.runtime.files import FileWriteError, atomic_savez, atomic_write_json
from tagretrieval.runtime.lock import exclusive

LAYOUT_VERSION = 2
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".write.lock"
CACHE_DTYPES: tuple[str, ...] = ("float32", "float16")
DEFAULT_SHARD_BYTES = 1 << 30
"""A shard is closed once it holds this many bytes (1 GiB): few files to open, none unwieldy to copy."""
DEFAULT_COMMIT_SECONDS = 2.0
DEFAULT_COMMIT_TRACKS = 32
"""A writer commits every 2 s or 32 tracks, whichever comes first: a killed preparation loses little work, and a
commit (fsync + a small index and manifest) stays cheap next to computing 32 mels."""


class CacheMismatchError(UserError):
    """A mel store was made with other parameters than the ones asked for; names the store and every difference."""


class LegacyCacheError(CacheMismatchError):
    """The folder holds the old per-file mel cache (layout version 1): preparing the data converts it."""


def differences(expected: dict, found: dict) -> list[str]:
    """``"key: expected X, found Y"`` for every key whose values differ (absent keys included)."""
    missing = object()
    lines = []
    for key in sorted(set(expected) | set(found)):
        want, have = expected.get(key, missing), found.get(key, missing)
        if want != have:
            lines.append(f"{key}: expected {'<absent>' if want is missing else repr(want)}, "
                         f"found {'<absent>' if have is missing else repr(have)}")
    return lines


def read_layout_version(root: str | Path) -> int | None:
    """The ``layout_version`` of the mel cache or store at ``root``; None when there is no manifest."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return int(json.loads(path.read_text()).get("layout_version"))
    except (OSError, ValueError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise CacheMismatchError(f"mel store {root}: unreadable {MANIFEST_NAME} ({error})") from error


@dataclass(frozen=True)
class TrackLocations:
    """Where tracks live in a store, aligned with the ids asked for: ``shard``, ``offset`` (first frame) and
    ``n_frames``, each int64 ``[n]``; ``shard`` indexes :attr:`MelStore.shard_names`."""

    shard: np.ndarray
    offset: np.ndarray
    n_frames: np.ndarray


def cache_params(frontend, *, dtype: str = "float32") -> dict:
    """The full parameter dict of a store filled by ``frontend`` (a :class:`~tagretrieval.audio.frontend.MelFrontend`):
    its ``params()`` plus the storage ``dtype``. Defined here, beside the store that checks it, so that the store
    does not import the job that fills it."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {CACHE_DTYPES}, got {dtype!r}")
    return {**frontend.params(), "dtype": dtype}


class MelStore:
    """Packed, time-major log-mels ``[n_frames, n_mels]`` per track (see the module docstring).

    Args:
        root: the store's folder; created (with its manifest) if absent.
        frontend_params: the full parameters, as :func:`cache_params` gives them (must hold
            ``"dtype"`` and ``"n_mels"``). A store whose manifest differs raises :class:`CacheMismatchError`; a
            folder holding the old per-file cache raises :class:`LegacyCacheError`.
    """

    def __init__(self, root: str | Path, *, frontend_params: dict) -> None:
        for key in ("dtype", "n_mels"):
            if key not in frontend_params:
                raise ValueError(f"frontend_params lacks {key!r}; build them with cache_params(frontend, dtype=...)")
        if frontend_params["dtype"] not in CACHE_DTYPES:
            raise ValueError(f"cache dtype must be one of {CACHE_DTYPES}, got {frontend_params['dtype']!r}")
        self.root = Path(root)
        self.frontend_params = json.loads(json.dumps(frontend_params))  # as it reads back from disk
        self.dtype = np.dtype(self.frontend_params["dtype"])
        self.n_mels = int(self.frontend_params["n_mels"])
        self.frame_bytes = self.n_mels * self.dtype.itemsize
        self.bytes_read = 0  # the store's own accounting: bytes this process asked the file system for
        self._fds: dict[int, int] = {}
        self._fd_pid = os.getpid()
        if (self.root / MANIFEST_NAME).exists():
            self._load()
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self._shards: list[dict] = []
            self._write_manifest()
            self._index_tracks(entries=[])

    # -- manifest and index ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        version = read_layout_version(self.root)
        if version == 1:
            raise LegacyCacheError(
                f"{self.root} holds the old per-file mel cache (layout version 1), which the training loader no "
                "longer reads: run the same command with mode=prepare (or any mode that prepares the data) to convert "
                "it into the packed store; no mel is recomputed")
        found = json.loads((self.root / MANIFEST_NAME).read_text())
        diffs = differences({"layout_version": LAYOUT_VERSION}, {"layout_version": version})
        params = found.get("frontend_params")
        diffs += differences(self.frontend_params, params if isinstance(params, dict) else {})
        if diffs:
            raise CacheMismatchError(f"mel store {self.root} was made with other parameters; refusing to use it "
                                     "(use another folder or delete it):\n  " + "\n  ".join(diffs))
        self._shards = [dict(s) for s in found["shards"]]
        entries = []
        for number, shard in enumerate(self._shards):
            # every entry of a listed shard's index is committed: its frames were flushed before the index was
            # replaced. (The manifest's n_tracks is the count at its last write; two unlocked writers' commits may
            # leave it behind the index.)
            ids, offsets, lengths = self._read_index(shard["name"])
            entries.append((ids, np.full(len(ids), number, dtype=np.int64), offsets, lengths))
        self._index_tracks(entries=entries)

    def _read_index(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path = self.root / f"{name}.idx.npz"
        if not path.exists():
            empty = np.zeros(0, dtype=np.int64)
            return np.zeros(0, dtype=str), empty, empty
        with np.load(path, allow_pickle=False) as data:
            return data["track_ids"], data["offsets"].astype(np.int64), data["n_frames"].astype(np.int64)

    def _index_tracks(self, *, entries: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self._where: dict[str, tuple[int, int, int]] = {}
        for ids, shards, offsets, lengths in entries:
            for track_id, shard, offset, length in zip(ids.tolist(), shards.tolist(), offsets.tolist(),
                                                       lengths.tolist()):
                self._where[track_id] = (shard, offset, length)

    def _write_manifest(self) -> None:
        atomic_write_json(self.root / MANIFEST_NAME, {"layout_version": LAYOUT_VERSION,
                                                      "frontend_params": self.frontend_params,
                                                      "shards": self._shards}, sort_keys=True)

    @classmethod
    def open(cls, root: str | Path, *, frontend) -> "MelStore":
        """An existing store, checked against ``frontend`` (a :class:`MelFrontend`; the dtype comes from the manifest)."""
        path = Path(root) / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"no mel store at {root} ({MANIFEST_NAME} missing): prepare the data first")
        if read_layout_version(root) == 1:
            return cls(root, frontend_params=cache_params(frontend))  # raises LegacyCacheError with the remedy
        dtype = json.loads(path.read_text()).get("frontend_params", {}).get("dtype", "float32")
        return cls(root, frontend_params=cache_params(frontend, dtype=dtype))

    # -- queries --------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._where

    def has(self, track_id: str) -> bool:
        """Whether a committed entry for ``track_id`` exists."""
        return track_id in self._where

    @property
    def track_ids(self) -> list[str]:
        return list(self._where)

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self._shards]

    def locate(self, track_ids: Sequence[str]) -> TrackLocations:
        """Where each of ``track_ids`` is; raises FileNotFoundError naming the first id not in the store."""
        rows = []
        for track_id in track_ids:
            where = self._where.get(track_id)
            if where is None:
                raise FileNotFoundError(f"track {track_id!r} is not in the mel store {self.root}")
            rows.append(where)
        table = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return TrackLocations(shard=table[:, 0], offset=table[:, 1], n_frames=table[:, 2])

    def n_frames(self, track_id: str) -> int:
        return int(self.locate([track_id]).n_frames[0])

    # -- reading --------------------------------------------------------------------------------------------------
    def _fd(self, shard: int) -> int:
        if self._fd_pid != os.getpid():  # a forked DataLoader worker: descriptors are shared, offsets unused
            self._fds, self._fd_pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(self.root / f"{self._shards[shard]['name']}.mel", os.O_RDONLY)
            # crops are random reads: no kernel read-ahead (it would read ~128 KiB around each 44-88 KiB crop)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            self._fds[shard] = fd
        return fd

    def read_frames(self, locations: TrackLocations, starts: np.ndarray, n_frames: int) -> np.ndarray:
        """``n_frames`` frames of each located track from its frame ``starts[i]``, zero-padded past its end.

        Args:
            locations: from :meth:`locate` (``n`` tracks).
            starts: int ``[n]`` first frame per track, ``0 <= start``.
            n_frames: frames per crop.
        Returns:
            ``[n, n_frames, n_mels]`` in the store's dtype: one ``preadv`` per crop, into the returned array.
        """
        starts = np.asarray(starts, dtype=np.int64)
        out = np.zeros((len(starts), n_frames, self.n_mels), dtype=self.dtype)
        available = np.clip(locations.n_frames - starts, 0, n_frames)
        byte_offsets = (locations.offset + starts) * self.frame_bytes
        for i in range(len(starts)):
            n = int(available[i])
            if n == 0:
                continue
            view = memoryview(out[i, :n]).cast("B")
            got = os.preadv(self._fd(int(locations.shard[i])), [view], int(byte_offsets[i]))
            if got != n * self.frame_bytes:
                raise OSError(f"mel store {self.root}: short read of {self._shards[int(locations.shard[i])]['name']} "
                              f"({got} of {n * self.frame_bytes} bytes): the store is damaged; prepare it again")
            self.bytes_read += got
        return out

    def read(self, track_id: str) -> np.ndarray:
        """The whole mel of ``track_id``: ``[n_frames, n_mels]`` in the store's dtype (a copy)."""
        locations = self.locate([track_id])
        return self.read_frames(locations, np.zeros(1, dtype=np.int64), int(locations.n_frames[0]))[0]

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}

    def __getstate__(self) -> dict:  # spawned workers open their own descriptors
        state = dict(self.__dict__)
        state["_fds"], state["_fd_pid"] = {}, -1
        return state

    # -- writing --------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, *, shard_bytes: int = DEFAULT_SHARD_BYTES, commit_seconds: float = DEFAULT_COMMIT_SECONDS,
               commit_tracks: int = DEFAULT_COMMIT_TRACKS) -> Iterator["MelStoreWriter"]:
        """Open the store for appending (one writer at a time: waits for another process's writer to finish).

        The lock is :func:`tagretrieval.runtime.lock.exclusive` on ``root/.write.lock``; where it cannot be taken (a
        file system without ``flock``) the writer runs unlocked, which is safe (see :class:`MelStoreWriter`).
        """
        with exclusive(self.root / LOCK_NAME, purpose=f"writing the mel store {self.root}"):
            self._load()  # another process may have written since this store was opened
            writer = MelStoreWriter(self, shard_bytes=shard_bytes, commit_seconds=commit_seconds,
                                    commit_tracks=commit_tracks)
            try:
                yield writer
            finally:
                writer.close()

    def write(self, track_id: str, mel: np.ndarray) -> None:
        """Store one ``mel [n_mels, n_frames]`` and commit it (for many tracks use :meth:`writer`)."""
        with self.writer() as writer:
            writer.add(track_id, mel)


def check_mel(track_id: str, mel: np.ndarray, *, n_mels: int, dtype: np.dtype) -> np.ndarray:
    """``mel [n_mels, n_frames]`` as the stored ``[n_frames, n_mels]`` in ``dtype``; ValueError naming the track for a
    wrong shape or non-finite values (also after a float16 cast)."""
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[0] != n_mels or mel.shape[1] == 0:
        raise ValueError(f"track {track_id!r}: expected a mel [n_mels={n_mels}, n_frames], got shape {mel.shape}")
    with np.errstate(over="ignore"):  # an overflow to inf is reported just below
        stored = np.ascontiguousarray(mel.T, dtype=dtype)
    if not np.isfinite(stored).all():
        raise ValueError(f"track {track_id!r}: mel has NaN/inf values (as {dtype}); not stored")
    return stored


class MelStoreWriter:
    """Appends tracks to a :class:`MelStore`; made by :meth:`MelStore.writer`, which holds the write lock.

    Safe even when the lock does not exclude (a file system without ``flock``, or one whose lock does not reach
    across nodes), so that two writers of one store never mix up their tracks:

    - a shard is opened with ``O_APPEND`` and each track is one ``write``: the kernel puts it at the file's real end,
      and its offset is read back from the descriptor, never counted by this writer;
    - nothing on disk is truncated or deleted: bytes no index points at (the uncommitted tail of a killed writer,
      another live writer's uncommitted tracks) are only wasted space;
    - a commit merges, by track id, what is committed on disk now (index and manifest read afresh) with this
      writer's tracks, so neither writer's commit drops the other's.
    """

    def __init__(self, store: MelStore, *, shard_bytes: int, commit_seconds: float, commit_tracks: int) -> None:
        if shard_bytes < store.frame_bytes:
            raise ValueError(f"shard_bytes={shard_bytes} is smaller than one frame ({store.frame_bytes} bytes)")
        self.store = store
        self.shard_bytes = shard_bytes
        self.commit_seconds = commit_seconds
        self.commit_tracks = commit_tracks
        self._last_commit = time.monotonic()
        self._file = None
        self._number = -1
        self._pending: list[tuple[str, int, int]] = []  # (track id, offset, n_frames) in the open shard, uncommitted
        self._pending_ids: set[str] = set()
        self._mine: dict[int, dict[str, tuple[int, int]]] = {}  # shard -> id -> (offset, n_frames), committed here
        self._seen: dict[int, tuple[int, int, int] | None] = {}  # shard -> signature of an index found holding mine
        self._theirs: set[str] = set()  # tracks other writers committed after this one opened

    def _open_shard(self, number: int) -> None:
        store = self.store
        if number == len(store._shards):
            store._shards.append({"name": f"shard-{number:05d}", "n_frames": 0, "n_tracks": 0})
        path = store.root / f"{store._shards[number]['name']}.mel"
        try:
            self._file = open(path, "ab", buffering=0)  # O_APPEND, unbuffered: one write(2) per track
        except OSError as error:
            raise FileWriteError(path, error) from error
        self._number = number

    def _shard_size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def add(self, track_id: str, mel: np.ndarray) -> None:
        """Append ``mel [n_mels, n_frames]`` (checked by :func:`check_mel`); a track already stored is refused."""
        stored = check_mel(track_id, mel, n_mels=self.store.n_mels, dtype=self.store.dtype)
        self.add_stored(track_id, stored)

    def add_stored(self, track_id: str, stored: np.ndarray) -> None:
        """Append an already checked ``[n_frames, n_mels]`` array in the store's dtype."""
        if track_id in self._theirs:
            return  # another writer of this store committed it while this one computed it: the same mel, kept once
        if track_id in self.store._where or track_id in self._pending_ids:
            raise ValueError(f"track {track_id!r} is already in the mel store {self.store.root}")
        if self._file is None:
            shards = self.store._shards
            last = len(shards) - 1
            if last >= 0:
                self._open_shard(last)
                if self._shard_size() >= self.shard_bytes:
                    self._file.close()
                    self._open_shard(len(shards))
            else:
                self._open_shard(0)
        elif self._shard_size() >= self.shard_bytes:
            self.commit()
            self._file.close()
            self._open_shard(len(self.store._shards))
        offset = self._append(memoryview(np.ascontiguousarray(stored)).cast("B"))
        self._pending.append((track_id, offset, int(stored.shape[0])))
        self._pending_ids.add(track_id)
        if len(self._pending) >= self.commit_tracks or time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def _append(self, data: memoryview) -> int:
        """Append one track's bytes at the shard's real end in one ``write``; returns its first frame.

        A partial track left by a writer that failed mid-write (a full disk) can leave the end between two frames:
        it is padded to the next frame first. Should another writer's bytes land between the padding and the track,
        the track is written again after them (the misplaced copy is never indexed).
        """
        frame_bytes = self.store.frame_bytes
        for _ in range(8):
            misaligned = self._shard_size() % frame_bytes
            if misaligned:
                self._write_bytes(memoryview(bytes(frame_bytes - misaligned)))
            self._write_bytes(data)
            first_byte = os.lseek(self._file.fileno(), 0, os.SEEK_CUR) - len(data)  # where O_APPEND put it
            if first_byte % frame_bytes == 0:
                return first_byte // frame_bytes
        raise FileWriteError(Path(self._file.name), OSError(errno.EIO, "could not append a track on a frame "
                                                                       "boundary (other writers keep interleaving)"))

    def _write_bytes(self, data: memoryview) -> None:
        """Append to the open shard in one ``write``; an OSError (disk full, I/O error) or a short write is raised
        naming the shard file. The bytes of a failed append are never committed: they stay unreferenced."""
        try:
            written = self._file.write(data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError as error:
            raise FileWriteError(Path(self._file.name), error) from error

    def commit(self) -> None:
        """Make everything added so far durable and visible: data, then the shard's index, then the manifest.

        The index and the manifest are read afresh and merged with this writer's tracks by id (a track another
        writer committed first keeps that writer's entry), then replaced atomically. The merge is checked and redone
        should an unlocked writer's commit have replaced them in between, and the index of every shard this writer
        committed to before is checked again (a ``stat`` when unchanged): a commit of this writer that another
        writer's dropped is restored by this writer's next commit.
        """
        self._last_commit = time.monotonic()
        if self._file is None or not self._pending:
            return
        store = self.store
        try:
            os.fsync(self._file.fileno())
        except OSError as error:
            raise FileWriteError(Path(self._file.name), error) from error
        mine = self._mine.setdefault(self._number, {})
        for track_id, offset, length in self._pending:
            mine[track_id] = (offset, length)
        self._pending, self._pending_ids = [], set()
        for _ in range(5):
            merged = {number: self._merge_index(number) for number in self._mine
                      if number == self._number or self._index_signature(number) != self._seen.get(number)}
            shards = self._merged_shards(merged)
            atomic_write_json(store.root / MANIFEST_NAME, {"layout_version": LAYOUT_VERSION,
                                                           "frontend_params": store.frontend_params,
                                                           "shards": shards}, sort_keys=True)
            listed = len(json.loads((store.root / MANIFEST_NAME).read_text())["shards"]) > max(merged)
            if all([self._index_holds_mine(number) for number in merged]) and listed:  # noqa: C419 - check each
                break
        store._shards = shards
        for number, (ids, offsets, lengths) in merged.items():
            for track_id, offset, length in zip(ids, offsets, lengths):
                if track_id not in store._where:
                    store._where[track_id] = (number, offset, length)
                    if track_id not in self._mine[number]:
                        self._theirs.add(track_id)

    def _index_path(self, number: int) -> Path:
        return self.store.root / f"shard-{number:05d}.idx.npz"

    def _index_signature(self, number: int) -> tuple[int, int, int] | None:
        """Identifies one version of a shard's index (an atomic replace makes a new file); None when absent."""
        try:
            stat = os.stat(self._index_path(number))
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _merge_index(self, number: int) -> tuple[list[str], list[int], list[int]]:
        """The shard's index on disk now, then this writer's tracks it lacks (in the order they were added),
        written back when it lacked any."""
        ids, offsets, lengths = (a.tolist() for a in self.store._read_index(f"shard-{number:05d}"))
        known = set(ids)
        missing = [(t, o, n) for t, (o, n) in self._mine[number].items() if t not in known]
        if missing:
            ids += [t for t, _, _ in missing]
            offsets += [o for _, o, _ in missing]
            lengths += [n for _, _, n in missing]
            atomic_savez(self._index_path(number), track_ids=np.array(ids, dtype=str),
                         offsets=np.array(offsets, dtype=np.int64), n_frames=np.array(lengths, dtype=np.int64))
        return ids, offsets, lengths

    def _index_holds_mine(self, number: int) -> bool:
        """Whether the shard's index on disk holds every track this writer committed to it (remembered by
        signature: the next commit only ``stat``s it)."""
        signature = self._index_signature(number)
        holds = set(self._mine[number]) <= set(self.store._read_index(f"shard-{number:05d}")[0].tolist())
        self._seen[number] = signature if holds else None
        return holds

    def _merged_shards(self, merged: dict[int, tuple[list[str], list[int], list[int]]]) -> list[dict]:
        """The manifest's shards on disk now, each shard in ``merged`` committing at least its index's tracks (the
        counts only grow: another writer may have committed more)."""
        shards = [dict(s) for s in json.loads((self.store.root / MANIFEST_NAME).read_text())["shards"]]
        for number, (ids, offsets, lengths) in sorted(merged.items()):
            while len(shards) <= number:
                shards.append({"name": f"shard-{len(shards):05d}", "n_frames": 0, "n_tracks": 0})
            shard = shards[number]
            shard["n_tracks"] = max(int(shard["n_tracks"]), len(ids))
            shard["n_frames"] = max(int(shard["n_frames"]), max((o + n for o, n in zip(offsets, lengths)), default=0))
        return shards

    def close(self) -> None:
        """Commit what was added and close the shard (closed even when the commit fails, e.g. on a full disk)."""
        if self._file is None:
            return
        try:
            self.commit()
        finally:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
