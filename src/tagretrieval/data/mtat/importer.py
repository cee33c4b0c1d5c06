"""Import MagnaTagATune (``data=mtat``): the 25,863 29-second clips of the MTAT release, tagged with the top-50 or
all 188 tags of ``annotations_final.csv``, on either of the field's two standard top-50 protocols.

Expected layout of ``root`` (each path is a setting, see ``conf/data/mtat.yaml``)::

    annotations_final.csv      tab-separated despite its name: clip_id, the 188 tag columns, mp3_path; 0/1 values
    mp3/0/ ... mp3/f/          the 16 folders of the unzipped release (cat mp3.zip.* > mp3_all.zip; unzip)
    splits/won/                split/mtat/ of minzwon/sota-music-tagging-models (= Lee et al. 2017's split):
        train.npy valid.npy test.npy   1-D unicode arrays of "<row>\\t<mp3_path>"; <row> is the 0-based data
                                       row of annotations_final.csv, NOT the clip id
        tags.npy binary.npy            optional: only used to cross-check the labels
    splits/pons/               data/index/mtt/ of jordipons/musicnn-training:
        train_gt_mtt.tsv val_gt_mtt.tsv test_gt_mtt.tsv   "<clip_id>\\t[0.0, 1.0, ...]" (50 floats), no header
        index_mtt.tsv                  optional: "<clip_id>\\t<mp3_path>", only used to cross-check the paths

What is imported:

- tracks: the clips of the protocol's three files (``split=won``: 15,244 / 1,529 / 4,332 clips, only clips with a
  top-50 tag; ``split=pons``: 18,706 / 1,825 / 5,329, clips without a top-50 tag kept as all-zero rows, as musicnn
  evaluates them). Both split by folder (0-b / c / d-f), which is not artist-disjoint. Track id: the clip id;
  artist: the first field of the file name (``american_bach_soloists``);
- tags (``tags``): ``top50`` (the canonical order of musicnn's ``MTT_LABELS`` and sota's ``tags.npy``) or ``all``
  (the 188 columns of annotations_final.csv, in file order, misspellings included). Labels always come from
  annotations_final.csv; the protocol's own label files (``binary.npy``, the gt lists) are compared with it and
  disagreements are noted in the report. Tags without a training clip are dropped (reported);
- categories: ``mtat_tag_categories.csv`` (package data: genre / instrument / mood / other, with the rules and
  sources in its header), since MTAT has no tag groups of its own;
- audio: the clips' log-mels, computed by the front end into the mel cache (resumable; shared by both
  protocols and tag sets, which re-import into the same ``prepared_dir``).

Skipped and reported (``prepare_report.json``): the clips musicnn lists as missing or corrupt
(:data:`KNOWN_BAD_CLIPS`; neither protocol contains them, so this only fires for other split files), split
entries whose row or path disagrees with annotations_final.csv, malformed annotation rows, clips listed twice,
missing, empty, undecodable, silent or too short audio, and tags without a training clip.

Formats follow ``DATA_FORMATS_MTAT_JAMENDO.md``; where it marks a fact unverified the reader accepts both
variants: annotations_final.csv with or without quoted fields and with CRLF or LF line ends; any numeric dtype
for ``binary.npy``; sota's ``train.npy`` (never seen) in the format of its ``valid.npy``.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from tagretrieval.audio import MelFrontend
from tagretrieval.data.importer import Imported, Importer, check_choice
from tagretrieval.data.inputs import AUDIO
from tagretrieval.data.prepared import SPLITS
from tagretrieval.data.report import PrepareReport

"""Bump when the import logic changes: a prepared folder made by another version is imported again."""
PROTOCOLS: tuple[str, ...] = ("won", "pons")
TAG_SETS: tuple[str, ...] = ("top50", "all")
WON_FILES: dict[str, str] = {"train": "train.npy", "valid": "valid.npy", "test": "test.npy"}
PONS_FILES: dict[str, str] = {"train": "train_gt_mtt.tsv", "valid": "val_gt_mtt.tsv", "test": "test_gt_mtt.tsv"}
CATEGORY_TABLE = "tag_categories.csv"
OTHER_CATEGORY = "other"

ANNOTATION_TAGS: tuple[str, ...] = (
    "no voice", "singer", "duet", "plucking", "hard rock", "world", "bongos", "harpsichord", "female singing",
    "clasical", "sitar", "chorus", "female opera", "male vocal", "vocals", "clarinet", "heavy", "silence", "beats",
    "men", "woodwind", "funky", "no strings", "chimes", "foreign", "no piano", "horns", "classical", "female",
    "no voices", "soft rock", "eerie", "spacey", "jazz", "guitar", "quiet", "no beat", "banjo", "electric", "solo",
    "violins", "folk", "female voice", "wind", "happy", "ambient", "new age", "synth", "funk", "no singing",
    "middle eastern", "trumpet", "percussion", "drum", "airy", "voice", "repetitive", "birds", "space", "strings",
    "bass", "harpsicord", "medieval", "male voice", "girl", "keyboard", "acoustic", "loud", "classic", "string",
    "drums", "electronic", "not classical", "chanting", "no violin", "not rock", "no guitar", "organ", "no vocal",
    "talking", "choral", "weird", "opera", "soprano", "fast", "acoustic guitar", "electric guitar", "male singer",
    "man singing", "classical guitar", "country", "violin", "electro", "reggae", "tribal", "dark", "male opera",
    "no vocals", "irish", "electronica", "horn", "operatic", "arabic", "lol", "low", "instrumental", "trance",
    "chant", "strange", "drone", "synthesizer", "heavy metal", "modern", "disco", "bells", "man", "deep",
    "fast beat", "industrial", "hard", "harp", "no flute", "jungle", "pop", "lute", "female vocal", "oboe",
    "mellow", "orchestral", "viola", "light", "echo", "piano", "celtic", "male vocals", "orchestra", "eastern",
    "old", "flutes", "punk", "spanish", "sad", "sax", "slow", "male", "blues", "vocal", "indian", "no singer",
    "scary", "india", "woman", "woman singing", "rock", "dance", "piano solo", "guitars", "no drums", "jazzy",
    "singing", "cello", "calm", "female vocals", "voices", "different", "techno", "clapping", "house", "monks",
    "flute", "not opera", "not english", "oriental", "beat", "upbeat", "soft", "noise", "choir", "female singer",
    "rap", "metal", "hip hop", "quick", "water", "baroque", "women", "fiddle", "english",
)
"""The 188 tag columns of annotations_final.csv, in file order (misspellings and near-duplicates are the data's)."""
TOP50_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)
"""The top-50 tags in the canonical order (musicnn ``MTT_LABELS``, sota ``tags.npy``): descending frequency.
Lee et al.'s ``top50_tags.txt`` differs (camelCase, positions 47/48 swapped): it is not read."""
KNOWN_BAD_CLIPS: dict[str, str] = {
    "35644": "no file (musicnn-training aux/mtt/partition_gt.py)",
    "55753": "corrupted (musicnn-training aux/mtt/partition_gt.py)",
    "57881": "corrupted (musicnn-training aux/mtt/partition_gt.py)",
}
"""Clip ids musicnn excludes from all of its files; neither protocol contains them."""
REPORTED_BROKEN: tuple[str, ...] = ("31533", "19588")
"""Clips a third-party repository lists as broken (unverified; in both protocols' valid/test): decoded like any
other clip, so they are skipped only if their audio really is bad; the report notes them."""


@dataclass
class Annotations:
    """annotations_final.csv in memory; row ``i`` is the file's 0-based data row (sota's ``<row>``).

    Attributes:
        clip_ids: ``[n_rows]`` clip ids as strings (``"2"``).
        paths: ``[n_rows]`` mp3 paths relative to the audio folder (``"f/american_bach_soloists-...-30-59.mp3"``).
        tags: ``[n_tags]`` tag column names, in file order.
        labels: uint8 ``[n_rows, n_tags]``; all zero on the rows of ``bad_rows``.
        bad_rows: data row -> why it cannot be used (values other than 0/1).
    """

    clip_ids: list[str]
    paths: list[str]
    tags: list[str]
    labels: np.ndarray
    bad_rows: dict[int, str]


def read_annotations(path: str | Path) -> Annotations:
    """Read ``annotations_final.csv``: tab-separated, fields quoted or not, CRLF or LF line ends.

    Raises:
        FileNotFoundError; ValueError when the header is not ``clip_id, <tags...>, mp3_path`` or a clip id is not
        an integer or appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MTAT annotations not found: {path} (data.annotations; annotations_final.csv "
                                "of the MagnaTagATune release)")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quotechar='"')
    columns = [c.strip() for c in table.columns]
    if len(columns) < 3 or columns[0] != "clip_id" or columns[-1] != "mp3_path":
        raise ValueError(f"{path}: expected tab-separated columns clip_id, <tags>, mp3_path; found "
                         f"{columns[:3]} ... {columns[-2:]} ({len(columns)} columns). Is it annotations_final.csv?")
    tags = columns[1:-1]
    if len(set(tags)) != len(tags):
        raise ValueError(f"{path}: duplicate tag columns {sorted(t for t, n in Counter(tags).items() if n > 1)}")
    clip_ids = table.iloc[:, 0].str.strip()
    if not clip_ids.str.fullmatch(r"\d+").all():
        bad = clip_ids[~clip_ids.str.fullmatch(r"\d+")].tolist()[:5]
        raise ValueError(f"{path}: clip ids must be integers, found {bad}")
    clip_ids = clip_ids.map(lambda s: str(int(s)))
    if clip_ids.duplicated().any():
        raise ValueError(f"{path}: clip ids appear twice: {clip_ids[clip_ids.duplicated()].tolist()[:10]}")
    values = table.iloc[:, 1:-1].apply(lambda column: column.str.strip()).to_numpy()
    valid = np.isin(values, ("0", "1"))
    bad_rows = {int(i): f"{int((~valid[i]).sum())} value(s) other than 0/1, e.g. "
                        f"{values[i][~valid[i]][0]!r} for '{tags[int(np.flatnonzero(~valid[i])[0])]}'"
                for i in np.flatnonzero(~valid.all(axis=1))}
    labels = (values == "1").astype(np.uint8)
    labels[list(bad_rows)] = 0
    return Annotations(clip_ids=clip_ids.tolist(), paths=table.iloc[:, -1].str.strip().tolist(), tags=tags,
                       labels=labels, bad_rows=bad_rows)


def read_won_split(path: str | Path) -> list[tuple[int, str]]:
    """One of sota's ``train/valid/test.npy``: a 1-D unicode array of ``"<row>\\t<mp3_path>"`` -> (row, path).

    Raises:
        FileNotFoundError; ValueError for another array type (object arrays are refused: no pickle) or element.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MTAT split file not found: {path} (split/mtat/ of sota-music-tagging-models)")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path}: not a plain numpy array of strings ({error})") from None
    if array.ndim != 1 or array.dtype.kind != "U":
        raise ValueError(f"{path}: expected a 1-D unicode array, found dtype {array.dtype} shape {array.shape}")
    entries = []
    for i, element in enumerate(array.tolist()):
        row, tab, mp3_path = element.partition("\t")
        if not tab or not row.isdigit() or not mp3_path.endswith(".mp3"):
            raise ValueError(f"{path}: element {i} is {element!r}, expected '<row>\\t<folder>/<name>.mp3'")
        entries.append((int(row), mp3_path))
    return entries


def read_pons_gt(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """One of musicnn's ``*_gt_mtt.tsv``: lines ``<clip_id>\\t[0.0, 1.0, ...]`` -> (clip id, float32 [50]).

    Raises:
        FileNotFoundError; ValueError naming the line of a malformed entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MTAT split file not found: {path} (data/index/mtt/ of musicnn-training)")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        clip_id, tab, values = line.partition("\t")
        try:
            if not tab or not clip_id.strip().isdigit():
                raise ValueError("no '<clip_id>\\t' prefix")
            vector = np.asarray(json.loads(values), dtype=np.float32)
            if vector.shape != (len(TOP50_TAGS),) or not np.isin(vector, (0.0, 1.0)).all():
                raise ValueError(f"expected a list of {len(TOP50_TAGS)} values 0.0/1.0")
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error} (found {line[:80]!r})") from None
        entries.append((str(int(clip_id)), vector))
    return entries


def read_tag_categories() -> dict[str, str]:
    """The shipped category table (``mtat_tag_categories.csv``): tag -> genre / instrument / mood / other."""
    text = resources.files("tagretrieval.data.mtat").joinpath(CATEGORY_TABLE).read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    table = pd.read_csv(io.StringIO("\n".join(lines)), dtype=str, keep_default_na=False)
    return dict(zip(table["tag"], table["category"]))


def clip_artist(mp3_path: str) -> str:
    """The artist slug of a clip: the first ``-`` field of its file name (``f/american_bach_soloists-...``)."""
    return Path(mp3_path).name.split("-")[0]


class MTATImporter(Importer):
    """Imports MagnaTagATune (layout and rules in the module docstring) into the prepared format at ``prepared_dir``.

    Args:
        root: the dataset folder.
        prepared_dir: where the import is written (shared by both protocols and tag sets: mels are reused).
        annotations: annotations_final.csv.
        audio_dir: the folder holding ``0/`` ... ``f/``.
        split_dir: the protocol's split files (``won``: sota's ``split/mtat``; ``pons``: musicnn's ``data/index/mtt``).
        split: ``won`` or ``pons``.
        tags: ``top50`` or ``all``.
        min_seconds, max_skipped_fraction, num_workers, cache_dtype: as in :class:`~tagretrieval.data.importer.Importer`.
    """

    IMPORT_VERSION = 1

    def __init__(
        self,
        *,
        root: str,
        prepared_dir: str,
        annotations: str,
        audio_dir: str,
        split_dir: str,
        name: str = "mtat",
        split: str = "won",
        tags: str = "top50",
        min_seconds: float = 1.0,
        max_skipped_fraction: float = 0.05,
        num_workers: int = 0,
        cache_dtype: str = "float32",
    ) -> None:
        check_choice("split", split, PROTOCOLS)
        check_choice("tags", tags, TAG_SETS)
        super().__init__(root=root, prepared_dir=prepared_dir, name=name, max_skipped_fraction=max_skipped_fraction,
                         num_workers=num_workers, cache_dtype=cache_dtype, min_seconds=min_seconds)
        self.annotations = Path(annotations)
        self.audio_dir = Path(audio_dir)
        self.split_dir = Path(split_dir)
        self.split = split
        self.tags = tags

    def song_inputs(self) -> frozenset[str]:
        """Audio."""
        return frozenset({AUDIO})

    def settings(self) -> dict:
        return {
            "annotations": str(self.annotations.resolve()), "audio_dir": str(self.audio_dir.resolve()),
            "split_dir": str(self.split_dir.resolve()), "split": self.split, "tags": self.tags,
            "min_seconds": self.min_seconds,
        }

    def report_name(self) -> str:
        return f"{self.name}-{self.split}"

    def read(self, report: PrepareReport, *, frontend: MelFrontend, progress: bool) -> Imported:
        annotations = read_annotations(self.annotations)
        columns = self._tag_columns(annotations, report)
        members = self._members_won(annotations, report) if self.split == "won" else \
            self._members_pons(annotations, report)
        table = self._usable(members, annotations, report)
        paths = {t: self.audio_dir / p for t, p in zip(table["track_id"], table["mp3_path"])}
        table = self.attach_audio(
            table, paths, report, frontend=frontend, progress=progress, audio_dir=self.audio_dir, note=True,
            not_found=f"MTAT audio folder not found: {self.audio_dir} (data.audio_dir: the folder holding 0/ ... f/ "
                      "of the unzipped mp3_all.zip)")
        labels = annotations.labels[table["row"].to_numpy()][:, columns]
        return self._labels(table, labels, [annotations.tags[j] for j in columns], report)

    # -- steps -------------------------------------------------------------------------------------------
    def _tag_columns(self, annotations: Annotations, report: PrepareReport) -> list[int]:
        """Columns of ``annotations.labels`` that make the vocabulary, in vocabulary order."""
        column = {t: j for j, t in enumerate(annotations.tags)}
        if self.tags == "top50":
            missing = [t for t in TOP50_TAGS if t not in column]
            if missing:
                raise ValueError(f"{self.annotations}: top-50 tag column(s) {missing} not found")
            return [column[t] for t in TOP50_TAGS]
        if set(annotations.tags) != set(ANNOTATION_TAGS):
            report.note(f"annotations_final.csv has {len(annotations.tags)} tag columns, not the release's 188: "
                        f"extra {sorted(set(annotations.tags) - set(ANNOTATION_TAGS))[:10]}, "
                        f"missing {sorted(set(ANNOTATION_TAGS) - set(annotations.tags))[:10]}")
        return list(range(len(annotations.tags)))

    def _members_won(self, annotations: Annotations, report: PrepareReport) -> pd.DataFrame:
        """The clips of sota's three split files: row (data row of annotations_final.csv), split."""
        rows, splits = [], []
        for split, file_name in WON_FILES.items():
            for row, mp3_path in read_won_split(self.split_dir / file_name):
                if row >= len(annotations.paths) or annotations.paths[row] != mp3_path:
                    found = annotations.paths[row] if row < len(annotations.paths) else "no such row"
                    report.skip("split entry mismatch", f"{file_name}:{row}",
                                f"{mp3_path} is not data row {row} of annotations_final.csv ({found})")
                    continue
                rows.append(row)
                splits.append(split)
        members = pd.DataFrame({"row": np.asarray(rows, dtype=np.int64), "split": splits})
        self._check_won_labels(members, annotations, report)
        return members

    def _check_won_labels(self, members: pd.DataFrame, annotations: Annotations, report: PrepareReport) -> None:
        """Compare sota's binary.npy (if present) with the top-50 columns of the annotations; note disagreements."""
        binary_path, tags_path = self.split_dir / "binary.npy", self.split_dir / "tags.npy"
        if not binary_path.is_file():
            report.note("binary.npy not found: the labels were not cross-checked (they come from annotations_final.csv)")
            return
        order = list(TOP50_TAGS)
        if tags_path.is_file():
            order = [str(t) for t in np.load(tags_path, allow_pickle=False).tolist()]
            if sorted(order) != sorted(TOP50_TAGS):
                raise ValueError(f"{tags_path}: holds {len(order)} tags that are not the MTAT top-50 "
                                 f"(e.g. {sorted(set(order) - set(TOP50_TAGS))[:5]}); is it sota's split/mtat/tags.npy?")
        binary = np.load(binary_path, allow_pickle=False)
        rows = members["row"].to_numpy()
        if binary.ndim != 2 or binary.shape[1] != len(order) or binary.shape[0] <= rows.max(initial=-1):
            report.note(f"binary.npy has shape {binary.shape}, expected [>= {rows.max(initial=-1) + 1}, "
                        f"{len(order)}]: the labels were not cross-checked")
            return
        column = {t: j for j, t in enumerate(annotations.tags)}
        ours = annotations.labels[rows][:, [column[t] for t in order]]
        differ = (np.asarray(binary[rows]) != ours).any(axis=1)
        report.note(f"binary.npy agrees with annotations_final.csv on {int((~differ).sum())} of {len(rows)} clips"
                    + ("" if not differ.any() else
                       f"; differs on clip(s) {[annotations.clip_ids[r] for r in rows[differ]][:10]} "
                       "(labels taken from annotations_final.csv)"))

    def _members_pons(self, annotations: Annotations, report: PrepareReport) -> pd.DataFrame:
        """The clips of musicnn's three gt files: row (data row of annotations_final.csv), split."""
        row_of = {clip_id: i for i, clip_id in enumerate(annotations.clip_ids)}
        column = {t: j for j, t in enumerate(annotations.tags)}
        top50 = [column[t] for t in TOP50_TAGS]
        rows, splits, n_differ, differing = [], [], 0, []
        for split, file_name in PONS_FILES.items():
            for clip_id, vector in read_pons_gt(self.split_dir / file_name):
                if clip_id not in row_of:
                    report.skip("not in annotations", clip_id, f"listed in {file_name}, not in annotations_final.csv")
                    continue
                row = row_of[clip_id]
                if (annotations.labels[row, top50] != vector).any():
                    n_differ += 1
                    differing.append(clip_id)
                rows.append(row)
                splits.append(split)
        report.note(f"the gt files agree with annotations_final.csv on {len(rows) - n_differ} of {len(rows)} clips"
                    + (f"; differ on {differing[:10]} (labels taken from annotations_final.csv)" if n_differ else ""))
        self._check_pons_paths(annotations, report)
        return pd.DataFrame({"row": np.asarray(rows, dtype=np.int64), "split": splits})

    def _check_pons_paths(self, annotations: Annotations, report: PrepareReport) -> None:
        index_path = self.split_dir / "index_mtt.tsv"
        if not index_path.is_file():
            return
        path_of = dict(zip(annotations.clip_ids, annotations.paths))
        index = pd.read_csv(index_path, sep="\t", header=None, names=["clip_id", "mp3_path"], dtype=str,
                            keep_default_na=False)
        differ = [str(int(c)) for c, p in zip(index["clip_id"], index["mp3_path"])
                  if path_of.get(str(int(c))) != p.strip()]
        report.note(f"index_mtt.tsv: {len(index) - len(differ)} of {len(index)} paths agree with "
                    f"annotations_final.csv" + (f"; not {differ[:10]}" if differ else ""))

    def _usable(self, members: pd.DataFrame, annotations: Annotations, report: PrepareReport) -> pd.DataFrame:
        """Members that can be imported: track_id, row, split, mp3_path; the rest is reported."""
        unmatched = len(report.items("split entry mismatch")) + len(report.items("not in annotations"))
        report.n_candidates = len(members) + unmatched
        repeated = members["row"].duplicated(keep="first").to_numpy()
        for row, split in zip(members.loc[repeated, "row"], members.loc[repeated, "split"]):
            report.skip("listed twice", f"{annotations.clip_ids[row]} in {split}", "kept its first entry")
        members = members[~repeated].reset_index(drop=True)
        members["track_id"] = [annotations.clip_ids[r] for r in members["row"]]
        members["mp3_path"] = [annotations.paths[r] for r in members["row"]]
        keep = np.ones(len(members), dtype=bool)
        for i, (track_id, row) in enumerate(zip(members["track_id"], members["row"])):
            if track_id in KNOWN_BAD_CLIPS:
                report.skip("known bad audio", track_id, KNOWN_BAD_CLIPS[track_id])
                keep[i] = False
            elif row in annotations.bad_rows:
                report.skip("malformed annotation row", track_id, annotations.bad_rows[row])
                keep[i] = False
        absent = sorted(set(KNOWN_BAD_CLIPS) - set(members["track_id"]))
        if absent:
            report.note(f"known bad clip(s) {absent} (musicnn's list) are not in the {self.split} split files")
        listed = sorted(set(REPORTED_BROKEN) & set(members["track_id"]))
        if listed:
            report.note(f"clip(s) {listed} are reported broken by a third party (unverified): decoded like any other")
        return members[keep].reset_index(drop=True)

    def _labels(self, table: pd.DataFrame, labels: np.ndarray, tags: list[str], report: PrepareReport) -> Imported:
        train = (table["split"] == "train").to_numpy()
        n_train = labels[train].sum(axis=0)
        for j in np.flatnonzero(n_train == 0):
            report.skip("tag: no training clip", tags[j], "no positive in the train split")
        kept = np.flatnonzero(n_train > 0)
        labels, tags = labels[:, kept], [tags[j] for j in kept]
        untagged = ~labels.any(axis=1)
        if untagged.any():
            report.note(f"{int(untagged.sum())} clip(s) carry none of the {len(tags)} tags; kept (negatives for "
                        f"every tag, as musicnn's protocol evaluates them), per split "
                        f"{dict(Counter(table.loc[untagged, 'split']))}")
        missing_splits = sorted(set(SPLITS) - set(table["split"]))
        if missing_splits:
            report.note(f"no clip in split(s) {missing_splits}")
        categories = read_tag_categories()
        unknown = [t for t in tags if t not in categories]
        if unknown:
            report.note(f"tag(s) {unknown[:10]} are not in {CATEGORY_TABLE}: category '{OTHER_CATEGORY}'")
        table["artist"] = [clip_artist(p) for p in table["mp3_path"]]
        return Imported(tracks=table, tags=tags, categories=[categories.get(t, OTHER_CATEGORY) for t in tags],
                        labels=labels, name=f"{self.name}-{self.split}-{self.tags}")
