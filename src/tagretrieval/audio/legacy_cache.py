"""The per-file mel cache of layout version 1 (one ``.npy`` ``[n_mels, n_frames]`` per track), kept to read old caches.

It is what :mod:`tagretrieval.audio.store` replaced: preparing data whose ``mels/`` folder still holds this layout
converts it into the packed store without recomputing a mel (:func:`tagretrieval.audio.cache.open_for_prepare`), and
``scripts/benchmark.py`` (section ``loader``) measures the two side by side. Layout::

    root/manifest.json          {"layout_version": 1, "frontend_params": {...front-end params + "dtype"}}
    root/<ab>/<name>.npy        one float32/float16 array [n_mels, n_frames] per track

``<ab>`` is the first two hex digits of ``sha1(track_id)``; ``<name>`` is the track id itself when it is made only
of ``[A-Za-z0-9._-]``, does not start with ``.`` and is at most 200 characters, else ``sha1=<40 hex digits>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from tagretrieval.audio.store import CACHE_DTYPES, MANIFEST_NAME, CacheMismatchError, check_mel, differences
from tagretrieval.runtime.files import atomic_write, atomic_write_json

LEGACY_LAYOUT_VERSION = 1
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


class LegacyMelCache:
    """One ``.npy`` log-mel ``[n_mels, n_frames]`` per track under ``root`` (layout version 1).

    Args:
        root: cache folder; created with its manifest if absent.
        frontend_params: the full parameters (``cache_params(frontend, dtype=...)``); a cache whose manifest differs
            raises :class:`CacheMismatchError`.
    """

    def __init__(self, root: str | Path, *, frontend_params: dict) -> None:
        if frontend_params.get("dtype") not in CACHE_DTYPES or "n_mels" not in frontend_params:
            raise ValueError("frontend_params must hold 'n_mels' and a 'dtype' of " + str(CACHE_DTYPES))
        self.root = Path(root)
        self.frontend_params = json.loads(json.dumps(frontend_params))
        self.dtype = np.dtype(self.frontend_params["dtype"])
        self.n_mels = int(self.frontend_params["n_mels"])
        manifest = {"layout_version": LEGACY_LAYOUT_VERSION, "frontend_params": self.frontend_params}
        path = self.root / MANIFEST_NAME
        if path.exists():
            found = json.loads(path.read_text())
            diffs = differences(manifest, {k: found.get(k) for k in manifest})
            if diffs:
                raise CacheMismatchError(f"mel cache {self.root} was made with other parameters:\n  " +
                                         "\n  ".join(diffs))
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, manifest, sort_keys=True)

    @classmethod
    def open(cls, root: str | Path) -> "LegacyMelCache":
        """An existing cache with the parameters its manifest records."""
        found = json.loads((Path(root) / MANIFEST_NAME).read_text())
        return cls(root, frontend_params=found["frontend_params"])

    def path_for(self, track_id: str) -> Path:
        if not isinstance(track_id, str) or not track_id:
            raise ValueError(f"track ids must be non-empty strings, got {track_id!r}")
        digest = hashlib.sha1(track_id.encode("utf-8", errors="surrogatepass")).hexdigest()
        name = track_id if _PLAIN_ID.fullmatch(track_id) else f"sha1={digest}"
        return self.root / digest[:2] / f"{name}.npy"

    def has(self, track_id: str) -> bool:
        return self.path_for(track_id).is_file()

    def write(self, track_id: str, mel: np.ndarray) -> None:
        """Store ``mel [n_mels, n_frames]`` atomically (as the old cache did)."""
        stored = np.ascontiguousarray(check_mel(track_id, mel, n_mels=self.n_mels, dtype=self.dtype).T)
        path = self.path_for(track_id)
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda f: np.save(f, stored, allow_pickle=False))

    def read(self, track_id: str, *, mmap: bool = True) -> np.ndarray:
        """The cached mel ``[n_mels, n_frames]``, memory-mapped read-only when ``mmap``."""
        path = self.path_for(track_id)
        if not path.is_file():
            raise FileNotFoundError(f"track {track_id!r} is not in the mel cache {self.root} (no {path})")
        mel = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if mel.ndim != 2 or mel.shape[0] != self.n_mels or mel.dtype != self.dtype:
            raise ValueError(f"track {track_id!r}: cache entry {path} has shape {mel.shape} and dtype {mel.dtype}, "
                             f"expected [{self.n_mels}, n_frames] {self.dtype}")
        return mel
