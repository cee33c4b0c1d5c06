"""Import the Free Music Archive (``data=fma``): genre tags of one subset, with the 518 precomputed features
or the audio as song input.

Expected layout of ``root`` (the FMA archives unzipped side by side)::

    fma_metadata/tracks.csv      2 header rows + a 'track_id' line, then one row per track (52 columns)
    fma_metadata/genres.csv      genre_id, #tracks, parent, title, top_level
    fma_metadata/features.csv    3 header rows + a 'track_id' line, 518 float columns  (input=features)
    fma_<subset>/155/155320.mp3  the subset's audio: id zero-padded to 6 digits, folder = first 3 digits
                                 (input=audio; small/medium/large: 30 s clips, full: whole tracks)

What is imported:

- tracks: those whose ``('set', 'subset')`` is within the chosen subset (``medium`` = small + medium, as the
  dataset defines it; ``large`` and ``full`` = every track), identified by the 6-digit id (``"000002"``);
- split: the official ``('set', 'split')`` (training/validation/test -> train/valid/test), artist-disjoint;
  artist: ``('artist', 'id')``;
- tags (``tags``): ``genres_all`` (default) = the titles of every genre of the track and of their ancestors
  (multi-label, over the hierarchy), or ``genre_top`` = the title of the track's single root genre. Tracks
  without any such genre (``genre_top`` is empty when a track's genres span several roots) are not
  candidates: the report notes how many. Category (fixed): ``genre`` for the 16 root genres, ``subgenre``
  for every other genre, so results are averaged per level of the hierarchy (a root's title as category
  is impossible: category names cannot hold '/', as in ``Old-Time / Historic``);
- song input (``input``): ``features`` writes ``features.npy`` (the 518 columns of features.csv, in file
  order) and decodes no audio; ``audio`` fills the mel cache from the subset's MP3s (resampled to the front
  end's rate, in ``num_workers`` processes, resumable).

Skipped and reported (``prepare_report.json``), never fatal unless more than ``max_skipped_fraction`` of the
candidates go: the clips known to be broken (:data:`KNOWN_BAD_CLIPS`, in both input modes: their features
were computed from broken audio), unparsable genre lists, unknown split values, tracks missing from
features.csv or with NaN/inf features, missing/undecodable/silent/too short audio files, tags with fewer
than ``min_train_tracks`` training tracks, and tracks left without tags.

The FMA paper's top-genre baselines on such an import are :mod:`tagretrieval.baselines.fma_genres`.
"""

from __future__ import annotations

import ast
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from tagretrieval.audio import MelFrontend
from tagretrieval.data.importer import Imported, Importer, check_choice, drop_untagged, multi_hot, train_counts
from tagretrieval.data.inputs import AUDIO, FEATURES
from tagretrieval.data.prepared import SPLITS, normalise_split
from tagretrieval.data.report import PrepareReport

"""Bump when the import logic changes: a prepared folder made by another version is imported again."""
SUBSETS: dict[str, tuple[str, ...]] = {
    "small": ("small",),
    "medium": ("small", "medium"),
    "large": ("small", "medium", "large"),
    "full": ("small", "medium", "large"),
}
"""Subset -> the ``('set', 'subset')`` values it contains (a track's value is the smallest subset holding it)."""
TAG_SOURCES: tuple[str, ...] = ("genres_all", "genre_top")
INPUTS: tuple[str, ...] = ("features", "audio")
KNOWN_BAD_CLIPS: tuple[str, ...] = ("098565", "098567", "098569", "099134", "108925", "133297")
"""fma_small clips far shorter than 30 s (the last three hold no audio at all), per the FMA maintainers."""
ROOT_CATEGORY = "genre"
SUB_CATEGORY = "subgenre"
TRACK_COLUMNS: dict[str, tuple[str, str]] = {
    "artist": ("artist", "id"),
    "split": ("set", "split"),
    "subset": ("set", "subset"),
    "genre_top": ("track", "genre_top"),
    "genres_all": ("track", "genres_all"),
}
"""Our name -> the (group, column) of tracks.csv it is read from."""
GENRE_COLUMNS: tuple[str, ...] = ("genre_id", "#tracks", "parent", "title", "top_level")
FEATURE_HEADER: tuple[str, ...] = ("feature", "statistics", "number", "track_id")


def track_key(track_id: int | str) -> str:
    """The id as used in paths and in our prepared data: zero-padded to 6 digits (``2 -> "000002"``)."""
    return f"{int(track_id):06d}"


def fma_audio_path(audio_dir: str | Path, track_id: int | str) -> Path:
    """``audio_dir/155/155320.mp3`` for track 155320 (folder = first 3 digits of the 6-digit id)."""
    key = track_key(track_id)
    return Path(audio_dir) / key[:3] / f"{key}.mp3"


def parse_genre_list(text: str) -> list[int]:
    """A tracks.csv genre list (a Python literal such as ``"[76, 103]"``) -> genre ids; ValueError otherwise."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"not a genre list literal: {text!r}") from error
    if not isinstance(value, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in value):
        raise ValueError(f"not a list of genre ids: {text!r}")
    return value


def read_tracks(path: str | Path) -> pd.DataFrame:
    """Read ``tracks.csv`` (two header rows plus the ``track_id`` line; quoted newlines in free text).

    Returns:
        One row per track, all strings: ``track_id`` (6 digits), ``artist``, ``split``, ``subset``,
        ``genre_top``, ``genres_all`` (the raw list literal).

    Raises:
        FileNotFoundError, or ValueError naming the file and the missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FMA tracks table not found: {path} (expected root/fma_metadata/tracks.csv)")
    table = pd.read_csv(path, header=[0, 1], index_col=0, dtype=str, keep_default_na=False)
    missing = [f"{g}/{c}" for g, c in TRACK_COLUMNS.values() if (g, c) not in table.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} not found; is this FMA's tracks.csv (header=[0, 1])?")
    if table.index.name != "track_id":
        raise ValueError(f"{path}: expected the third line to be 'track_id', found index name {table.index.name!r}")
    try:
        ids = [track_key(i) for i in table.index]
    except ValueError as error:
        raise ValueError(f"{path}: a track id is not an integer ({error})") from None
    out = pd.DataFrame({name: table[column].to_numpy() for name, column in TRACK_COLUMNS.items()})
    out.insert(0, "track_id", ids)
    return out.apply(lambda column: column.str.strip())


def read_genres(path: str | Path) -> pd.DataFrame:
    """Read ``genres.csv`` into a frame indexed by ``genre_id`` (int) with ``parent``, ``title``, ``top_level``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FMA genres table not found: {path} (expected root/fma_metadata/genres.csv)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(table.columns) != GENRE_COLUMNS:
        raise ValueError(f"{path}: columns {list(table.columns)}, expected {list(GENRE_COLUMNS)}")
    try:
        return pd.DataFrame({
            "parent": table["parent"].astype(int).to_numpy(), "title": table["title"].str.strip().to_numpy(),
            "top_level": table["top_level"].astype(int).to_numpy(),
        }, index=pd.Index(table["genre_id"].astype(int), name="genre_id"))
    except ValueError as error:
        raise ValueError(f"{path}: genre_id/parent/top_level must be integers ({error})") from None


def genre_tag_names(genres: pd.DataFrame) -> dict[int, str]:
    """Genre id -> tag name: its title, or ``"title (id)"`` for titles that several genres share."""
    counts = Counter(genres["title"])
    return {int(g): (title if counts[title] == 1 else f"{title} ({g})") for g, title in genres["title"].items()}


def read_features(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read ``features.csv``: 3 header rows (feature, statistics, number) and a ``track_id`` line, then floats.

    The header is checked line by line and the values parsed in one pass as float32 (much faster than a
    3-level header frame of ~1 GB of text). Empty cells become NaN (reported per track by the importer).

    Returns:
        ``(track ids [n] (6 digits), values float32 [n, n_features], column names [n_features])``, the
        names joined as ``feature/statistics/number`` (``mfcc/mean/01``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FMA features not found: {path} (needed by data.input=features)")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [next(reader, []) for _ in FEATURE_HEADER]
    for row, label in zip(header, FEATURE_HEADER):
        if not row or row[0] != label:
            raise ValueError(f"{path}: expected 4 header lines starting with {list(FEATURE_HEADER)}, "
                             f"found a line starting with {row[:1]}")
    n_features = len(header[0]) - 1
    if n_features < 1 or any(len(row) != n_features + 1 for row in header[:3]):
        raise ValueError(f"{path}: the three header rows differ in length")
    try:
        values = pd.read_csv(path, header=None, skiprows=len(FEATURE_HEADER), index_col=0,
                             dtype={i: np.float32 for i in range(1, n_features + 1)})
    except ValueError as error:
        raise ValueError(f"{path}: non-numeric feature value ({error})") from None
    if values.shape[1] != n_features:
        raise ValueError(f"{path}: rows have {values.shape[1]} values, the header names {n_features}")
    names = ["/".join(parts) for parts in zip(header[0][1:], header[1][1:], header[2][1:])]
    return [track_key(i) for i in values.index], values.to_numpy(dtype=np.float32), names


class FMAImporter(Importer):
    """Imports FMA (layout and rules in the module docstring) into the prepared format at ``prepared_dir``.

    Args:
        root: folder holding ``fma_metadata/`` (and the subset's audio folder for ``input="audio"``).
        subset: ``small``, ``medium``, ``large`` or ``full``.
        tags: ``genres_all`` or ``genre_top``.
        input: ``features`` or ``audio``.
        audio_dir: the subset's audio folder (``root/fma_<subset>``).
        min_train_tracks: tags with fewer training tracks are dropped (reported).
        min_seconds, max_skipped_fraction, num_workers, cache_dtype: as in :class:`~tagretrieval.data.importer.Importer`
            (``min_seconds``, ``num_workers``, ``cache_dtype``: ``input="audio"`` only).
    """

    IMPORT_VERSION = 1

    def __init__(
        self,
        *,
        root: str,
        prepared_dir: str,
        audio_dir: str,
        name: str = "fma",
        subset: str = "small",
        tags: str = "genres_all",
        input: str = "features",
        min_train_tracks: int = 1,
        min_seconds: float = 1.0,
        max_skipped_fraction: float = 0.05,
        num_workers: int = 0,
        cache_dtype: str = "float32",
    ) -> None:
        check_choice("subset", subset, tuple(SUBSETS))
        check_choice("tags", tags, TAG_SOURCES)
        check_choice("input", input, INPUTS)
        if min_train_tracks < 1:
            raise ValueError(f"data.min_train_tracks must be >= 1, got {min_train_tracks}")
        super().__init__(root=root, prepared_dir=prepared_dir, name=name, max_skipped_fraction=max_skipped_fraction,
                         num_workers=num_workers, cache_dtype=cache_dtype, min_seconds=min_seconds)
        self.audio_dir = Path(audio_dir)
        self.subset = subset
        self.tags = tags
        self.input = input
        self.min_train_tracks = min_train_tracks

    @property
    def metadata_dir(self) -> Path:
        return self.root / "fma_metadata"

    def song_inputs(self) -> frozenset[str]:
        """``data.input``: the precomputed features or audio."""
        return frozenset({FEATURES} if self.input == "features" else {AUDIO})

    def settings(self) -> dict:
        settings = {"subset": self.subset, "tags": self.tags, "input": self.input,
                    "min_train_tracks": self.min_train_tracks}
        if self.input == "audio":
            settings.update(audio_dir=str(self.audio_dir.resolve()), min_seconds=self.min_seconds)
        return settings

    def report_name(self) -> str:
        return f"{self.name}-{self.subset}"

    def read(self, report: PrepareReport, *, frontend: MelFrontend, progress: bool) -> Imported:
        table, categories = self._candidates(report)
        if self.input == "features":
            table, features = self._attach_features(table, report)
        else:
            paths = {t: fma_audio_path(self.audio_dir, t) for t in table["track_id"]}
            table = self.attach_audio(
                table, paths, report, frontend=frontend, progress=progress, audio_dir=self.audio_dir,
                not_found=f"FMA audio folder not found: {self.audio_dir} (data.audio_dir; unzip "
                          f"fma_{self.subset}.zip into data.root, or use data.input=features)")
            features = None
        return self._labels(table, features, categories, report)

    # -- steps -------------------------------------------------------------------------------------------
    def _candidates(self, report: PrepareReport) -> tuple[pd.DataFrame, dict[str, str]]:
        """Tracks of the subset with a label of the chosen kind (track_id, artist, split, tags (list)), and the
        category of every tag."""
        tracks = read_tracks(self.metadata_dir / "tracks.csv")
        genres = read_genres(self.metadata_dir / "genres.csv")
        tracks = tracks[tracks["subset"].isin(SUBSETS[self.subset])].reset_index(drop=True)
        if len(tracks) == 0:
            raise ValueError(f"{self.metadata_dir / 'tracks.csv'}: no track in subset '{self.subset}' "
                             f"(('set', 'subset') in {list(SUBSETS[self.subset])})")
        tag_lists, categories = self._tag_lists(tracks, genres, report)
        unlabelled = np.array([tags == [] for tags in tag_lists])
        if unlabelled.any():
            examples = ", ".join(tracks.loc[unlabelled, "track_id"][:5])
            report.note(f"{int(unlabelled.sum())} track(s) of subset '{self.subset}' have no {self.tags} and are "
                        f"not imported (e.g. {examples})")
        report.n_candidates = int((~unlabelled).sum())
        splits = {value: self._split(value) for value in set(tracks["split"])}
        keep = np.zeros(len(tracks), dtype=bool)
        for i, (track_id, split, tags) in enumerate(zip(tracks["track_id"], tracks["split"], tag_lists)):
            if not tags:  # [] (not a candidate) or None (broken genre field, already reported)
                continue
            if track_id in KNOWN_BAD_CLIPS:
                report.skip("known bad audio", track_id, "listed by the FMA maintainers as broken or far too short")
            elif splits[split] is None:
                report.skip("bad split", track_id, f"('set', 'split') = {split!r}")
            else:
                keep[i] = True
        tracks["split"] = [splits[s] or "" for s in tracks["split"]]
        tracks["tags"] = pd.Series(tag_lists, index=tracks.index, dtype=object)
        return tracks[keep].reset_index(drop=True), categories

    @staticmethod
    def _split(value: str) -> str | None:
        try:
            return normalise_split(value)
        except ValueError:
            return None

    def _tag_lists(self, tracks: pd.DataFrame, genres: pd.DataFrame,
                   report: PrepareReport) -> tuple[list[list[str] | None], dict[str, str]]:
        """Each track's tags (``[]`` when it has none, ``None`` when its genre field is broken: reported),
        and tag -> category."""
        if self.tags == "genre_top":
            tag_lists: list[list[str] | None] = [[title] if title else [] for title in tracks["genre_top"]]
            return tag_lists, {title: ROOT_CATEGORY for title in set(tracks["genre_top"]) if title}
        names = genre_tag_names(genres)
        category = {names[g]: ROOT_CATEGORY if parent == 0 else SUB_CATEGORY for g, parent in genres["parent"].items()}
        unknown: Counter = Counter()
        tag_lists = []
        for track_id, text in zip(tracks["track_id"], tracks["genres_all"]):
            try:
                ids = parse_genre_list(text) if text else []
            except ValueError as error:
                report.skip("bad genres field", track_id, f"('track', 'genres_all'): {error}")
                tag_lists.append(None)
                continue
            unknown.update(g for g in ids if g not in names)
            tag_lists.append(sorted({names[g] for g in ids if g in names}))
        for genre_id, count in sorted(unknown.items()):
            report.skip("tag: unknown genre id", str(genre_id), f"in {count} track(s), not in genres.csv")
        return tag_lists, category

    def _attach_features(self, table: pd.DataFrame, report: PrepareReport) -> tuple[pd.DataFrame, np.ndarray]:
        ids, values, _ = read_features(self.metadata_dir / "features.csv")
        row_of = {track_id: i for i, track_id in enumerate(ids)}
        finite = np.isfinite(values).all(axis=1)
        keep = np.ones(len(table), dtype=bool)
        for i, track_id in enumerate(table["track_id"]):
            if track_id not in row_of:
                report.skip("missing features", track_id, "not in features.csv")
                keep[i] = False
            elif not finite[row_of[track_id]]:
                report.skip("non-finite features", track_id, "NaN/inf or empty values in features.csv")
                keep[i] = False
        table = table[keep].reset_index(drop=True)
        paths = [fma_audio_path(self.audio_dir, t) for t in table["track_id"]]
        table["audio_path"] = [str(p.resolve()) if p.is_file() else "" for p in paths]
        return table, values[[row_of[t] for t in table["track_id"]]]

    def _labels(self, table: pd.DataFrame, features: np.ndarray | None, categories: dict[str, str],
                report: PrepareReport) -> Imported:
        counts = train_counts(table)
        all_tags = sorted({t for tags in table["tags"] for t in tags})
        for tag in all_tags:
            if counts[tag] < self.min_train_tracks:
                report.skip("tag: too rare in train", tag,
                            f"{counts[tag]} training track(s) < data.min_train_tracks={self.min_train_tracks}")
        tags = [t for t in all_tags if counts[t] >= self.min_train_tracks]
        table, labels, (features,) = drop_untagged(table, multi_hot(table["tags"], tags), report,
                                                   detail="none of its genres is kept", arrays=(features,))
        missing_splits = sorted(set(SPLITS) - set(table["split"]))
        if missing_splits and len(table):
            report.note(f"no track in split(s) {missing_splits}")
        return Imported(tracks=table, tags=tags, categories=[categories[t] for t in tags], labels=labels,
                        features=features)
