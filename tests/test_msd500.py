"""MSD500: a miniature copy of the release (DATA_FORMATS.md, section 1) imported both ways and trained on."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import string

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import read_metrics, run_task

from tagretrieval.audio import MelFrontend, MelStore, cache_params
from tagretrieval.data.msd500.cf_factors import (
    CFTable, als_item_factors, read_sid_mismatches, read_triplets, song_of_track,
)
from tagretrieval.data.msd500.importer import MSD500Importer
from tagretrieval.data.msd500.raw import read_track_tags, top_tags
from tagretrieval.data.msd500.release import RestrictedUnpickler, UnsafePickleError, load_word_vector_pickle
from tagretrieval.data.msd500.specs import adopt_spectrograms, spec_path
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.report import PrepareReport
from tagretrieval.tags.prepared import PreparedVectors

TAGS = ["80s", "acoustic", "happy", "hip hop", "jazz", "party", "rock", "spanish"]  # sorted, as tags.npy
CATEGORIES = {"80s": "decade", "acoustic": "instrument", "happy": "mood/character", "hip hop": "genre",
              "jazz": "genre", "party": "activity", "rock": "genre", "spanish": "language/origin"}
SUB_TAGS = ["happy", "jazz", "party", "rock", "spanish"]  # the MSD50 files (sub_ prefix)
N_TRACKS, N_ARTISTS, DIM, CF_DIM = 96, 24, 300, 200
SHORT, FLOAT64, CORRUPT, MISSING, NAN = (1, 2, 3), 4, 5, 6, 7  # track indices with a special spectrogram
MISMATCHED = (10, 11)  # tracks whose (song, track) pair is in sid_mismatches.txt
FAST = ["experiment=smoke", "trainer.max_epochs=1", "sampler.pairs_per_epoch=32", "progress=false", "logger=none",
        "tag_encoder=prepared"]


def msd_id(prefix: str, rng) -> str:
    return prefix + "".join(rng.choice(list(string.ascii_uppercase + string.digits), 16))


def write_msd(root, *, rng_seed: int = 0) -> dict:
    """A miniature MSD500 in ``root`` laid out as the extracted release archives, plus MSD/Taste Profile files."""
    rng = np.random.default_rng(rng_seed)
    ids = sorted({msd_id("TR", rng) for _ in range(N_TRACKS)})
    assert len(ids) == N_TRACKS
    songs = {t: msd_id("SO", rng) for t in ids}
    artist = {t: f"Artist {i // (N_TRACKS // N_ARTISTS)}" for i, t in enumerate(ids)}
    track_tags = {t: [TAGS[i % 8], TAGS[(i + 3) % 8], TAGS[(i + 5) % 8]] for i, t in enumerate(ids)}

    # msd500.tar.gz: track_tags.tsv (id, original_tag, cleaned_tag, category, score) and selected_tags.tsv
    (root / "msd500").mkdir(parents=True)
    rows = []
    for i, t in enumerate(ids):
        for tag in track_tags[t]:
            rows.append((t, f"{tag} music", tag.title() if i % 2 else tag, CATEGORIES[tag], int(rng.integers(50, 101))))
        rows.append((t, track_tags[t][0], track_tags[t][0], CATEGORIES[track_tags[t][0]], 100))  # same cleaned tag
        if i < 70:
            rows.append((t, "blues", "blues", "genre", int(rng.integers(0, 50))))  # popular, but score < 50
        if i < 50:
            rows.append((t, "xyzzy", "xyzzy", "genre", 90))  # no word vector
        if i < 3:
            rows.append((t, "polka", "polka", "genre", 90))  # rare
    pd.DataFrame(rows).to_csv(root / "msd500" / "track_tags.tsv", sep="\t", header=False, index=False)
    selected = {**CATEGORIES, "blues": "genre", "polka": "genre", "xyzzy": "genre"}
    pd.DataFrame(list(selected.items())).to_csv(root / "msd500" / "selected_tags.tsv", sep="\t", header=False,
                                                 index=False)

    # spectrograms spec/A/B/C/ID.npy, [128, n_frames]
    for i, t in enumerate(ids):
        if i == MISSING:
            continue
        path = spec_path(root / "spec", t)
        path.parent.mkdir(parents=True, exist_ok=True)
        if i == CORRUPT:
            path.write_bytes(b"\x93NUMPY garbage, not an array")
            continue
        mel = rng.standard_normal((128, 150 if i in SHORT else 200)).astype(np.float64 if i == FLOAT64 else np.float32)
        if i == NAN:
            mel[3, 7] = np.nan
        np.save(path, mel)

    # reproducible_splits.tar.gz: artist-disjoint split, rows = sorted ids
    splits_dir = root / "reproducible_splits"
    splits_dir.mkdir()
    split_of = {t: "train" if i < 68 else "valid" if i < 84 else "test" for i, t in enumerate(ids)}
    for prefix, tags in (("", TAGS), ("sub_", SUB_TAGS)):
        binaries = np.array([[float(tag in track_tags[t]) for tag in tags] for t in ids])
        np.save(splits_dir / f"{prefix}tags.npy", np.array(tags))
        np.save(splits_dir / f"{prefix}binaries.npy", binaries)
        for split in ("train", "valid", "test"):
            np.save(splits_dir / f"{prefix}{split}_ids.npy",
                    np.array([f"{row}//{t}" for row, t in enumerate(ids) if split_of[t] == split]))
        np.save(splits_dir / f"{prefix}ix_to_cf.npy", rng.standard_normal((N_TRACKS, CF_DIM)).astype(np.float32))
    vectors = {name: {tag: rng.standard_normal(DIM).astype(np.float32) for tag in TAGS} for name in ("google", "music")}
    for name, table in vectors.items():
        with open(splits_dir / f"{name}_emb.pkl", "wb") as f:
            pickle.dump(table, f, protocol=3)  # the reference wrote them with Python 3.7's default

    # word-vector files for source=raw: GoogleNews-style binary (gzipped) and a gensim Word2Vec model
    from gensim.models import KeyedVectors, Word2Vec

    words = ["80s", "acoustic", "happy", "hip_hop", "jazz", "party", "rock", "spanish", "blues", "polka"]
    google = KeyedVectors(vector_size=DIM)
    google.add_vectors(words, rng.standard_normal((len(words), DIM)).astype(np.float32))
    google.save_word2vec_format(str(root / "GoogleNews-vectors-negative300.bin.gz"), binary=True)
    (root / "music_w2v").mkdir()
    sentences = [["hip-hop", "80s", "acoustic", "happy", "jazz"], ["party", "rock", "spanish", "blues", "polka"]]
    Word2Vec(sentences=sentences, vector_size=DIM, min_count=1, seed=0, workers=1, epochs=1).save(
        str(root / "music_w2v" / "model_semeval_trigrams_300.model"))

    # MSD unique_tracks.txt, Taste Profile triplets and sid_mismatches.txt
    lines = [f"{t}<SEP>{songs[t]}<SEP>{artist[t]}<SEP>Song {i}" for i, t in enumerate(ids)]
    lines.append(f"{msd_id('TR', rng)}<SEP>{msd_id('SO', rng)}<SEP>Someone Else<SEP>Not in MSD500")
    (root / "unique_tracks.txt").write_text("\n".join(lines) + "\n")
    mismatches = [f"ERROR: <{songs[ids[i]]} {ids[i]}> {artist[ids[i]]} - Song {i}  !=  Other - Thing"
                  for i in MISMATCHED]
    (root / "sid_mismatches.txt").write_text("\n".join(mismatches) + "\n")
    users = ["".join(rng.choice(list("0123456789abcdef"), 40)) for _ in range(60)]
    triplets = [(u, songs[ids[j]], int(rng.integers(1, 20))) for u in users
                for j in rng.choice(N_TRACKS, 12, replace=False)]
    triplets += [(users[0], songs[t], 3) for t in ids]  # every song is played at least once
    pd.DataFrame(triplets).to_csv(root / "train_triplets.txt", sep="\t", header=False, index=False)

    # user_item_embs.tar.gz: item factors of every track but the first
    (root / "user_item_embs").mkdir()
    np.save(root / "user_item_embs" / "item_factors_MSD.npy", rng.standard_normal((N_TRACKS - 1, CF_DIM)))
    (root / "user_item_embs" / "items_index_MSD.tsv").write_text("\n".join(ids[1:]) + "\n")
    return {"ids": ids, "songs": songs, "artist": artist, "tags": track_tags, "split": split_of, "vectors": vectors}


@pytest.fixture(scope="module")
def msd_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "msd"
    return root, write_msd(root)


@pytest.fixture
def msd(msd_template, tmp_path):
    """A fresh copy of the miniature MSD per test (tests write prepared folders and damage files in it)."""
    template, truth = msd_template
    shutil.copytree(template, tmp_path / "msd")
    return tmp_path / "msd", truth


def skipped(prepared_dir) -> dict[str, set[str]]:
    report = json.loads((prepared_dir / "prepare_report.json").read_text())
    return {reason: set(items) for reason, items in report["skipped"].items()}


def metric_tags(run_dir) -> set[str]:
    metrics = read_metrics(run_dir)
    return set(metrics["per_tag"]) | set(metrics["skipped_tags"])


# ---------------------------------------------------------------------------------------------- end to end
def test_release_end_to_end(msd, tmp_path):
    root, truth = msd
    ids = truth["ids"]
    run_task(["data=msd500", f"data.root={root}", "data.word_vectors=music", "model=concat", *FAST], tmp_path / "run")
    assert metric_tags(tmp_path / "run") == set(TAGS)
    prepared = root / "prepared" / "release-msd100-spec"
    dataset = PreparedDataset.load(prepared)
    lost = {ids[i] for i in (CORRUPT, MISSING, NAN)}
    assert dataset.track_ids == [t for t in ids if t not in lost]  # the release's rows, in order
    assert dataset.tags == TAGS
    assert dataset.categories == ["decade", "instrument", "mood", "genre", "genre", "activity", "genre", "language"]
    assert dict(zip(dataset.track_ids, dataset.tracks["split"])) == {t: s for t, s in truth["split"].items()
                                                                       if t not in lost}
    assert dataset.tracks.loc[0, "artist"] == truth["artist"][ids[0]]
    expected = np.array([[tag in truth["tags"][t] for tag in TAGS] for t in dataset.track_ids])
    np.testing.assert_array_equal(dataset.labels, expected)
    assert dataset.cf.shape == (N_TRACKS - 3, CF_DIM)
    found = skipped(prepared)
    assert found["corrupt spectrogram"] == {ids[CORRUPT]}
    assert found["missing spectrogram"] == {ids[MISSING]}
    assert found["non-finite spectrogram"] == {ids[NAN]}

    cache = MelStore.open(prepared / "mels", frontend=MelFrontend())
    for i in SHORT:  # zero-padded to 173 frames, as the reference loader pads
        mel = cache.read(ids[i]).T  # the store is time-major
        original = np.load(spec_path(root / "spec", ids[i]))
        assert mel.shape == (128, 173) and (mel[:, 150:] == 0).all()
        np.testing.assert_array_equal(mel[:, :150], original)
    assert cache.read(ids[FLOAT64]).dtype == np.float32
    np.testing.assert_array_equal(cache.read(ids[0]).T, np.load(spec_path(root / "spec", ids[0])))  # as released
    origin = json.loads((prepared / "mels" / "origin.json").read_text())
    assert origin["media"] == "spec" and "log scaling" in origin["unverified"]

    table = PreparedVectors(prepared_dir=str(prepared), name="music").table()
    np.testing.assert_array_equal(table["hip hop"], truth["vectors"]["music"]["hip hop"])


def test_raw_end_to_end_with_als(msd, tmp_path):
    root, truth = msd
    ids = truth["ids"]
    small = ["data.n_tags.msd100=8", "data.min_positives_per_split.msd100=2"]
    # the release's music vectors are a gensim pickle (.model): read only when trusted
    run_task(["data=msd500", f"data.root={root}", "data.source=raw", "data.cf=als", "data.als_factors=16",
              "model=concat", "trust_pickles=true", *small, *FAST], tmp_path / "run")
    assert metric_tags(tmp_path / "run") == set(TAGS)
    prepared = root / "prepared" / "raw-msd100-spec"
    dataset = PreparedDataset.load(prepared)
    # blues is frequent but every one of its scores is < 50; xyzzy has no vector; polka is not in the top 8
    assert dataset.tags == TAGS
    assert dataset.categories[TAGS.index("happy")] == "mood"
    found = skipped(prepared)
    assert found["tag: no word vector"] == {"xyzzy"}
    assert found["tag: not in the top 8"] == {"polka"}
    assert "blues" not in set().union(*found.values())  # never even a candidate
    assert found["sid mismatch"] == {ids[i] for i in MISMATCHED}
    assert found["corrupt spectrogram"] == {ids[CORRUPT]} and found["missing spectrogram"] == {ids[MISSING]}
    assert set(dataset.track_ids) == set(ids) - {ids[i] for i in (*MISMATCHED, CORRUPT, MISSING, NAN)}
    # artist-disjoint, and every tag has >= 2 positives in every split
    assert (dataset.tracks.groupby("artist")["split"].nunique() == 1).all()
    for split in ("train", "valid", "test"):
        assert dataset.labels[dataset.split_indices(split)].sum(axis=0).min() >= 2
    assert dataset.cf.shape == (len(dataset.track_ids), 16) and np.isfinite(dataset.cf).all()
    stored = PreparedVectors(prepared_dir=str(prepared), name="google").table()
    assert sorted(stored) == TAGS


def test_release_msd50_cultural_without_mels(msd, tmp_path):
    root, _ = msd
    run_task(["data=msd500", f"data.root={root}", "data.split=msd50", "data.media=none", "model=cultural", *FAST],
             tmp_path / "run")
    assert metric_tags(tmp_path / "run") == set(SUB_TAGS)
    assert not (root / "prepared" / "release-msd50-none" / "mels").exists()


# ---------------------------------------------------------------------------------------------- importer units
def importer(root, **settings) -> MSD500Importer:
    paths = dict(annotations_dir=root / "msd500", splits_dir=root / "reproducible_splits", spec_dir=root / "spec",
                 audio_dir=root / "audio", item_factors=root / "user_item_embs" / "item_factors_MSD.npy",
                 item_index=root / "user_item_embs" / "items_index_MSD.tsv", track_table=root / "unique_tracks.txt",
                 triplets=root / "train_triplets.txt", sid_mismatches=root / "sid_mismatches.txt")
    word_vector_files = {"google": str(root / "GoogleNews-vectors-negative300.bin.gz")}
    kwargs = dict(root=str(root), prepared_dir=str(root / "prepared" / "x"), **{k: str(v) for k, v in paths.items()},
                  word_vector_files=word_vector_files, n_tags={"msd100": 8}, min_positives_per_split={"msd100": 2})
    kwargs.update(settings)
    return MSD500Importer(**kwargs)


def test_reimport_is_skipped_and_settings_change_triggers_it(msd):
    root, _ = msd
    first = importer(root, media="none").prepare(frontend=MelFrontend(), progress=False)
    manifest = root / "prepared" / "x" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = importer(root, media="none").prepare(frontend=MelFrontend(), progress=False)
    assert manifest.stat().st_mtime_ns == stamp and again.track_ids == first.track_ids
    importer(root, media="none", cf="none").prepare(frontend=MelFrontend(), progress=False)
    assert not (root / "prepared" / "x" / "cf.npy").exists()


def test_non_finite_release_cf_names_the_track(msd):
    root, truth = msd
    cf = np.load(root / "reproducible_splits" / "ix_to_cf.npy")
    cf[5, 3] = np.inf
    np.save(root / "reproducible_splits" / "ix_to_cf.npy", cf)
    with pytest.raises(ValueError, match=truth["ids"][5]):
        importer(root, media="none").prepare(frontend=MelFrontend(), progress=False)


def test_unsatisfiable_split_threshold_is_an_error(msd):
    root, _ = msd
    with pytest.raises(ValueError, match="max_split_draws"):
        importer(root, source="raw", media="none", cf="none", min_positives_per_split={"msd100": 30},
                 max_split_draws=20).prepare(frontend=MelFrontend(), progress=False)


def test_raw_from_audio_folder_and_release_item_factors(msd):
    root, truth = msd
    ids = truth["ids"]
    (root / "audio" / "x").mkdir(parents=True)
    t = np.arange(16000) / 22050  # 0.73 s
    for i, track_id in enumerate(ids[:-1]):  # the last one has no audio
        sf.write(root / "audio" / "x" / f"{track_id}.wav", 0.3 * np.sin(2 * np.pi * (200 + 5 * i) * t), 22050)
    dataset = importer(root, source="raw", media="audio", cf="release").prepare(frontend=MelFrontend(),
                                                                                progress=False)
    found = skipped(root / "prepared" / "x")
    assert found["missing audio"] == {ids[-1]}
    assert found["no CF vector"] == {ids[0]}  # not in items_index_MSD.tsv
    assert set(dataset.track_ids) == set(ids[1:-1])
    mel = MelStore.open(root / "prepared" / "x" / "mels", frontend=MelFrontend()).read(ids[1])
    assert mel.shape == (MelFrontend().n_frames(16000), 128)
    assert dataset.tracks["audio_path"].str.endswith(".wav").all()


# ---------------------------------------------------------------------------------------------- file readers
def test_score_filter_keeps_50_and_drops_49(tmp_path):
    path = tmp_path / "track_tags.tsv"
    path.write_text("TRA\trock music\tRock\tgenre\t50\nTRA\tsad\tsad\tmood/character\t49\n"
                    "TRB\tSad songs\tSad \tmood/character\t100\nTRB\tsad\tsad\tmood/character\t80\n")
    pairs = read_track_tags(path, min_score=50, report=PrepareReport(dataset="t"))
    assert sorted(map(tuple, pairs.to_numpy())) == [("TRA", "rock", "genre"), ("TRB", "sad", "mood")]


def test_top_tags_counts_tracks_and_breaks_ties_alphabetically():
    pairs = pd.DataFrame({"track_id": ["a", "b", "c", "a", "b", "c", "d", "a"],
                          "tag": ["x", "x", "x", "y", "y", "z", "z", "w"]})
    report = PrepareReport(dataset="t")
    assert top_tags(pairs, 2, report=report) == ["x", "y"]  # y and z tie at 2 tracks: y first
    assert set(report.items("tag: not in the top 2")) == {"z", "w"}


def test_restricted_unpickler_refuses_code_and_loads_vectors(tmp_path):
    class Exploit:
        def __reduce__(self):
            return os.system, ("echo owned > " + str(tmp_path / "owned"),)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"rock": Exploit()}))
    with pytest.raises(UnsafePickleError, match="system"):
        load_word_vector_pickle(path, dim=3)
    assert not (tmp_path / "owned").exists()
    with pytest.raises(UnsafePickleError):
        RestrictedUnpickler(open(tmp_path / "evil.pkl", "rb")).load()

    table = {"Rock": np.arange(3, dtype=np.float32), "hip hop": np.ones(3, dtype=np.float64)}
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(table, protocol=protocol))
        loaded = load_word_vector_pickle(path, dim=3)
        assert sorted(loaded) == ["hip hop", "rock"] and loaded["rock"].tolist() == [0, 1, 2]
    # as numpy 1.x wrote them (the release's pickles): numpy.core.multiarray
    legacy = pickle.dumps(table, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "legacy.pkl").write_bytes(legacy)
    assert load_word_vector_pickle(tmp_path / "legacy.pkl", dim=3)["hip hop"].tolist() == [1, 1, 1]


def test_sid_mismatches_are_parsed_and_never_mapped(tmp_path):
    path = tmp_path / "sid_mismatches.txt"
    path.write_text("ERROR: <SOVJQTR12A8C13F2E4 TRMMMYQ128F932D901> Faster Pussy cat  !=  Dedicated To My Love\n"
                    "\nnot a mismatch line\n")
    mismatches = read_sid_mismatches(path)
    assert mismatches == {("SOVJQTR12A8C13F2E4", "TRMMMYQ128F932D901")}
    song_of, mismatched = song_of_track(["TRMMMYQ128F932D901", "TRAAAAW128F429D538"],
                                        ["SOVJQTR12A8C13F2E4", "SOAAAAA12A8C000000"], mismatches)
    assert song_of == {"TRAAAAW128F429D538": "SOAAAAA12A8C000000"}
    table = CFTable(ids=["SOVJQTR12A8C13F2E4", "SOAAAAA12A8C000000"], vectors=np.eye(2, dtype=np.float32))
    report = PrepareReport(dataset="t")
    has, vectors = table.align(["TRMMMYQ128F932D901", "TRAAAAW128F429D538", "TRNOPLAYS"], song_of=song_of,
                               mismatched=mismatched, report=report)
    assert has.tolist() == [False, True, False] and vectors.tolist() == [[0, 1]]
    assert set(report.items("sid mismatch")) == {"TRMMMYQ128F932D901"}
    assert set(report.items("no CF vector")) == {"TRNOPLAYS"}


def test_als_vectors_shape_finite_and_seeded(tmp_path):
    path = tmp_path / "train_triplets.txt"
    rng = np.random.default_rng(0)
    users = [f"{u:040x}" for u in range(30)]
    songs = [f"SO{s:016d}" for s in range(20)]
    lines = [f"{u}\t{songs[s]}\t{int(rng.integers(1, 9))}" for u in users for s in rng.choice(20, 6, replace=False)]
    lines += [f"{users[0]}\t{songs[0]}\tnot-a-number", f"{users[1]}\t{songs[1]}\t0"]
    path.write_text("\n".join(lines) + "\n")
    plays = read_triplets(path, chunk_rows=17)  # odd chunks: codes must stay global across chunks
    assert plays.plays.shape == (30, 20) and plays.n_dropped_rows == 2
    assert plays.plays.sum() == sum(int(line.split("\t")[2]) for line in lines[:-2])
    a = als_item_factors(plays, factors=8, iterations=5, seed=3)
    b = als_item_factors(plays, factors=8, iterations=5, seed=3)
    c = als_item_factors(plays, factors=8, iterations=5, seed=4)
    assert a.vectors.shape == (20, 8) and a.vectors.dtype == np.float32 and np.isfinite(a.vectors).all()
    assert sorted(a.ids) == songs
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert not np.allclose(a.vectors, c.vectors)


def test_corrupt_and_truncated_spectrograms_are_skipped_and_reported(tmp_path):
    spec_dir = tmp_path / "spec"
    good, bad, truncated, wrong = "TRAAAAW128F429D538", "TRAAABD128F429CF47", "TRAAACN128F9355673", "TRAAADZ128F9348C2E"
    for track_id in (good, bad, truncated, wrong):
        spec_path(spec_dir, track_id).parent.mkdir(parents=True, exist_ok=True)
    np.save(spec_path(spec_dir, good), np.ones((128, 180), dtype=np.float32))
    spec_path(spec_dir, bad).write_bytes(b"not numpy")
    np.save(spec_path(spec_dir, truncated), np.ones((128, 180), dtype=np.float32))
    data = spec_path(spec_dir, truncated).read_bytes()
    spec_path(spec_dir, truncated).write_bytes(data[: len(data) // 2])
    np.save(spec_path(spec_dir, wrong), np.ones((96, 180), dtype=np.float32))
    cache = MelStore(tmp_path / "mels", frontend_params=cache_params(MelFrontend()))
    outcome = adopt_spectrograms(cache, spec_dir, [good, bad, truncated, wrong], pad_to_frames=173, progress=False)
    assert outcome.done == [good] and outcome.how == {"packed": 1}
    assert {t: r.split(":")[0] for t, r in outcome.skipped.items()} == {
        bad: "corrupt spectrogram", truncated: "corrupt spectrogram", wrong: "bad spectrogram shape"}
    again = adopt_spectrograms(cache, spec_dir, [good], pad_to_frames=173, progress=False)
    assert again.how == {"cached": 1}


def test_spectrograms_are_packed_time_major_without_a_temp_file_left(tmp_path):
    track_id = "TRAAAAW128F429D538"
    spec_path(tmp_path / "spec", track_id).parent.mkdir(parents=True)
    np.save(spec_path(tmp_path / "spec", track_id), np.arange(128 * 180, dtype=np.float32).reshape(128, 180))
    cache = MelStore(tmp_path / "mels", frontend_params=cache_params(MelFrontend()))
    outcome = adopt_spectrograms(cache, tmp_path / "spec", [track_id], pad_to_frames=173, progress=False)
    assert outcome.how == {"packed": 1}
    np.testing.assert_array_equal(cache.read(track_id), np.load(spec_path(tmp_path / "spec", track_id)).T)
    assert not [p for p in (tmp_path / "mels").iterdir() if p.name.endswith(".tmp")]


def test_prepared_vectors_need_an_import(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare the data first"):
        PreparedVectors(prepared_dir=str(tmp_path), name="google").vectors(["rock"], train_tag_lists=[])
