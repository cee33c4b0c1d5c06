"""One process at a time: an inter-process file lock around work that must happen once (a dataset import).

Under DDP every rank, and in a parallel sweep every job, asks for the same prepared folder at the same time. The
import runs under :func:`exclusive`: the first process to take the lock imports, the others wait for it, then take
the lock in turn, find the finished import and load it. The lock is ``fcntl.flock`` on a small file next to the
folder: the kernel (or the NFS server) releases it when its holder exits, crashes or is killed, so a lock is never
left stale. While it waits, a process logs who holds the lock (pid, host, since when, for what), which the holder
writes into the lock file.

File systems without ``flock`` (Lustre mounted without ``-o flock``), and folders this process may not write (a
read-only copy of a prepared dataset), cannot be locked: the block then runs unlocked, with a warning. This module
is the one place that decides what an unlockable file means: every lock of the project (the import's, the mel
store's writer, the tag vectors') is taken through :func:`exclusive`, and a lock that fails inside a block already
running unlocked (the mel store's, inside its import) logs no second warning. Reading a finished import needs no
lock; only importing the same folder from two processes at once does.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
"""How often a waiting process tries the lock again."""
REPORT_SECONDS = 60.0
"""How often a waiting process says that it is still waiting."""

_UNLOCKABLE = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EROFS, errno.EACCES, errno.EPERM}
_RUNNING_UNLOCKED: contextvars.ContextVar[bool] = contextvars.ContextVar("running_unlocked", default=False)
"""True inside an :func:`exclusive` block that could not be locked (and warned): nested locks that fail say so at
debug level, so that one import on a file system without ``flock`` warns once."""


def lock_path_for(folder: str | Path) -> Path:
    """``<parent>/.<name>.lock``: the lock file of ``folder``, beside it (deleting the folder keeps the lock valid)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the lock file ('another process' if unreadable)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']} (since {info['since']}: {info['purpose']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def exclusive(path: str | Path, *, purpose: str) -> Iterator[bool]:
    """Hold an exclusive inter-process lock on ``path`` (created if absent) for the ``with`` block.

    Args:
        path: the lock file, e.g. :func:`lock_path_for` of the folder the block writes; its folder is created.
        purpose: what the block does, shown to processes that wait (``"import of data/synthetic/prepared"``).

    Yields:
        True when the lock is held; False when ``path`` cannot be locked (read-only folder, file system without
        ``flock``): the block then runs unlocked, after a warning.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        if error.errno not in _UNLOCKABLE:
            raise
        _say_unlocked("cannot create the lock file %s (%s): %s runs without a lock; run it once in one process "
                      "before starting several", path, error.strerror, purpose)
        with _unlocked():
            yield False
        return
    try:
        locked = _acquire(fd, path, purpose)
        if locked:
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": datetime.now().isoformat(timespec="seconds"), "purpose": purpose}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
            yield True
        else:
            with _unlocked():
                yield False
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _say_unlocked(message: str, *args) -> None:
    """The warning that a block runs unlocked; at debug level inside a block that already warned."""
    log.log(logging.DEBUG if _RUNNING_UNLOCKED.get() else logging.WARNING, message, *args)


@contextlib.contextmanager
def _unlocked() -> Iterator[None]:
    token = _RUNNING_UNLOCKED.set(True)
    try:
        yield
    finally:
        _RUNNING_UNLOCKED.reset(token)


def _acquire(fd: int, path: Path, purpose: str) -> bool:
    """Take the lock on ``fd``, waiting as long as another process holds it; False if it cannot be locked."""
    waited_since = reported_at = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            now = time.monotonic()
            if waited_since is None:
                waited_since = reported_at = now
                log.info("waiting for %s: the lock %s is held by %s", purpose, path, _holder(fd))
            elif now - reported_at >= REPORT_SECONDS:
                reported_at = now
                log.info("still waiting for %s (%.0f s): the lock %s is held by %s", purpose, now - waited_since,
                         path, _holder(fd))
            time.sleep(POLL_SECONDS)
            continue
        except OSError as error:
            if error.errno not in _UNLOCKABLE:
                raise
            _say_unlocked("cannot lock %s (%s: the file system may not support flock): %s runs without a lock; run "
                          "it once in one process before starting several", path, error.strerror, purpose)
            return False
        if waited_since is not None:
            log.info("took the lock %s after %.1f s", path, time.monotonic() - waited_since)
        return True
