"""Import MSD500 (Won et al. 2021) into the prepared format (``data=msd500``).

Two sources (``source``):

- ``release``: the release's reproducible split (:mod:`tagretrieval.data.msd500.release`): its tracks, tags,
  labels and train/valid/test assignment as they are, its word vectors and (``cf=release``) its CF vectors.
- ``raw``: the reference preprocessing redone from ``track_tags.tsv`` (:mod:`tagretrieval.data.msd500.raw`):
  ``score >= min_score``, tags with a vector in every ``word_vector_files`` file, tracks with an artist, CF
  vector and spectrogram/audio, the top ``n_tags[split]`` tags, then an artist-disjoint 70/15/15 split
  redrawn (seeded) until every tag has ``min_positives_per_split[split]`` positives in every split.

Mels (``media``): ``spec`` brings the release's spectrograms into the mel cache
(:mod:`tagretrieval.data.msd500.specs`), ``audio`` computes them with our front end from ``audio_dir``,
``none`` makes a CF-only dataset. CF vectors (``cf``, :mod:`tagretrieval.data.msd500.cf_factors`): ``release`` (the
split folder's ``ix_to_cf.npy`` for ``source=release``, ``item_factors_MSD.npy`` + ``items_index_MSD.tsv``
for ``source=raw``), ``als`` (implicit ALS on the Taste Profile triplets) or ``none``.

The word vectors are stored in the prepared folder as ``word_vectors_<name>.npz`` (google, music) and read by
``tag_encoder=prepared``. Everything left out is in ``prepare_report.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tagretrieval.audio import MelFrontend, prepare_mels
from tagretrieval.data.msd500.cf_factors import (
    CFTable, als_item_factors, read_item_factors, read_sid_mismatches, read_triplets, song_of_track,
)
from tagretrieval.data.folder.importer import find_audio
from tagretrieval.data.importer import Imported, Importer, check_choice, skip_failed
from tagretrieval.data.inputs import AUDIO, CF
from tagretrieval.data.msd500.raw import (
    UNCATEGORISED, artist_of, label_matrix, read_categories, read_track_table, read_track_tags, top_tags,
    word_vector_tables,
)
from tagretrieval.data.msd500.release import (
    SPLIT_PREFIX, load_word_vector_pickle, read_release_split, word_vector_pickle,
)
from tagretrieval.data.msd500.specs import (
    RELEASE_MEL_PARAMS, UNVERIFIED_MEL_PARAMS, adopt_spectrograms, check_release_frontend, claim_mel_origin,
    spec_path,
)
from tagretrieval.data.prepared import check_finite_rows
from tagretrieval.data.report import PrepareReport
from tagretrieval.data.splits import artist_disjoint_split
from tagretrieval.tags.prepared import write_prepared_vectors
from tagretrieval.runtime.errors import DataError

SOURCES = ("release", "raw")
MEDIA = ("spec", "audio", "none")
CF_SOURCES = ("release", "als", "none")
RELEASE_WORD_VECTORS = ("google", "music")


def _choice(key: str, value: str, choices: Sequence[str]) -> str:
    check_choice(key, value, choices)
    return value


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _exists(path: Path | None) -> bool:
    return path is not None and path.exists()


class MSD500Importer(Importer):
    """Imports MSD500 (see the module docstring) into the prepared format at ``prepared_dir``."""

    def __init__(
        self,
        *,
        root: str,
        prepared_dir: str,
        source: str = "release",
        split: str = "msd100",
        word_vectors: str = "google",
        media: str = "spec",
        cf: str = "release",
        name: str = "msd500",
        annotations_dir: str | None = None,
        splits_dir: str | None = None,
        spec_dir: str | None = None,
        audio_dir: str | None = None,
        item_factors: str | None = None,
        item_index: str | None = None,
        track_table: str | None = None,
        triplets: str | None = None,
        sid_mismatches: str | None = None,
        word_vector_files: Mapping[str, str | None] | None = None,
        word_vector_dim: int = 300,
        word_vector_limit: int | None = None,
        trust_pickles: bool = False,
        min_score: float = 50.0,
        n_tags: Mapping[str, int] | None = None,
        min_positives_per_split: Mapping[str, int] | None = None,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        max_split_draws: int = 1000,
        pad_to_frames: int = 173,
        check_spec_values: bool = True,
        min_seconds: float = 0.5,
        als_factors: int = 200,
        als_iterations: int = 15,
        als_regularization: float = 0.01,
        als_alpha: float = 1.0,
        als_seed: int = 0,
        triplets_chunk_rows: int = 2_000_000,
        max_skipped_fraction: float = 0.1,
        num_workers: int = 0,
        cache_dtype: str = "float32",
    ) -> None:
        super().__init__(root=root, prepared_dir=prepared_dir, name=name, max_skipped_fraction=max_skipped_fraction,
                         num_workers=num_workers, cache_dtype=cache_dtype, min_seconds=min_seconds)
        self.data_source = _choice("source", source, SOURCES)
        self.split = _choice("split", split, tuple(SPLIT_PREFIX))
        self.media = _choice("media", media, MEDIA)
        self.cf = _choice("cf", cf, CF_SOURCES)
        self.word_vector_files = {k: v for k, v in dict(word_vector_files or {}).items() if v is not None}
        names = RELEASE_WORD_VECTORS if source == "release" else tuple(self.word_vector_files)
        self.word_vectors = _choice("word_vectors", word_vectors, names)
        self.annotations_dir, self.splits_dir = _path(annotations_dir), _path(splits_dir)
        self.spec_dir, self.audio_dir = _path(spec_dir), _path(audio_dir)
        self.item_factors, self.item_index = _path(item_factors), _path(item_index)
        self.track_table, self.triplets = _path(track_table), _path(triplets)
        self.sid_mismatches = _path(sid_mismatches)
        self._check_paths()
        self.word_vector_dim = word_vector_dim
        self.word_vector_limit = word_vector_limit
        self.trust_pickles = trust_pickles  # source=raw: a word-vector file may be a gensim pickle (.model/.kv)
        self.min_score = min_score
        self.n_tags = dict(n_tags or {}).get(split) if source == "raw" else None
        self.min_positives = dict(min_positives_per_split or {}).get(split) if source == "raw" else None
        if source == "raw" and (self.n_tags is None or self.min_positives is None):
            raise ValueError(f"source=raw needs data.n_tags.{split} and data.min_positives_per_split.{split}")
        self.split_fractions = tuple(split_fractions)
        self.split_seed = split_seed
        self.max_split_draws = max_split_draws
        self.pad_to_frames = pad_to_frames
        self.check_spec_values = check_spec_values
        self.als = dict(factors=als_factors, iterations=als_iterations, regularization=als_regularization,
                        alpha=als_alpha, seed=als_seed)
        self.triplets_chunk_rows = triplets_chunk_rows

    def _check_paths(self) -> None:
        """Raise ValueError naming every path key the chosen source, media and cf need but were not given."""
        needed = ["splits_dir"] if self.data_source == "release" else ["annotations_dir", "track_table"]
        needed += {"spec": ["spec_dir"], "audio": ["audio_dir"], "none": []}[self.media]
        if self.cf == "als":
            needed += ["triplets", "sid_mismatches", "track_table"]
        elif self.cf == "release" and self.data_source == "raw":
            needed += ["item_factors", "item_index"]
        missing = sorted({key for key in needed if getattr(self, key) is None})
        if missing:
            raise ValueError(f"source={self.data_source}, media={self.media}, cf={self.cf} need "
                             + ", ".join(f"data.{key}" for key in missing))

    def song_inputs(self) -> frozenset[str]:
        """What the import will hold for the song branch (:mod:`tagretrieval.data.inputs`): audio unless
        ``media=none``, CF vectors unless ``cf=none``."""
        return frozenset(({AUDIO} if self.media != "none" else set()) | ({CF} if self.cf != "none" else set()))

    # ---------------------------------------------------------------- idempotency
    def settings(self) -> dict:
        resolved = lambda p: None if p is None else str(p.resolve())  # noqa: E731
        out = {"source": self.data_source,
               "split": self.split, "media": self.media, "cf": self.cf,
               "annotations_dir": resolved(self.annotations_dir)}
        if self.data_source == "release":
            out["splits_dir"] = resolved(self.splits_dir)
            out["track_table"] = resolved(self.track_table) if _exists(self.track_table) else None
        else:
            out.update(word_vector_files={k: resolved(Path(v)) for k, v in sorted(self.word_vector_files.items())},
                       word_vector_limit=self.word_vector_limit, min_score=self.min_score, n_tags=self.n_tags,
                       min_positives_per_split=self.min_positives, split_fractions=list(self.split_fractions),
                       split_seed=self.split_seed, track_table=resolved(self.track_table))
        if self.media == "spec":
            out["mels"] = self._mel_origin()
        elif self.media == "audio":
            out["mels"] = {**self._mel_origin(), "min_seconds": self.min_seconds}
        if self.cf == "release" and self.data_source == "raw":
            out["cf_files"] = [resolved(self.item_factors), resolved(self.item_index)]
        elif self.cf == "als":
            out["cf_files"] = [resolved(self.triplets), resolved(self.track_table), resolved(self.sid_mismatches)]
            out["als"] = self.als
        return out

    def _mel_origin(self) -> dict:
        """Where the cached mels come from (``mels/origin.json``): a cache filled from elsewhere is refused."""
        if self.media == "spec":
            return {"media": "spec", "spec_dir": str(self.spec_dir.resolve()), "pad_to_frames": self.pad_to_frames,
                    "stated": RELEASE_MEL_PARAMS, "unverified": list(UNVERIFIED_MEL_PARAMS)}
        return {"media": self.media, "audio_dir": str(self.audio_dir.resolve())}

    # ---------------------------------------------------------------- import
    def read(self, report: PrepareReport, *, frontend: MelFrontend, progress: bool) -> Imported:
        if self.media == "spec":
            check_release_frontend(frontend)
        audio = find_audio(self.audio_dir, report) if self.media == "audio" else {}
        needs_table = self.data_source == "raw" or self.cf == "als" or _exists(self.track_table)
        track_table = read_track_table(self.track_table) if needs_table else None
        if self.data_source == "release":
            tracks, tags, labels, cf, vectors, categories = self._from_release(track_table, progress, report)
        else:
            tracks, tags, labels, cf, vectors, categories = self._from_raw(track_table, audio, progress, report)
        if self.word_vectors not in vectors:
            raise FileNotFoundError(f"data.word_vectors={self.word_vectors}: the data provides no such word "
                                    f"vectors (found: {sorted(vectors)})")
        keep = self._fill_mels(tracks, audio, frontend, progress, report)
        tracks, labels = tracks[keep].reset_index(drop=True), labels[keep]
        cf = None if cf is None else cf[keep]
        if self.data_source == "raw":
            tracks["split"] = self._draw_split(tracks, labels, report)
        if categories is None:
            report.note(f"no selected_tags.tsv/track_tags.tsv in {self.annotations_dir}: "
                        f"every tag is in category '{UNCATEGORISED}'")
        elif any(t not in categories for t in tags):
            report.note(f"tags without a category in {self.annotations_dir} (category '{UNCATEGORISED}'): "
                        f"{[t for t in tags if t not in categories]}")
        return self._write(tracks, tags, labels, cf, vectors, categories or {}, report)

    def _from_release(self, track_table: pd.DataFrame | None, progress: bool, report: PrepareReport):
        release = read_release_split(self.splits_dir, split=self.split, read_cf=self.cf == "release", report=report)
        report.note(f"source=release: the release's {self.split} split ({len(release.tags)} tags) is kept as is")
        tracks = pd.DataFrame({"track_id": release.track_ids, "split": release.splits})
        artists = {} if track_table is None else artist_of(track_table)
        if track_table is None:
            report.note(f"no track table ({self.track_table}): tracks.csv has no artists")
        tracks["artist"] = [artists.get(t, "") for t in tracks["track_id"]]
        labels, cf = release.labels, release.cf
        untagged = int((~labels.any(axis=1)).sum())
        if untagged:
            report.note(f"{untagged} track(s) of the release have no tag: kept (they count as negatives)")
        if cf is not None:
            check_finite_rows(cf, release.track_ids, what="CF vectors (ix_to_cf.npy)")
        elif self.cf == "als":
            keep, cf = self._cf_table(progress, report).align(release.track_ids, **self._song_map(track_table),
                                                              report=report)
            tracks, labels = tracks[keep].reset_index(drop=True), labels[keep]
        vectors = {}
        for name in RELEASE_WORD_VECTORS:
            path = word_vector_pickle(self.splits_dir, name, prefix=SPLIT_PREFIX[self.split])
            if path is None:
                report.note(f"no {name}_emb.pkl in {self.splits_dir}: no '{name}' word vectors")
                continue
            vectors[name] = load_word_vector_pickle(path, dim=self.word_vector_dim)
            missing = [t for t in release.tags if t not in vectors[name]]
            if missing:
                report.note(f"{path.name} has no vector for {len(missing)} tag(s): {missing}")
        categories = read_categories(self.annotations_dir) if _exists(self.annotations_dir) else None
        return tracks, release.tags, labels, cf, vectors, categories

    def _from_raw(self, track_table: pd.DataFrame, audio: dict[str, Path], progress: bool, report: PrepareReport):
        pairs = read_track_tags(self.annotations_dir / "track_tags.tsv", min_score=self.min_score, report=report)
        categories = read_categories(self.annotations_dir, track_tags=pairs)
        vectors = word_vector_tables(self.word_vector_files, sorted(set(pairs["tag"])), dim=self.word_vector_dim,
                                     limit=self.word_vector_limit, trust_pickles=self.trust_pickles)
        for tag in sorted(set(pairs["tag"])):
            lacking = [name for name, table in vectors.items() if tag not in table]
            if lacking:
                report.skip("tag: no word vector", tag, f"not in {', '.join(lacking)}")
        pairs = pairs[pairs["tag"].map(lambda t: all(t in table for table in vectors.values()))]
        tracks = pd.DataFrame({"track_id": sorted(set(pairs["track_id"]))})
        report.n_candidates = len(tracks)
        artists = artist_of(track_table)
        tracks["artist"] = [artists.get(t, "") for t in tracks["track_id"]]
        for track_id in tracks.loc[tracks["artist"] == "", "track_id"]:
            report.skip("no artist", track_id, f"not in {self.track_table.name}")
        tracks = tracks[tracks["artist"] != ""].reset_index(drop=True)
        cf = None
        if self.cf != "none":
            keep, cf = self._cf_table(progress, report).align(tracks["track_id"].tolist(),
                                                              **self._song_map(track_table), report=report)
            tracks = tracks[keep].reset_index(drop=True)
        keep = self._locate_media(tracks["track_id"], audio, report)
        tracks, cf = tracks[keep].reset_index(drop=True), None if cf is None else cf[keep]
        pairs = pairs[pairs["track_id"].isin(set(tracks["track_id"]))]
        tags = top_tags(pairs, self.n_tags, report=report)
        labels = label_matrix(tracks["track_id"].tolist(), pairs, tags)
        tagged = labels.any(axis=1)
        report.note(f"{int((~tagged).sum())} track(s) have no tag among the top {self.n_tags}: left out")
        tracks, labels = tracks[tagged].reset_index(drop=True), labels[tagged]
        return tracks, tags, labels, None if cf is None else cf[tagged], vectors, categories

    # ---------------------------------------------------------------- CF
    def _cf_table(self, progress: bool, report: PrepareReport) -> CFTable:
        if self.cf == "release":  # source=raw: the release's item factors
            return read_item_factors(self.item_factors, self.item_index)
        plays = read_triplets(self.triplets, chunk_rows=self.triplets_chunk_rows)
        report.note(f"{self.triplets.name}: {plays.plays.shape[0]} users, {plays.plays.shape[1]} songs, "
                    f"{plays.plays.nnz} (user, song) pairs; {plays.n_dropped_rows} unusable line(s) dropped")
        return als_item_factors(plays, factors=self.als["factors"], iterations=self.als["iterations"],
                                regularization=self.als["regularization"], alpha=self.als["alpha"],
                                seed=self.als["seed"], progress=progress)

    def _song_map(self, track_table: pd.DataFrame) -> dict:
        """``song_of``/``mismatched`` for :meth:`CFTable.align` (track ids -> Taste Profile song ids)."""
        if self.cf != "als":
            return {}
        if (track_table["song_id"] == "").all():
            raise ValueError(f"data.cf=als maps track ids to Taste Profile song ids through MSD's unique_tracks.txt; "
                             f"{self.track_table} has no song ids")
        song_of, mismatched = song_of_track(track_table["track_id"], track_table["song_id"],
                                            read_sid_mismatches(self.sid_mismatches))
        return {"song_of": song_of, "mismatched": mismatched}

    # ---------------------------------------------------------------- mels
    def _locate_media(self, track_ids: pd.Series, audio: dict[str, Path], report: PrepareReport) -> np.ndarray:
        """Which tracks have a spectrogram / audio file (the others are reported); all of them for media=none."""
        if self.media == "none":
            return np.ones(len(track_ids), dtype=bool)
        if self.media == "spec":
            found = np.array([spec_path(self.spec_dir, t).is_file() for t in track_ids], dtype=bool)
            reason, where = "missing spectrogram", self.spec_dir
        else:
            found = track_ids.isin(set(audio)).to_numpy()
            reason, where = "missing audio", self.audio_dir
        for track_id in track_ids[~found]:
            report.skip(reason, track_id, f"no file under {where}")
        return found

    def _fill_mels(self, tracks: pd.DataFrame, audio: dict[str, Path], frontend: MelFrontend, progress: bool,
                   report: PrepareReport) -> np.ndarray:
        """Fill ``prepared_dir/mels`` for ``tracks`` and set their ``audio_path``; returns the tracks that made it."""
        if self.media == "none":
            tracks["audio_path"] = ""
            report.note("media=none: no mels (cultural models only)")
            return np.ones(len(tracks), dtype=bool)
        cache = self.mel_store(frontend)
        claim_mel_origin(cache.root, self._mel_origin())
        if self.media == "spec":
            outcome = adopt_spectrograms(cache, self.spec_dir, tracks["track_id"].tolist(),
                                         pad_to_frames=self.pad_to_frames, check_values=self.check_spec_values,
                                         num_workers=self.num_workers, progress=progress)
            report.note(f"spectrograms: {outcome.how} (packed: cast to {self.cache_dtype}, zero-padded to "
                        f"{self.pad_to_frames} frames where shorter, stored time-major; cached: stored before)")
            tracks["audio_path"] = [str(spec_path(self.spec_dir, t).resolve()) for t in tracks["track_id"]]
        else:
            located = self._locate_media(tracks["track_id"], audio, report)
            items = [(t, audio[t]) for t in tracks.loc[located, "track_id"]]
            outcome = prepare_mels(cache, items, frontend, num_workers=self.num_workers,
                                   min_seconds=self.min_seconds, progress=progress)
            tracks["audio_path"] = [str(audio[t].resolve()) if t in audio else "" for t in tracks["track_id"]]
        skip_failed(outcome.skipped, report)
        return tracks["track_id"].isin(set(outcome.done)).to_numpy()

    # ---------------------------------------------------------------- split and write
    def _draw_split(self, tracks: pd.DataFrame, labels: np.ndarray, report: PrepareReport) -> np.ndarray:
        outcome = artist_disjoint_split(
            tracks["artist"].tolist(), labels, fractions=self.split_fractions, seed=self.split_seed,
            min_positives=self.min_positives, max_draws=self.max_split_draws,
        )
        if not outcome.satisfied:
            raise ValueError(
                f"{self.name}: no artist-disjoint split in {outcome.n_draws} draws gives every tag "
                f">= {self.min_positives} positives in every split (best draw: {outcome.min_positives}). "
                f"Raise data.max_split_draws, or lower data.min_positives_per_split.{self.split} or "
                f"data.n_tags.{self.split}."
            )
        report.note(f"artist-disjoint split {list(self.split_fractions)} (seed {self.split_seed}): "
                    f"{outcome.n_draws} draw(s), every tag has >= {outcome.min_positives} positives per split")
        return outcome.splits

    def _write(self, tracks: pd.DataFrame, tags: list[str], labels: np.ndarray, cf: np.ndarray | None,
               vectors: dict[str, dict[str, np.ndarray]], categories: dict[str, str],
               report: PrepareReport) -> Imported:
        if len(tracks) == 0:
            raise DataError(f"{self.name}: no track left to import from {self.root}; {report.counts}")
        return Imported(tracks=tracks, tags=tags, categories=[categories.get(t, UNCATEGORISED) for t in tags],
                        labels=labels, cf=cf, extras={"word_vectors": vectors})

    def write_extras(self, imported: Imported) -> None:
        """The word vectors, ``word_vectors_<name>.npz`` (read by ``tag_encoder=prepared``): each set replaces its
        file atomically; only then are sets this import no longer has removed, so a reader never finds a set
        missing that the data provides."""
        written = set()
        for name, table in imported.extras["word_vectors"].items():
            known = [t for t in imported.tags if t in table]
            values = np.array([table[t] for t in known], dtype=np.float32).reshape(len(known), self.word_vector_dim)
            written.add(write_prepared_vectors(self.prepared_dir, name, tags=known, vectors=values))
        for old in self.prepared_dir.glob("word_vectors_*.npz"):
            if old not in written:
                old.unlink(missing_ok=True)
