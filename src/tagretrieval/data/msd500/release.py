"""The MSD500 release's reproducible-split folder (``reproducible_splits.tar.gz``), read without trusting pickles.

Files read (``{p}`` is ``""`` for MSD100 and ``"sub_"`` for MSD50)::

    {p}tags.npy                          str [n_tags], lowercase (sorted in the release; the order is kept)
    {p}binaries.npy                      0/1 [n_rows, n_tags] (float in the release; any numeric dtype accepted)
    {p}train_ids.npy, valid, test        str [n] of "<row>//<ID>": <row> indexes binaries and ix_to_cf
    {p}ix_to_cf.npy                      [n_rows, cf_dim] CF item factors (optional)
    {p}google_emb.pkl, {p}music_emb.pkl  dict tag -> [300] vector; without the prefix when no prefixed copy

``{p}train_tag_to_ix.pkl`` is not read: it is a function of ``binaries.npy`` and ``train_ids.npy``.
The word-vector pickles are read with :class:`RestrictedUnpickler`, which builds only builtin containers,
strings, numbers and numpy arrays, so a tampered pickle cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagretrieval.data.prepared import SPLITS
from tagretrieval.data.report import PrepareReport
from tagretrieval.runtime.errors import UserError

SPLIT_PREFIX: dict[str, str] = {"msd100": "", "msd50": "sub_"}

_SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                                     "int", "float", "complex", "bool")]
    + [(module, "_reconstruct") for module in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)
"""What a word-vector pickle may reference: numpy's array reconstruction (``_reconstruct``, protocols <= 4;
``_frombuffer``, protocol 5), ``ndarray``/``dtype``, builtin containers and scalars, and ``_codecs.encode``
(how protocol 2 stores bytes). Anything else (``os.system``, ``builtins.eval``...) is refused."""


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`_SAFE_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose ``find_class`` admits only :data:`_SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise UnsafePickleError(f"refusing to load global {module}.{name} from a pickle (not a plain "
                                    "container, number, string or numpy array)")
        return super().find_class(module, name)


def load_word_vector_pickle(path: Path, *, dim: int) -> dict[str, np.ndarray]:
    """A release word-vector pickle: dict tag -> float32 ``[dim]``, read with :class:`RestrictedUnpickler`.

    Raises UnsafePickleError for a pickle that references anything else, ValueError for a value that is not a
    finite ``[dim]`` vector (naming the tag).
    """
    with open(path, "rb") as f:
        table = RestrictedUnpickler(f).load()
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a dict tag -> vector, found {type(table).__name__}")
    out = {}
    for tag, vector in table.items():
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape != (dim,) or not np.isfinite(vector).all():
            raise ValueError(f"{path}: the vector of tag {tag!r} is not a finite [{dim}] vector (shape {vector.shape})")
        out[str(tag).strip().lower()] = vector
    return out


def word_vector_pickle(splits_dir: Path, name: str, *, prefix: str) -> Path | None:
    """``{prefix}{name}_emb.pkl`` if present, else ``{name}_emb.pkl`` (what the reference loader reads), else None."""
    for file_name in (f"{prefix}{name}_emb.pkl", f"{name}_emb.pkl"):
        if (splits_dir / file_name).exists():
            return splits_dir / file_name
    return None


@dataclass
class ReleaseSplit:
    """One split of the release: ``track_ids[i]`` is in split ``splits[i]`` with ``labels[i]`` and row ``rows[i]``."""

    track_ids: list[str]
    rows: np.ndarray  # int64 [n_tracks]: row of binaries.npy / ix_to_cf.npy
    splits: list[str]
    tags: list[str]
    labels: np.ndarray  # uint8 [n_tracks, n_tags]
    cf: np.ndarray | None  # float32 [n_tracks, cf_dim]


def _load_npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"MSD500 release file not found: {path} (set data.splits_dir to the folder "
                                "extracted from reproducible_splits.tar.gz)")
    return np.load(path, allow_pickle=False)


def read_release_split(splits_dir: Path, *, split: str, read_cf: bool, report: PrepareReport) -> ReleaseSplit:
    """Read the ``split`` (``msd100`` or ``msd50``) files of the release folder ``splits_dir``.

    Ids listed twice (in one list or in two) keep their first occurrence in train, valid, test order; a
    ``row//ID`` string that does not parse or whose row is out of range is skipped; both are reported.
    """
    prefix = SPLIT_PREFIX[split]
    tags = [str(t).strip().lower() for t in _load_npy(splits_dir / f"{prefix}tags.npy").reshape(-1)]
    binaries = _load_npy(splits_dir / f"{prefix}binaries.npy")
    if binaries.ndim != 2 or binaries.shape[1] != len(tags):
        raise ValueError(f"{splits_dir / f'{prefix}binaries.npy'}: shape {binaries.shape}, expected "
                         f"[n_tracks, {len(tags)}] (one column per tag of {prefix}tags.npy)")
    if not np.isin(binaries, (0, 1)).all():
        raise ValueError(f"{splits_dir / f'{prefix}binaries.npy'}: values other than 0 and 1")
    cf = None
    if read_cf:
        cf_path = splits_dir / f"{prefix}ix_to_cf.npy"
        if not cf_path.exists():
            raise FileNotFoundError(f"{cf_path} not found: without the release's CF vectors use data.cf=none "
                                    "(audio models) or data.cf=als (from the Taste Profile)")
        cf = np.asarray(_load_npy(cf_path), dtype=np.float32)
        if cf.ndim != 2 or cf.shape[0] != binaries.shape[0]:
            raise ValueError(f"{cf_path}: shape {cf.shape}, expected [{binaries.shape[0]}, cf_dim] (rows as binaries)")
    track_ids: list[str] = []
    rows: list[int] = []
    splits: list[str] = []
    seen: dict[str, str] = {}
    for name in SPLITS:
        entries = _load_npy(splits_dir / f"{prefix}{name}_ids.npy").reshape(-1)
        report.n_candidates += len(entries)
        for entry in map(str, entries):
            row_text, sep, track_id = entry.partition("//")
            track_id = track_id.strip()
            if not sep or not row_text.strip().isdigit() or not track_id:
                report.skip("malformed id entry", entry, f"{prefix}{name}_ids.npy: expected '<row>//<ID>'")
                continue
            row = int(row_text)
            if row >= binaries.shape[0]:
                report.skip("malformed id entry", entry, f"row {row} >= {binaries.shape[0]} rows of binaries")
                continue
            if track_id in seen:
                report.skip("duplicate track id", track_id, f"in {name} and in {seen[track_id]}: kept the first")
                continue
            seen[track_id] = name
            track_ids.append(track_id)
            rows.append(row)
            splits.append(name)
    rows_array = np.asarray(rows, dtype=np.int64)
    return ReleaseSplit(
        track_ids=track_ids, rows=rows_array, splits=splits, tags=tags,
        labels=binaries[rows_array].astype(np.uint8), cf=None if cf is None else cf[rows_array],
    )
