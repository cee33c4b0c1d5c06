"""Writing files so that a reader never sees half of one: the one atomic-write helper of the package.

Every write goes to a hidden temp file in the target's folder whose name is unique per process and call
(``.<name>.<pid>.<random>.tmp``), then ``os.replace`` puts it in place. A crash, a full disk or a permission error
leaves either the old file or the new one, never a partial file; the temp file is removed when writing fails,
and the error names the path that could not be written.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["FileWriteError", "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save_npy",
           "atomic_savez"]


def _create_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_CREATE_MODE = _create_mode()
"""What ``open(path, "w")`` would create under the process's umask (0644 with the usual 022): files in a prepared
folder on shared storage stay readable by the group's other users, as with any other writer."""


class FileWriteError(OSError):
    """Writing ``path`` failed (disk full, permission denied, ...); nothing partial was left at ``path``."""

    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(getattr(error, "errno", None), f"could not write {path}: {error}")
        self.path = path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *, fsync: bool = False) -> Path:
    """Run ``write(f)`` on a temp file next to ``path``, then replace ``path`` with it.

    Args:
        path: the target file; its folder must exist.
        write: writes the whole content into the binary file object it is given.
        fsync: flush the data to disk before the rename (survives a power cut, not only a crash).
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    Raises:
        FileWriteError: an ``OSError`` while writing or renaming (the temp file is removed).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise FileWriteError(path, error) from error
    try:
        os.fchmod(fd, _CREATE_MODE)  # mkstemp makes 0600; a replaced file gets the mode open() would give it
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, FileWriteError):
            raise FileWriteError(path, error) from error
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (no NaN allowed) to ``path`` atomically, with a trailing newline."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` (no pickles) to ``path`` atomically."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def atomic_savez(path: str | Path, *, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """``np.savez`` / ``np.savez_compressed`` of ``arrays`` to ``path`` atomically (``path`` keeps its name)."""
    def write(f: BinaryIO) -> None:
        buffer = io.BytesIO()  # np.savez needs a seekable file; the temp file is, but this keeps one code path
        (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
        f.write(buffer.getbuffer())

    return atomic_write(path, write)
