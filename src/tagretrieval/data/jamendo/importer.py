"""Import MTG-Jamendo (``data=jamendo``): full-length CC-licensed tracks with genre, instrument and mood/theme tags,
on the dataset's own five artist-disjoint splits of its autotagging subsets.

Expected layout of ``root`` (each path is a setting, see ``conf/data/jamendo.yaml``)::

    data/splits/split-0/ ... split-4/      data/splits/ of a clone of MTG/mtg-jamendo-dataset:
        autotagging_top50tags-{train,validation,test}.tsv    (also _genre, _instrument, _moodtheme, and the full
                                                              autotagging-*.tsv)
    audio/00/ ... audio/99/                the extracted audio archives: NN/<n>.low.mp3 (audio-low) and/or
                                           NN/<n>.mp3 (full-quality audio)

Split file format (verified on all published files): the header ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``,
tab-separated, CRLF line ends, no quoting; ``TAGS`` is one header name but 1..N tab-separated fields per row
(``genre---rock``, ``instrument---piano``, ``mood/theme---calm``), so rows are ragged and read with the ``csv``
module (``pandas.read_csv`` breaks on them). ``PATH`` is ``f"{n % 100:02d}/{n}.mp3"`` for ``track_{n:07d}``. The
five splits are independent redraws, not folds; within one, train/validation/test are artist-disjoint.
The ``autotagging.tsv`` symlink of the repository (a 31-byte text file in zip copies) is not read.

What is imported:

- tracks: the three part files of ``split-<split_index>`` for the subset (``subset``: ``top50``, ``genre``,
  ``instrument``, ``moodtheme`` or ``all``); track id ``track_0000241``, artist ``artist_000005``;
- tags: every tag in the part files, in sorted order of their full names (the order of ``data/tags/top50.txt``
  and of the baseline's label matrix), named without their prefix (``rock``, ``piano``, ``calm``) unless two
  prefixes share a name (then both keep the full name); tags without a training track are dropped (reported);
- categories: the prefix, cut at the ``/`` since metric keys cannot hold one: ``genre``, ``instrument``, ``mood``;
- audio (``audio``): ``low`` reads ``NN/<n>.low.mp3``, ``full`` reads ``NN/<n>.mp3``; the log-mels of the whole
  tracks go into the mel cache (resumable; shared by every subset and split index, which re-import into the same
  ``prepared_dir``).

Skipped and reported (``prepare_report.json``): malformed rows, tracks listed in two parts, missing, empty,
undecodable, silent or too short audio, and tags without a training track.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from tagretrieval.audio import MelFrontend
from tagretrieval.data.importer import Imported, Importer, check_choice, drop_untagged, multi_hot, train_counts
from tagretrieval.data.inputs import AUDIO
from tagretrieval.data.report import PrepareReport
from tagretrieval.runtime.errors import MissingFileError
SUBSETS: dict[str, str] = {
    "top50": "autotagging_top50tags",
    "genre": "autotagging_genre",
    "instrument": "autotagging_instrument",
    "moodtheme": "autotagging_moodtheme",
    "all": "autotagging",
}
"""``data.subset`` -> the file name stem of its split files."""
PART_NAMES: dict[str, str] = {"train": "train", "valid": "validation", "test": "test"}
"""Our split name -> the part name in the file names (spelled ``validation``)."""
N_SPLITS = 5
HEADER: tuple[str, ...] = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
AUDIO_SUFFIXES: dict[str, str] = {"low": ".low.mp3", "full": ".mp3"}
"""``data.audio`` -> the file name ending of its MP3s (``NN/<n>.low.mp3``, ``NN/<n>.mp3``)."""
TRACK_ID = re.compile(r"track_(\d{7})")
ARTIST_ID = re.compile(r"artist_\d{6}")
ALBUM_ID = re.compile(r"album_\d{6}")
DURATION = re.compile(r"\d+\.\d")
TAG = re.compile(r"([a-z]+(?:/[a-z]+)?)---([a-z0-9]+)")
"""A tag field: ``<prefix>---<name>``, prefix ``genre``, ``instrument`` or ``mood/theme``."""


def split_file(splits_dir: str | Path, *, subset: str, split_index: int, split: str) -> Path:
    """``splits_dir/split-<k>/<subset stem>-<part>.tsv``, e.g. ``split-0/autotagging_top50tags-validation.tsv``."""
    return Path(splits_dir) / f"split-{split_index}" / f"{SUBSETS[subset]}-{PART_NAMES[split]}.tsv"


def track_number(track_id: str) -> int:
    """``"track_0000241"`` -> 241."""
    match = TRACK_ID.fullmatch(track_id)
    if match is None:
        raise ValueError(f"not a track id: {track_id!r} (expected track_ and 7 digits)")
    return int(match.group(1))


def expected_path(track_id: str) -> str:
    """The ``PATH`` of a track: ``f"{n % 100:02d}/{n}.mp3"`` (``track_0000005`` -> ``05/5.mp3``)."""
    n = track_number(track_id)
    return f"{n % 100:02d}/{n}.mp3"


def tag_category(tag: str) -> str:
    """The category of a full tag name: its prefix cut at ``/`` (``mood/theme---calm`` -> ``mood``)."""
    return tag.split("---", 1)[0].split("/", 1)[0]


def short_tag_names(tags: list[str]) -> dict[str, str]:
    """Full tag name -> the name used in the prepared data: without its prefix, unless that name is shared."""
    counts = Counter(t.split("---", 1)[1] for t in tags)
    return {t: t.split("---", 1)[1] if counts[t.split("---", 1)[1]] == 1 else t for t in tags}


def read_split_file(path: str | Path, report: PrepareReport) -> pd.DataFrame:
    """Read one split TSV into track_id, artist, album, path, tags (list of full tag names).

    Malformed rows are skipped into ``report`` (reason ``malformed row``, id ``<file>:<line>``).

    Raises:
        FileNotFoundError; ValueError if the header is not :data:`HEADER`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"MTG-Jamendo split file not found: {path} (data.splits_dir: data/splits of a clone "
                                "of MTG/mtg-jamendo-dataset)")
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, [])
        if tuple(header) != HEADER:
            raise ValueError(f"{path}: header {header}, expected {list(HEADER)} (tab-separated)")
        for row in reader:
            if not row:
                continue
            problem = _row_problem(row)
            if problem:
                report.skip("malformed row", f"{path.name}:{reader.line_num}", f"{problem}: {row[:6]}")
                continue
            rows.append({"track_id": row[0], "artist": row[1], "album": row[2], "path": row[3],
                         "tags": sorted(set(row[5:]))})
    return pd.DataFrame(rows, columns=["track_id", "artist", "album", "path", "tags"])


def _row_problem(row: list[str]) -> str:
    """Why a split-file row cannot be read ('' when it is fine)."""
    if len(row) < len(HEADER):
        return f"{len(row)} fields, expected >= {len(HEADER)}"
    for value, pattern, what in ((row[0], TRACK_ID, "TRACK_ID"), (row[1], ARTIST_ID, "ARTIST_ID"),
                                 (row[2], ALBUM_ID, "ALBUM_ID"), (row[4], DURATION, "DURATION")):
        if pattern.fullmatch(value) is None:
            return f"bad {what} {value!r}"
    if row[3] != expected_path(row[0]):
        return f"PATH {row[3]!r} is not {expected_path(row[0])!r}"
    bad = [t for t in row[5:] if TAG.fullmatch(t) is None]
    return f"bad tag field(s) {bad}" if bad else ""


class JamendoImporter(Importer):
    """Imports MTG-Jamendo (layout and rules in the module docstring) into the prepared format at ``prepared_dir``.

    Args:
        root: the dataset folder.
        prepared_dir: where the import is written (shared by every subset and split index: mels are reused).
        splits_dir: the repository's ``data/splits`` folder (holds ``split-0`` ... ``split-4``).
        audio_dir: the folder holding ``00/`` ... ``99/``.
        subset: ``top50``, ``genre``, ``instrument``, ``moodtheme`` or ``all``.
        split_index: which of the five splits, 0..4.
        audio: ``low`` (``NN/<n>.low.mp3``) or ``full`` (``NN/<n>.mp3``).
        min_seconds, max_skipped_fraction, num_workers, cache_dtype: as in :class:`~tagretrieval.data.importer.Importer`.
    """

    IMPORT_VERSION = 1

    def __init__(
        self,
        *,
        root: str,
        prepared_dir: str,
        splits_dir: str,
        audio_dir: str,
        name: str = "jamendo",
        subset: str = "top50",
        split_index: int = 0,
        audio: str = "low",
        min_seconds: float = 1.0,
        max_skipped_fraction: float = 0.05,
        num_workers: int = 0,
        cache_dtype: str = "float32",
    ) -> None:
        check_choice("subset", subset, tuple(SUBSETS))
        check_choice("audio", audio, tuple(AUDIO_SUFFIXES))
        check_choice("split_index", split_index, tuple(range(N_SPLITS)))
        super().__init__(root=root, prepared_dir=prepared_dir, name=name, max_skipped_fraction=max_skipped_fraction,
                         num_workers=num_workers, cache_dtype=cache_dtype, min_seconds=min_seconds)
        self.splits_dir = Path(splits_dir)
        self.audio_dir = Path(audio_dir)
        self.subset = subset
        self.split_index = split_index
        self.audio = audio

    def song_inputs(self) -> frozenset[str]:
        """Audio."""
        return frozenset({AUDIO})

    def settings(self) -> dict:
        return {
            "splits_dir": str(self.splits_dir.resolve()), "audio_dir": str(self.audio_dir.resolve()),
            "subset": self.subset, "split_index": self.split_index, "audio": self.audio,
            "min_seconds": self.min_seconds,
        }

    def report_name(self) -> str:
        return f"{self.name}-{self.subset}-split{self.split_index}"

    def read(self, report: PrepareReport, *, frontend: MelFrontend, progress: bool) -> Imported:
        table = self._candidates(report)
        suffix = AUDIO_SUFFIXES[self.audio]
        paths = {t: self.audio_dir / (p[: -len(".mp3")] + suffix) for t, p in zip(table["track_id"], table["path"])}
        table = self.attach_audio(
            table, paths, report, frontend=frontend, progress=progress, audio_dir=self.audio_dir, note=True,
            missing=f"no {{path}} (data.audio={self.audio})",
            not_found=f"MTG-Jamendo audio folder not found: {self.audio_dir} (data.audio_dir: the folder holding "
                      "00/ ... 99/ of the extracted archives)")
        return self._labels(table, report)

    # -- steps -------------------------------------------------------------------------------------------
    def _candidates(self, report: PrepareReport) -> pd.DataFrame:
        """The tracks of the three parts (track_id, artist, album, path, tags, split); repeats are reported."""
        parts = []
        for split in PART_NAMES:
            part = read_split_file(split_file(self.splits_dir, subset=self.subset, split_index=self.split_index,
                                              split=split), report)
            parts.append(part.assign(split=split))
        table = pd.concat(parts, ignore_index=True)
        report.n_candidates = len(table) + len(report.items("malformed row"))
        repeated = table["track_id"].duplicated(keep="first").to_numpy()
        for track_id, split in zip(table.loc[repeated, "track_id"], table.loc[repeated, "split"]):
            report.skip("listed twice", f"{track_id} in {split}", "kept its first entry")
        table = table[~repeated].reset_index(drop=True)
        shared = table.groupby("artist")["split"].nunique()
        if (shared > 1).any():
            report.note(f"{int((shared > 1).sum())} artist(s) appear in more than one part (the published splits "
                        f"are artist-disjoint), e.g. {shared[shared > 1].index[:5].tolist()}")
        tag_sets = {split: {t for tags in table.loc[table["split"] == split, "tags"] for t in tags} for split in PART_NAMES}
        if len({frozenset(s) for s in tag_sets.values()}) > 1:
            report.note("the parts hold different tag sets: " + ", ".join(f"{s} {len(t)}" for s, t in tag_sets.items()))
        return table

    def _labels(self, table: pd.DataFrame, report: PrepareReport) -> Imported:
        n_train = train_counts(table)
        all_tags = sorted({t for tags in table["tags"] for t in tags})
        for tag in all_tags:
            if n_train[tag] == 0:
                report.skip("tag: no training track", tag, "no positive in the train part")
        full_names = [t for t in all_tags if n_train[t] > 0]
        table, labels, _ = drop_untagged(table, multi_hot(table["tags"], full_names), report,
                                         detail="none of its tags has a training track")
        names = short_tag_names(full_names)
        kept_full = [t for t in full_names if names[t] == t]
        if kept_full:
            report.note(f"tag names shared by two prefixes keep their prefix: {kept_full}")
        return Imported(tracks=table, tags=[names[t] for t in full_names],
                        categories=[tag_category(t) for t in full_names], labels=labels)
