"""Import your own data: an audio folder plus a tags table (``data=folder``).

Expected layout of ``root``::

    audio/**/<track_id>.{wav,flac,mp3,ogg}   any sample rate, mono or stereo; a file's stem is its track id
    tags.csv                                 track_id, tags ('a;b;c')   [, artist] [, split]
                                             or one row per (track_id, tag) pair: track_id, tag [, artist] [, split]
    tag_categories.csv                       optional: tag, category
    cf_vectors.npz                           optional: track_ids [n], vectors [n, cf_dim] (listening data)

``split`` accepts train / valid (also val, validation) / test. Without it an artist-disjoint split is drawn
(seeded) that keeps every tag in every split where possible; without ``artist`` every track is its own artist.

A row whose tags are empty (or keep no tag after ``tag_categories.csv`` and ``min_tag_count``) is skipped as
``no tags``, unless ``keep_untagged``: then the track is imported as a negative of every tag (the training batches
append such songs as negatives, the evaluation counts them as negatives, as MTAT's protocol does with its untagged
clips). An audio file without a row is never imported: no row says nothing about its tags.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tagretrieval.audio import AUDIO_EXTENSIONS, MelFrontend
from tagretrieval.data.importer import Imported, Importer, drop_untagged, multi_hot
from tagretrieval.data.inputs import AUDIO, CF
from tagretrieval.data.prepared import check_finite_rows, normalise_split
from tagretrieval.data.report import PrepareReport
from tagretrieval.data.splits import artist_disjoint_split
from tagretrieval.runtime.errors import DataError, MissingFileError

UNCATEGORISED = "all"


def read_tag_table(path: Path, *, lowercase: bool) -> pd.DataFrame:
    """Read ``tags.csv`` in either layout into one row per track: track_id, artist, split, tags (list)."""
    if not path.exists():
        raise MissingFileError(f"tags table not found: {path} (expected columns track_id, tags)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header (track_id,tags) and one row per track") from None
    table.columns = [c.strip().lower() for c in table.columns]
    if "track_id" not in table:
        raise DataError(f"{path}: no 'track_id' column (columns: {list(table.columns)})")
    if "tags" not in table and "tag" not in table:
        raise DataError(f"{path}: needs a 'tags' column (';'-separated) or a 'tag' column (one pair per row)")
    if table.empty:
        raise DataError(f"{path} has a header but no rows: nothing to import")

    def clean(tag: str) -> str:
        tag = " ".join(tag.split())
        return tag.lower() if lowercase else tag

    table["track_id"] = table["track_id"].str.strip()
    if "tags" in table:
        table["tags"] = [[clean(t) for t in cell.split(";") if t.strip()] for cell in table["tags"]]
    else:
        table["tag"] = [clean(t) for t in table["tag"]]
        extra = [c for c in ("artist", "split") if c in table]
        table = (table.groupby("track_id", sort=False)
                 .agg({"tag": lambda s: [t for t in s if t], **{c: "first" for c in extra}})
                 .rename(columns={"tag": "tags"}).reset_index())
    for column in ("artist", "split"):
        if column not in table:
            table[column] = ""
        table[column] = table[column].str.strip()
    return table[["track_id", "artist", "split", "tags"]]


def find_audio(audio_dir: Path, report: PrepareReport) -> dict[str, Path]:
    """Map track id (file stem) -> path for every audio file under ``audio_dir``; duplicate stems are reported."""
    if not audio_dir.is_dir():
        raise MissingFileError(f"audio folder not found: {audio_dir}")
    found: dict[str, Path] = {}
    for path in sorted(audio_dir.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            report.skip("unsupported file type", str(path.relative_to(audio_dir)), path.suffix)
            continue
        if path.stem in found:
            report.skip("duplicate audio file", str(path.relative_to(audio_dir)), f"also {found[path.stem]}")
            continue
        found[path.stem] = path
    return found


def read_cf_vectors(path: Path) -> dict[str, np.ndarray]:
    """Read ``cf_vectors.npz`` into track id -> float32 vector; NaN/inf rows raise, naming the tracks."""
    with np.load(path, allow_pickle=False) as data:
        if "track_ids" not in data or "vectors" not in data:
            raise DataError(f"{path}: expected arrays 'track_ids' and 'vectors', found {list(data.keys())}")
        ids = [str(t) for t in data["track_ids"]]
        vectors = np.asarray(data["vectors"], dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise DataError(f"{path}: vectors {vectors.shape} do not match {len(ids)} track ids")
    check_finite_rows(vectors, ids, what=f"CF vectors in {path}")
    return dict(zip(ids, vectors))


class FolderImporter(Importer):
    """Imports ``root`` (layout in the module docstring) into the prepared format at ``prepared_dir``.

    Args:
        lowercase_tags: tags are lower-cased (and their whitespace collapsed) before counting.
        min_tag_count: tags on fewer tracks are dropped (reported).
        split_fractions, split_seed, min_positives_per_split, max_split_draws: the artist-disjoint split drawn
            when ``tags.csv`` has no split column (:func:`~tagretrieval.data.splits.artist_disjoint_split`).
        min_seconds, max_skipped_fraction, num_workers, cache_dtype: as in :class:`~tagretrieval.data.importer.Importer`.
    """

    def __init__(
        self,
        *,
        root: str,
        prepared_dir: str,
        name: str = "folder",
        lowercase_tags: bool = True,
        min_tag_count: int = 1,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        min_positives_per_split: int = 1,
        max_split_draws: int = 200,
        min_seconds: float = 0.5,
        max_skipped_fraction: float = 0.1,
        num_workers: int = 0,
        cache_dtype: str = "float32",
        keep_untagged: bool = False,
    ) -> None:
        super().__init__(root=root, prepared_dir=prepared_dir, name=name, max_skipped_fraction=max_skipped_fraction,
                         num_workers=num_workers, cache_dtype=cache_dtype, min_seconds=min_seconds)
        self.lowercase_tags = lowercase_tags
        self.min_tag_count = min_tag_count
        self.split_fractions = tuple(split_fractions)
        self.split_seed = split_seed
        self.min_positives_per_split = min_positives_per_split
        self.max_split_draws = max_split_draws
        self.keep_untagged = bool(keep_untagged)

    def song_inputs(self) -> frozenset[str]:
        """Audio, and CF vectors when ``root/cf_vectors.npz`` exists."""
        return frozenset({AUDIO, CF} if (self.root / "cf_vectors.npz").is_file() else {AUDIO})

    def settings(self) -> dict:
        return {
            "lowercase_tags": self.lowercase_tags, "min_tag_count": self.min_tag_count,
            "split_fractions": list(self.split_fractions), "split_seed": self.split_seed,
            "min_positives_per_split": self.min_positives_per_split, "min_seconds": self.min_seconds,
            # only when set, so that the folders prepared before the option existed stay current
            **({"keep_untagged": True} if self.keep_untagged else {}),
        }

    def read(self, report: PrepareReport, *, frontend: MelFrontend, progress: bool) -> Imported:
        table = read_tag_table(self.root / "tags.csv", lowercase=self.lowercase_tags)
        report.n_candidates = len(table)
        duplicated = table["track_id"].duplicated()
        for track_id in table.loc[duplicated, "track_id"]:
            report.skip("duplicate track id", track_id, "kept the first row")
        table = table[~duplicated].reset_index(drop=True)

        categories = self._read_categories(report)
        if categories is not None:
            given = sorted({t for tags in table["tags"] for t in tags})
            table["tags"] = [[t for t in tags if t in categories] for tags in table["tags"]]
            if not any(len(tags) for tags in table["tags"]):  # before any audio is decoded
                raise DataError(f"no tag of {self.root / 'tags.csv'} is listed in tag_categories.csv (tags.csv has "
                                f"{given[:10]}, tag_categories.csv {sorted(categories)[:10]}): fix either file")
        audio = find_audio(self.root / "audio", report)
        keep = np.ones(len(table), dtype=bool)
        for i, track_id in enumerate(table["track_id"]):
            if track_id not in audio:
                report.skip("missing audio", track_id, "listed in tags.csv, no file under audio/")
                keep[i] = False
        for track_id in sorted(set(audio) - set(table["track_id"])):
            report.skip("audio without tags", track_id, f"{audio[track_id]} has no row in tags.csv (a row with empty "
                        "tags and data.keep_untagged=true imports it as a negative)")
        table = table[keep].reset_index(drop=True)

        cf = self._read_cf(table, report)
        if cf is not None:
            table, cf = table[cf[0]].reset_index(drop=True), cf[1]
        done = self.fill_mels(self.mel_store(frontend), [(t, audio[t]) for t in table["track_id"]], frontend,
                              report, progress=progress)
        ok = table["track_id"].isin(done).to_numpy()
        table = table[ok].reset_index(drop=True)
        cf = None if cf is None else cf[ok]
        table["audio_path"] = [str(audio[t].resolve()) for t in table["track_id"]]
        return self._labels(table, cf, categories, report)

    def _read_categories(self, report: PrepareReport) -> dict[str, str] | None:
        path = self.root / "tag_categories.csv"
        if not path.exists():
            report.note(f"no tag_categories.csv: every tag is in category '{UNCATEGORISED}'")
            return None
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table.columns = [c.strip().lower() for c in table.columns]
        if not {"tag", "category"} <= set(table.columns):
            raise DataError(f"{path}: needs columns tag, category (found {list(table.columns)})")
        tags = [" ".join(t.split()) for t in table["tag"]]
        tags = [t.lower() for t in tags] if self.lowercase_tags else tags
        return dict(zip(tags, table["category"].str.strip()))

    def _read_cf(self, table: pd.DataFrame, report: PrepareReport) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.root / "cf_vectors.npz"
        if not path.exists():
            return None
        vectors = read_cf_vectors(path)
        has = np.array([t in vectors for t in table["track_id"]])
        for track_id in table.loc[~has, "track_id"]:
            report.skip("missing CF vector", track_id, f"not in {path.name}")
        return has, np.stack([vectors[t] for t in table.loc[has, "track_id"]])

    def _labels(self, table: pd.DataFrame, cf: np.ndarray | None, categories: dict[str, str] | None,
                report: PrepareReport) -> Imported:
        counts = Counter(t for tags in table["tags"] for t in set(tags))
        for tag, count in sorted(counts.items()):
            if count < self.min_tag_count:
                report.skip("tag: too rare", tag, f"{count} tracks < data.min_tag_count={self.min_tag_count}")
        if categories is not None:
            for tag in sorted({t for t in categories if t not in counts}):
                report.note(f"tag '{tag}' of tag_categories.csv has no track")
        tags = sorted(t for t, c in counts.items() if c >= self.min_tag_count)
        labels = multi_hot(table["tags"], tags)
        if not self.keep_untagged:
            table, labels, (cf,) = drop_untagged(table, labels, report, detail="no known tag left after filtering "
                                                 "(data.keep_untagged=true keeps it as a negative)", arrays=(cf,))
        else:
            n_untagged = int((~labels.any(axis=1)).sum())
            if n_untagged == len(table):
                raise DataError(f"{self.name}: no track of {self.root / 'tags.csv'} keeps a tag: nothing to learn")
            if n_untagged:
                report.note(f"{n_untagged} track(s) carry none of the {len(tags)} tags; kept as negatives of every "
                            "tag (data.keep_untagged=true)")
        if len(table) == 0:
            raise DataError(f"{self.name}: no track left to import from {self.root}; {report.counts}")
        table["split"] = self._splits(table, labels, report)
        return Imported(tracks=table, tags=tags, labels=labels, cf=cf,
                        categories=[categories[t] if categories else UNCATEGORISED for t in tags])

    def _splits(self, table: pd.DataFrame, labels: np.ndarray, report: PrepareReport) -> np.ndarray:
        given = table["split"].to_numpy()
        if (given != "").all():
            try:
                return np.array([normalise_split(s) for s in given])
            except ValueError as error:
                raise DataError(f"{self.root / 'tags.csv'}: {error}") from None
        if (given != "").any():
            raise DataError(f"{self.root / 'tags.csv'}: the split column is empty for some tracks; fill it or drop it")
        outcome = artist_disjoint_split(
            table["artist"].tolist(), labels, fractions=self.split_fractions, seed=self.split_seed,
            min_positives=self.min_positives_per_split, max_draws=self.max_split_draws,
        )
        report.note(f"no split column: drew an artist-disjoint split (seed {self.split_seed}, "
                    f"{outcome.n_draws} draw(s), min positives per tag and split {outcome.min_positives})")
        if not outcome.satisfied:
            report.note(f"could not give every tag {self.min_positives_per_split} positive(s) in every split")
        return outcome.splits
