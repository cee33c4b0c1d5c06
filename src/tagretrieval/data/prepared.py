"""The prepared-dataset format: the one on-disk layout every importer writes and the datamodule reads.

Layout of a prepared folder::

    manifest.json      {"format_version", "name", "n_tracks", "n_tags", "cf_dim", "n_features", "source"}
    tracks.csv         track_id, artist, split, audio_path     (row i = row i of labels / cf / features)
    tags.csv           tag, category                           (row j = column j of labels)
    labels.npy         uint8 [n_tracks, n_tags] multi-hot
    cf.npy             float32 [n_tracks, cf_dim]              (optional: listening data)
    features.npy       float32 [n_tracks, n_features]          (optional: precomputed song features)
    mels/              a MelStore: packed, time-major log-mels   (optional: audio)
    prepare_report.json  what the import skipped, and why

``manifest.json`` is written last: a folder without it is an unfinished (or refused) import and is never read.
Every file is written atomically (:mod:`tagretrieval.runtime.files`: a temp name unique per process, then a rename), and an
import that skipped more than its ``max_skipped_fraction`` never gets a manifest (:func:`accept_import`). Several
processes importing the same folder take turns through :mod:`tagretrieval.runtime.lock`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tagretrieval.data.report import REPORT_FILE, PrepareReport, TooManySkippedError
from tagretrieval.runtime.errors import DataError, UserError
from tagretrieval.runtime.files import atomic_save_npy, atomic_write_json, atomic_write_text

FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid",
    "test": "test", "testing": "test",
}
MANIFEST = "manifest.json"
TRACK_COLUMNS: tuple[str, ...] = ("track_id", "artist", "split", "audio_path")


class PreparedDataError(UserError):
    """A prepared folder is missing, unfinished or inconsistent."""


def normalise_split(value: str) -> str:
    """Map ``val``/``validation``/``training``... to one of :data:`SPLITS`; raise ValueError otherwise."""
    key = str(value).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {value!r}; expected one of {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[key]


def check_finite_rows(values: np.ndarray, track_ids: Sequence[str], *, what: str) -> None:
    """Raise ValueError naming the tracks whose row of ``values`` [n_tracks, dim] holds NaN or inf."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        names = [str(track_ids[i]) for i in np.flatnonzero(bad)]
        shown = ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else "")
        raise DataError(f"{what} contain NaN/inf for {len(names)} track(s): {shown}")


@dataclass
class PreparedDataset:
    """An imported dataset, in memory except for the mels (read lazily from the mel cache).

    Attributes:
        root: the prepared folder.
        tracks: DataFrame with columns :data:`TRACK_COLUMNS`, one row per track.
        tags: tag names ``[n_tags]``; ``categories[j]`` is the category of ``tags[j]``.
        labels: uint8 ``[n_tracks, n_tags]`` multi-hot.
        cf: float32 ``[n_tracks, cf_dim]`` or None.
        features: float32 ``[n_tracks, n_features]`` or None.
    """

    root: Path
    name: str
    tracks: pd.DataFrame
    tags: list[str]
    categories: list[str]
    labels: np.ndarray
    cf: np.ndarray | None = None
    features: np.ndarray | None = None
    source: dict = field(default_factory=dict)

    @property
    def track_ids(self) -> list[str]:
        return self.tracks["track_id"].tolist()

    @property
    def mel_dir(self) -> Path:
        return self.root / "mels"

    @property
    def has_mels(self) -> bool:
        return (self.mel_dir / "manifest.json").exists()

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices (int64, ascending) of the tracks in ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.tracks["split"].to_numpy() == split).astype(np.int64)

    def tag_lists(self, split: str) -> list[list[str]]:
        """The tags of each track of ``split``, as lists of tag names (used to train co-occurrence vectors)."""
        tags = np.asarray(self.tags)
        return [tags[row.astype(bool)].tolist() for row in self.labels[self.split_indices(split)]]

    def select_tags(self, tags: Sequence[str]) -> "PreparedDataset":
        """The same dataset restricted (in memory) to ``tags``, in that order; unknown tags raise KeyError."""
        column = {t: j for j, t in enumerate(self.tags)}
        missing = [t for t in tags if t not in column]
        if missing:
            raise KeyError(f"tags not in dataset '{self.name}': {missing}")
        columns = [column[t] for t in tags]
        return PreparedDataset(
            root=self.root, name=self.name, tracks=self.tracks, tags=list(tags),
            categories=[self.categories[j] for j in columns], labels=self.labels[:, columns],
            cf=self.cf, features=self.features, source=self.source,
        )

    @classmethod
    def load(cls, root: str | Path) -> "PreparedDataset":
        root = Path(root)
        manifest_path = root / MANIFEST
        if not manifest_path.exists():
            raise PreparedDataError(
                f"no prepared dataset at {root} ({MANIFEST} missing: never imported, or the import was interrupted)"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise PreparedDataError(
                f"{root} was prepared with format version {manifest.get('format_version')}, "
                f"this code reads version {FORMAT_VERSION}: prepare it again (mode=prepare)"
            )
        tracks = pd.read_csv(root / "tracks.csv", dtype=str, keep_default_na=False)
        tag_table = pd.read_csv(root / "tags.csv", dtype=str, keep_default_na=False)
        labels = np.load(root / "labels.npy")
        cf = np.load(root / "cf.npy") if (root / "cf.npy").exists() else None
        features = np.load(root / "features.npy") if (root / "features.npy").exists() else None
        dataset = cls(
            root=root, name=manifest["name"], tracks=tracks, tags=tag_table["tag"].tolist(),
            categories=tag_table["category"].tolist(), labels=labels, cf=cf, features=features,
            source=manifest.get("source", {}),
        )
        dataset.validate()
        return dataset

    def validate(self) -> None:
        """Raise PreparedDataError/ValueError on any inconsistency (shapes, splits, duplicates, NaN)."""
        n_tracks, n_tags = len(self.tracks), len(self.tags)
        if list(self.tracks.columns[: len(TRACK_COLUMNS)]) != list(TRACK_COLUMNS):
            raise PreparedDataError(f"tracks.csv columns {list(self.tracks.columns)}, expected {list(TRACK_COLUMNS)}")
        if self.labels.shape != (n_tracks, n_tags):
            raise PreparedDataError(f"labels {self.labels.shape} != (n_tracks={n_tracks}, n_tags={n_tags})")
        duplicated = self.tracks["track_id"][self.tracks["track_id"].duplicated()].tolist()
        if duplicated:
            raise PreparedDataError(f"duplicate track ids: {duplicated[:20]}")
        if len(set(self.tags)) != n_tags:
            raise PreparedDataError("duplicate tag names in tags.csv")
        unknown = sorted(set(self.tracks["split"]) - set(SPLITS))
        if unknown:
            raise PreparedDataError(f"unknown split values {unknown}; expected {SPLITS}")
        for name, values in (("CF vectors", self.cf), ("features", self.features)):
            if values is None:
                continue
            if values.ndim != 2 or values.shape[0] != n_tracks:
                raise PreparedDataError(f"{name} shape {values.shape}, expected [{n_tracks}, dim]")
            check_finite_rows(values, self.track_ids, what=name)


def load_if_current(prepared_dir: str | Path, *, source: dict,
                    max_skipped_fraction: float) -> PreparedDataset | None:
    """The prepared dataset at ``prepared_dir`` if it exists, was made from ``source`` settings and skipped no more
    than ``max_skipped_fraction`` of its tracks (by its ``prepare_report.json``), else None (import it again)."""
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / MANIFEST).exists():
        return None
    dataset = PreparedDataset.load(prepared_dir)
    if dataset.source != source:
        return None
    report_path = prepared_dir / REPORT_FILE
    if report_path.exists():
        report = json.loads(report_path.read_text())
        n_candidates, n_skipped = report["n_candidates"], report["n_skipped_tracks"]
        if n_candidates and n_skipped / n_candidates > max_skipped_fraction:
            return None  # accepted under a looser threshold: the import runs again and refuses it
    return dataset


def accept_import(report: PrepareReport, prepared_dir: str | Path, *, max_skipped_fraction: float) -> None:
    """Write ``report`` into ``prepared_dir``; if it skipped more than ``max_skipped_fraction`` of its tracks, remove
    the folder's manifest (a refused import is never loadable, nor is the one it was replacing) and raise
    :class:`~tagretrieval.data.report.TooManySkippedError`. Importers call it before :func:`write_prepared`."""
    prepared_dir = Path(prepared_dir)
    report.write(prepared_dir)
    try:
        report.check(max_skipped_fraction=max_skipped_fraction)
    except TooManySkippedError:
        (prepared_dir / MANIFEST).unlink(missing_ok=True)
        raise


def write_prepared(
    root: str | Path,
    *,
    name: str,
    tracks: pd.DataFrame,
    tags: Sequence[str],
    categories: Sequence[str],
    labels: np.ndarray,
    cf: np.ndarray | None = None,
    features: np.ndarray | None = None,
    source: dict | None = None,
) -> PreparedDataset:
    """Validate and write a prepared dataset; ``manifest.json`` is written last, atomically.

    The mel cache (``root/mels``) is written separately, before this call, by the importer.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tracks = tracks.reset_index(drop=True).copy()
    for column in TRACK_COLUMNS:
        if column not in tracks:
            tracks[column] = ""
    tracks = tracks[list(TRACK_COLUMNS)].astype(str)
    dataset = PreparedDataset(
        root=root, name=name, tracks=tracks, tags=list(tags), categories=list(categories),
        labels=np.asarray(labels, dtype=np.uint8),
        cf=None if cf is None else np.asarray(cf, dtype=np.float32),
        features=None if features is None else np.asarray(features, dtype=np.float32),
        source=dict(source or {}),
    )
    dataset.validate()
    (root / MANIFEST).unlink(missing_ok=True)
    atomic_write_text(root / "tracks.csv", _csv(tracks))
    atomic_write_text(root / "tags.csv", _csv(pd.DataFrame({"tag": dataset.tags, "category": dataset.categories})))
    atomic_save_npy(root / "labels.npy", dataset.labels)
    for file_name, values in (("cf.npy", dataset.cf), ("features.npy", dataset.features)):
        if values is None:
            (root / file_name).unlink(missing_ok=True)
        else:
            atomic_save_npy(root / file_name, values)
    manifest = {
        "format_version": FORMAT_VERSION, "name": name, "n_tracks": len(tracks), "n_tags": len(dataset.tags),
        "cf_dim": None if dataset.cf is None else int(dataset.cf.shape[1]),
        "n_features": None if dataset.features is None else int(dataset.features.shape[1]),
        "source": dataset.source,
    }
    atomic_write_json(root / MANIFEST, manifest)
    return dataset


def _csv(table: pd.DataFrame) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue()
