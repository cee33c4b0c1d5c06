"""The MSD500 annotation files and the reference tag selection, redone from them (``data.source=raw``).

``track_tags.tsv`` (``msd500.tar.gz``): tab-separated, no header, 5 columns ``id, original_tag, cleaned_tag,
category, score`` (score: Last.fm 0-100). ``selected_tags.tsv``: ``tag, category``, no header. Whether the
release already dropped ``score < 50`` is unverified, so the filter is always applied. Ids are MSD track ids
(``TR...``) or, unverified, song ids (``SO...``): both are accepted wherever an id is looked up.

Track-to-artist tables: MSD's ``unique_tracks.txt`` (``track<SEP>song<SEP>artist<SEP>title``, no header), or
a csv with a header holding ``track_id`` and ``artist`` columns.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from tagretrieval.data.report import PrepareReport
from tagretrieval.tags.encoders import Word2VecFile

UNCATEGORISED = "all"
MSD_SEPARATOR = "<SEP>"


def normalise_tag(text: str) -> str:
    """Lowercase, single spaces: ``" Hip  Hop"`` -> ``"hip hop"`` (the release's tags.npy is lowercase)."""
    return " ".join(str(text).split()).lower()


def normalise_category(text: str) -> str:
    """``"mood/character"`` -> ``"mood"``, ``"language/origin"`` -> ``"language"``: metric keys forbid ``/``."""
    category = str(text).split("/")[0].strip().lower()
    return category or UNCATEGORISED


def _read_tsv(path: Path, n_columns: int) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"MSD500 annotation file not found: {path} (set data.annotations_dir to the "
                                "folder extracted from msd500.tar.gz)")
    table = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    if table.shape[1] != n_columns:
        raise ValueError(f"{path}: {table.shape[1]} tab-separated columns, expected {n_columns}")
    return table


def read_track_tags(path: Path, *, min_score: float, report: PrepareReport) -> pd.DataFrame:
    """``track_tags.tsv`` -> one row per (track_id, tag) with ``score >= min_score``: track_id, tag, category.

    Tags are the cleaned tags (3rd column), normalised by :func:`normalise_tag`; categories are normalised by
    :func:`normalise_category`. Rows with an unreadable score are left out and counted in a report note.
    """
    table = _read_tsv(path, 5)
    table.columns = ["track_id", "original_tag", "tag", "category", "score"]
    score = pd.to_numeric(table["score"], errors="coerce")
    unreadable = score.isna()
    if unreadable.any():
        lines = (np.flatnonzero(unreadable.to_numpy()) + 1).tolist()
        report.note(f"{path.name}: {len(lines)} row(s) with an unreadable score left out (lines {lines[:10]}...)")
    kept = score >= min_score
    report.note(f"{path.name}: kept {int(kept.sum())} of {len(table)} annotations with score >= {min_score:g}")
    table = table[kept.to_numpy()]
    out = pd.DataFrame({
        "track_id": table["track_id"].str.strip().to_numpy(),
        "tag": [normalise_tag(t) for t in table["tag"]],
        "category": [normalise_category(c) for c in table["category"]],
    })
    out = out[(out["track_id"] != "") & (out["tag"] != "")]
    return out.drop_duplicates(["track_id", "tag"]).reset_index(drop=True)


def read_categories(annotations_dir: Path, *, track_tags: pd.DataFrame | None = None) -> dict[str, str] | None:
    """tag -> category from ``selected_tags.tsv``, else the most common category column of ``track_tags``
    (a frame from :func:`read_track_tags`, or the file read here), else None when neither file exists."""
    selected = annotations_dir / "selected_tags.tsv"
    if selected.exists():
        table = _read_tsv(selected, 2)
        return {normalise_tag(t): normalise_category(c) for t, c in zip(table[0], table[1])}
    if track_tags is None:
        path = annotations_dir / "track_tags.tsv"
        if not path.exists():
            return None
        table = _read_tsv(path, 5)
        track_tags = pd.DataFrame({"tag": [normalise_tag(t) for t in table[2]],
                                   "category": [normalise_category(c) for c in table[3]]})
    counts = track_tags.groupby(["tag", "category"]).size().reset_index(name="n")
    counts = counts.sort_values(["tag", "n", "category"], ascending=[True, False, True])
    return dict(zip(counts.drop_duplicates("tag")["tag"], counts.drop_duplicates("tag")["category"]))


def word_vector_tables(files: Mapping[str, str], tags: Iterable[str], *, dim: int, limit: int | None,
                       trust_pickles: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """For each named gensim-readable file, tag -> vector ``[dim]`` of the tags it has a vector for.

    Looked up with :meth:`Word2VecFile.lookup`: a spelling variant (``hip hop`` -> ``hip_hop``/``hip-hop``),
    else the mean of the words' vectors. The reference asked GoogleNews for the exact string only, so a few
    multi-word tags it dropped are kept here. A gensim pickle (the release's ``music_w2v/*.model``) is read only
    with ``trust_pickles`` (:class:`Word2VecFile`; its error says how to convert the file instead).
    """
    tables = {}
    for name, path in files.items():
        encoder = Word2VecFile(path=str(path), dim=dim, limit=limit, trust_pickle=trust_pickles)
        found = {tag: encoder.lookup(tag) for tag in tags}
        tables[name] = {tag: vector for tag, vector in found.items() if vector is not None}
    return tables


def top_tags(track_tags: pd.DataFrame, n_tags: int, *, report: PrepareReport) -> list[str]:
    """The ``n_tags`` tags with the most tracks (ties: alphabetical), sorted; the others are reported."""
    counts = Counter(track_tags["tag"])
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    for tag, count in ranked[n_tags:]:
        report.skip(f"tag: not in the top {n_tags}", tag, f"{count} tracks")
    return sorted(tag for tag, _ in ranked[:n_tags])


def label_matrix(track_ids: list[str], track_tags: pd.DataFrame, tags: list[str]) -> np.ndarray:
    """uint8 ``[n_tracks, n_tags]``: 1 where (track_ids[i], tags[j]) is a row of ``track_tags``."""
    row = {t: i for i, t in enumerate(track_ids)}
    column = {t: j for j, t in enumerate(tags)}
    pairs = track_tags[track_tags["track_id"].isin(row) & track_tags["tag"].isin(column)]
    labels = np.zeros((len(track_ids), len(tags)), dtype=np.uint8)
    labels[pairs["track_id"].map(row).to_numpy(), pairs["tag"].map(column).to_numpy()] = 1
    return labels


def read_track_table(path: Path) -> pd.DataFrame:
    """A track table -> DataFrame track_id, song_id, artist (song_id is empty for a ``track_id,artist`` csv).

    MSD's ``unique_tracks.txt`` (``track<SEP>song<SEP>artist<SEP>title``; titles are not kept) is recognised
    by its separator; a line without 4 fields raises ValueError naming it. Anything else is read as a csv with
    a header holding ``track_id`` and ``artist``.
    """
    if not path.exists():
        raise FileNotFoundError(f"track table not found: {path} (MSD's unique_tracks.txt or a csv "
                                "track_id,artist; set data.track_table)")
    with open(path, encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    if MSD_SEPARATOR not in first:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table.columns = [c.strip().lower() for c in table.columns]
        if not {"track_id", "artist"} <= set(table.columns):
            raise ValueError(f"{path}: expected MSD's unique_tracks.txt or a csv with columns track_id, artist "
                             f"(found {list(table.columns)})")
        return pd.DataFrame({"track_id": table["track_id"].str.strip(), "song_id": "",
                             "artist": table["artist"].str.strip()})
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split(MSD_SEPARATOR, 3)
            if len(fields) != 4:
                raise ValueError(f"{path}:{number}: expected track<SEP>song<SEP>artist<SEP>title, got {line!r}")
            rows.append((fields[0].strip(), fields[1].strip(), fields[2].strip()))
    return pd.DataFrame(rows, columns=["track_id", "song_id", "artist"])


def artist_of(track_table: pd.DataFrame) -> dict[str, str]:
    """id -> artist for the track ids and (where known) the song ids of a :func:`read_track_table` frame."""
    songs = track_table[track_table["song_id"] != ""]
    return {**dict(zip(songs["song_id"], songs["artist"])), **dict(zip(track_table["track_id"], track_table["artist"]))}
