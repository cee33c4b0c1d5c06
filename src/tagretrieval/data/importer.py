"""The importer skeleton: what every dataset's import does around reading its own format.

An importer (one per ``conf/data`` file, one sub-package per dataset) subclasses :class:`Importer` and writes only
what its format needs:

- ``song_inputs()``: what the import will hold for the song branch (:mod:`tagretrieval.data.inputs`), known
  before importing;
- ``settings()``: the settings the prepared data depends on (besides the importer, its version and ``root``);
- ``read(report, frontend=..., progress=...)``: read the dataset into an :class:`Imported`, skipping into
  ``report`` what it cannot use (the helpers below do the common steps: mels, labels, untagged tracks).

The skeleton owns the rest, the same for every dataset: the ``data.root`` check, reuse of a current import
(:meth:`Importer.load_existing`), the report (:mod:`tagretrieval.data.report`), refusing an import that skipped
too much (:func:`~tagretrieval.data.prepared.accept_import`) and writing the prepared format last
(:func:`~tagretrieval.data.prepared.write_prepared`). The lock that lets one process at a time import a folder is
taken by the caller (the task layer), around ``prepare`` and the copy of its report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from tagretrieval.audio import MelFrontend, MelStore, cache_params, open_for_prepare, prepare_mels
from tagretrieval.data.prepared import MANIFEST, PreparedDataset, accept_import, load_if_current, write_prepared
from tagretrieval.data.report import PrepareReport
from tagretrieval.runtime.errors import DataError, MissingFileError


@dataclass
class Imported:
    """What an importer read, ready to be written as a prepared dataset.

    Attributes:
        tracks: one row per track, with the columns of :data:`~tagretrieval.data.prepared.TRACK_COLUMNS` (missing
            ones are written empty).
        tags: tag names ``[n_tags]``; ``categories[j]`` is the category of ``tags[j]``.
        labels: multi-hot ``[n_tracks, n_tags]``.
        cf: float32 ``[n_tracks, cf_dim]`` or None; features: float32 ``[n_tracks, n_features]`` or None.
        name: the prepared dataset's name (default: the importer's ``name``).
        extras: what else the importer writes into the prepared folder (:meth:`Importer.write_extras`).
    """

    tracks: pd.DataFrame
    tags: Sequence[str]
    categories: Sequence[str]
    labels: np.ndarray
    cf: np.ndarray | None = None
    features: np.ndarray | None = None
    name: str | None = None
    extras: dict = field(default_factory=dict)


class Importer:
    """Base of the importers: ``prepare`` = check root, reuse a current import, or ``read`` + accept + write.

    Args:
        root: the dataset's folder (must exist).
        prepared_dir: where the prepared dataset is written.
        name: the dataset's name (the prepared dataset's and the report's, unless the subclass says otherwise).
        max_skipped_fraction: fail (after writing the report) if more candidate tracks are skipped.
        num_workers: processes computing mels; 0 = in-process.
        cache_dtype: ``float32`` or ``float16`` mel cache.
        min_seconds: shorter audio is skipped.
    """

    IMPORT_VERSION: ClassVar[int | None] = None
    """Bump when the import logic changes: a prepared folder made by another version is imported again (None:
    the importer's source settings carry no version)."""

    def __init__(self, *, root: str | Path, prepared_dir: str | Path, name: str, max_skipped_fraction: float,
                 num_workers: int = 0, cache_dtype: str = "float32", min_seconds: float = 1.0) -> None:
        self.root = Path(root)
        self.prepared_dir = Path(prepared_dir)
        self.name = name
        self.max_skipped_fraction = max_skipped_fraction
        self.num_workers = num_workers
        self.cache_dtype = cache_dtype
        self.min_seconds = min_seconds

    # -- what a dataset says ------------------------------------------------------------------------------
    def song_inputs(self) -> frozenset[str]:
        """What the import will hold for the song branch (:mod:`tagretrieval.data.inputs`)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """The settings the prepared data depends on, besides the importer, its version and ``root``."""
        raise NotImplementedError

    def report_name(self) -> str:
        """The dataset name in ``prepare_report.json`` (and, by default, of the prepared dataset)."""
        return self.name

    def read(self, report: PrepareReport, *, frontend: MelFrontend | None, progress: bool) -> Imported:
        """Read the dataset's own format; skip into ``report`` (and set its ``n_candidates``) what is left out."""
        raise NotImplementedError

    def write_extras(self, imported: Imported) -> None:
        """Write files of the dataset's own beside the prepared format (e.g. MSD500's word vectors), once the
        import is accepted and its manifest removed, before the prepared files and the manifest are written."""

    # -- the skeleton -------------------------------------------------------------------------------------
    def source(self) -> dict:
        """What the prepared data depends on: a changed value triggers a new import (the mel cache is reused)."""
        version = {} if self.IMPORT_VERSION is None else {"version": self.IMPORT_VERSION}
        return {"importer": type(self).__name__, **version, "root": str(self.root.resolve()), **self.settings()}

    def load_existing(self) -> PreparedDataset | None:
        """The prepared dataset if it exists and was made from the same source settings, else None."""
        return load_if_current(self.prepared_dir, source=self.source(), max_skipped_fraction=self.max_skipped_fraction)

    def check_root(self) -> None:
        if not self.root.exists():
            raise MissingFileError(f"data.root does not exist: {self.root.resolve()}")

    def prepare(self, *, frontend: MelFrontend | None = None, progress: bool = True) -> PreparedDataset:
        """Import (or reuse) the prepared dataset; ``frontend`` computes the mels of an import with audio."""
        self.check_root()
        existing = self.load_existing()
        if existing is not None:
            return existing
        report = PrepareReport(dataset=self.report_name())
        imported = self.read(report, frontend=frontend, progress=progress)
        return self.accept(imported, report)

    def accept(self, imported: Imported, report: PrepareReport) -> PreparedDataset:
        """Refuse an empty import; write the report, refuse one that skipped too much, then write the dataset."""
        if len(imported.tracks) == 0 or len(imported.tags) == 0:
            raise DataError(f"{self.name}: no track left to import from {self.root}; {report.counts}")
        report.n_kept = len(imported.tracks)
        accept_import(report, self.prepared_dir, max_skipped_fraction=self.max_skipped_fraction)
        if imported.extras:
            (self.prepared_dir / MANIFEST).unlink(missing_ok=True)  # unfinished from here (write_prepared writes it)
            self.write_extras(imported)
        return write_prepared(
            self.prepared_dir, name=imported.name or self.report_name(), tracks=imported.tracks,
            tags=imported.tags, categories=imported.categories, labels=imported.labels, cf=imported.cf,
            features=imported.features, source=self.source(),
        )

    # -- shared steps -------------------------------------------------------------------------------------
    def mel_store(self, frontend: MelFrontend) -> MelStore:
        """The mel store of ``prepared_dir/mels``, opened for filling with ``frontend``'s settings."""
        return open_for_prepare(self.prepared_dir / "mels",
                                frontend_params=cache_params(frontend, dtype=self.cache_dtype))

    def fill_mels(self, store: MelStore, items: Sequence[tuple[str, Path]], frontend: MelFrontend,
                  report: PrepareReport, *, progress: bool, note: bool = False) -> set[str]:
        """Compute the mels of ``items`` (track id, audio path) into ``store`` (resumable); skip the tracks that
        fail into ``report``; return the ids now in the store. ``note``: say how many were computed."""
        outcome = prepare_mels(store, list(items), frontend, num_workers=self.num_workers,
                               min_seconds=self.min_seconds, progress=progress)
        skip_failed(outcome.skipped, report)
        if note:
            report.note(f"mels: {outcome.n_computed} computed, {len(outcome.done) - outcome.n_computed} already cached")
        return set(outcome.done)

    def attach_audio(self, table: pd.DataFrame, paths: Mapping[str, Path], report: PrepareReport, *,
                     frontend: MelFrontend, progress: bool, audio_dir: Path, not_found: str,
                     missing: str = "no {path}", note: bool = False) -> pd.DataFrame:
        """The rows of ``table`` (column ``track_id``) whose audio ``paths[track_id]`` exists and decodes, with
        their mels in the store and ``audio_path`` set; the rest is skipped into ``report``.

        Raises:
            MissingFileError: ``audio_dir`` is not a folder; the message is ``not_found`` (which says the setting
                and what the folder should hold).
        """
        if not audio_dir.is_dir():
            raise MissingFileError(not_found)
        present = np.array([paths[t].is_file() for t in table["track_id"]], dtype=bool)
        for track_id in table.loc[~present, "track_id"]:
            report.skip("missing audio", track_id, missing.format(path=paths[track_id]))
        table = table[present].reset_index(drop=True)
        done = self.fill_mels(self.mel_store(frontend), [(t, paths[t]) for t in table["track_id"]], frontend,
                              report, progress=progress, note=note)
        table = table[table["track_id"].isin(done).to_numpy()].reset_index(drop=True)
        table["audio_path"] = [str(paths[t].resolve()) for t in table["track_id"]]
        return table


def check_choice(key: str, value, allowed: Sequence) -> None:
    """Raise ValueError unless ``value`` of the setting ``data.<key>`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"data.{key}={value!r} is not one of {list(allowed)}")


def skip_failed(skipped: Mapping[str, str], report: PrepareReport) -> None:
    """Report the tracks whose mels could not be made (``{track id: "reason: detail"}``) under their reason."""
    for track_id, reason in skipped.items():
        report.skip(reason.split(":")[0], track_id, reason)


def multi_hot(tag_lists: Iterable[Iterable[str]], tags: Sequence[str]) -> np.ndarray:
    """uint8 ``[n_tracks, len(tags)]``: row i marks the tags of ``tag_lists[i]`` that are in ``tags``."""
    column = {t: j for j, t in enumerate(tags)}
    rows = [[column[t] for t in track_tags if t in column] for track_tags in tag_lists]
    labels = np.zeros((len(rows), len(tags)), dtype=np.uint8)
    for i, columns in enumerate(rows):
        labels[i, columns] = 1
    return labels


def train_counts(table: pd.DataFrame) -> Counter:
    """How many training tracks (``split == "train"``) carry each tag of the ``tags`` column (lists)."""
    train = (table["split"] == "train").to_numpy()
    return Counter(t for tags in table.loc[train, "tags"] for t in set(tags))


def drop_untagged(table: pd.DataFrame, labels: np.ndarray, report: PrepareReport, *, detail: str,
                  arrays: Sequence[np.ndarray | None] = ()) -> tuple[pd.DataFrame, np.ndarray, list]:
    """Skip (reason ``no tags``) the tracks whose row of ``labels`` is empty; the same rows of ``arrays`` go too."""
    tagged = labels.any(axis=1)
    for track_id in table.loc[~tagged, "track_id"]:
        report.skip("no tags", track_id, detail)
    return (table[tagged].reset_index(drop=True), labels[tagged],
            [None if a is None else a[tagged] for a in arrays])
