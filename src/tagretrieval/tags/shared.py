"""A run's tag matrix, computed by one process and read by the others (DDP ranks).

The tag branch needs one word vector per tag, ``[n_tags, dim]``: a few hundred kilobytes. Finding them can mean
reading a whole word-vector file (GoogleNews: 3.6 GB in memory), and under DDP every rank would read it. Instead,
the first process of a run folder computes the matrix under the folder's lock (:mod:`tagretrieval.runtime.lock`) and
writes ``<run_dir>/tag_vectors.npz``; the other ranks wait for the lock and load that file. It holds the key of the
settings it was computed from, so a run folder reused with other settings computes it again.

Where ranks do not share a run folder (one per node), each folder's first process computes it: once per node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tagretrieval.runtime.lock import exclusive, lock_path_for
from tagretrieval.runtime.files import atomic_savez

TAG_VECTORS_FILE = "tag_vectors.npz"

TagMatrix = tuple[list[str], np.ndarray, list[str]]
"""``(kept tags [n_kept], vectors float32 [n_kept, dim], dropped tags)``."""


def settings_key(settings: dict) -> str:
    """A stable key of JSON-able ``settings`` (sha256 of their sorted JSON)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def shared_tag_matrix(run_dir: str | Path, *, key: str, compute: Callable[[], TagMatrix]) -> TagMatrix:
    """``compute()`` once per run folder: the first caller computes and stores it, the others load it.

    Args:
        run_dir: the run folder (the same for every rank of a run).
        key: :func:`settings_key` of everything the matrix depends on (tag encoder settings, the dataset's tags).
        compute: returns the :data:`TagMatrix`; called at most once per run folder and key.
    """
    path = Path(run_dir) / TAG_VECTORS_FILE
    with exclusive(lock_path_for(path), purpose=f"tag vectors of {run_dir}"):
        stored = _read(path, key)
        if stored is not None:
            return stored
        kept, vectors, dropped = compute()
        vectors = np.asarray(vectors, dtype=np.float32)
        atomic_savez(path, key=np.asarray(key), tags=np.asarray(kept, dtype=str), vectors=vectors,
                     dropped=np.asarray(dropped, dtype=str))
        return list(kept), vectors, list(dropped)


def _read(path: Path, key: str) -> TagMatrix | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        if str(data["key"]) != key:
            return None
        return [str(t) for t in data["tags"]], np.asarray(data["vectors"]), [str(t) for t in data["dropped"]]
