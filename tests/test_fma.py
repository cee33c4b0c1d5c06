"""FMA import (``data=fma``) on a miniature copy of the real on-disk format (docs: DATA_FORMATS.md section 2).

The miniature has the real files and quirks: tracks.csv with two header rows, the ``track_id`` line, 52
columns, list literals, quoted newlines in free text; genres.csv; features.csv with three header rows and
the ``track_id`` line (518 columns); MP3 clips at ``fma_<subset>/155/155320.mp3`` with mixed rates and
channel counts; the six known-bad fma_small clips (short or empty), a corrupt MP3 and a missing one.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch
import soundfile as sf

from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.baselines import fma_genres
from tagretrieval.data.fma import importer as fma

from conftest import read_metrics, run_task

TRACK_HEADER = (
    [("album", c) for c in ("comments", "date_created", "date_released", "engineer", "favorites", "id",
                            "information", "listens", "producer", "tags", "title", "tracks", "type")]
    + [("artist", c) for c in ("active_year_begin", "active_year_end", "associated_labels", "bio", "comments",
                               "date_created", "favorites", "id", "latitude", "location", "longitude", "members",
                               "name", "related_projects", "tags", "website", "wikipedia_page")]
    + [("set", "split"), ("set", "subset")]
    + [("track", c) for c in ("bit_rate", "comments", "composer", "date_created", "date_recorded", "duration",
                              "favorites", "genre_top", "genres", "genres_all", "information", "interest",
                              "language_code", "license", "listens", "lyricist", "number", "publisher", "tags",
                              "title")]
)
# genre_id -> (title, parent); Thrash is three levels deep, Old-Time / Historic has a '/' in its title
GENRES = {
    12: ("Rock", 0), 15: ("Electronic", 0), 21: ("Hip-Hop", 0), 8: ("Old-Time / Historic", 0),
    25: ("Punk", 12), 31: ("Metal", 12), 101: ("Thrash", 31), 236: ("Ambient Electronic", 15),
    100: ("Alternative Hip-Hop", 21), 999: ("Unused", 0),
}
GENRE_CHOICES = {12: [[25], [101], [12]], 15: [[236], [15]], 21: [[100], [21]], 8: [[8]]}
FEATURES = [("chroma_cens", 12), ("chroma_cqt", 12), ("chroma_stft", 12), ("mfcc", 20), ("rmse", 1),
            ("spectral_bandwidth", 1), ("spectral_centroid", 1), ("spectral_contrast", 7), ("spectral_rolloff", 1),
            ("tonnetz", 6), ("zcr", 1)]
STATISTICS = ("kurtosis", "max", "mean", "median", "min", "skew", "std")
SMALL_IDS = [2, 3, 5, 10, 20, 26, 30, 46, 48, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146,
             147, 148, *(int(t) for t in fma.KNOWN_BAD_CLIPS)]
MEDIUM_IDS = [155320 + i for i in range(14)]
LARGE_IDS = [200000, 200001]
CORRUPT, NO_AUDIO_FILE, NO_FEATURES, NAN_FEATURES, MULTI_ROOT = "155321", "155322", "000134", "000135", "155323"


def ancestors(genre: int) -> list[int]:
    out = []
    while genre:
        out.append(genre)
        genre = GENRES[genre][1]
    return out


def root_of(genre: int) -> int:
    return ancestors(genre)[-1]


def track_rows() -> list[dict]:
    """One dict per track: id, subset, split, artist, root genre, genres, genres_all."""
    rows = []
    roots_small, roots_medium = [12, 15, 21], [12, 15, 21, 8]
    for subset, ids in (("small", SMALL_IDS), ("medium", MEDIUM_IDS), ("large", LARGE_IDS)):
        roots = roots_small if subset == "small" else roots_medium
        for i, track_id in enumerate(ids):
            root = roots[i % len(roots)]
            genres = GENRE_CHOICES[root][(i // len(roots)) % len(GENRE_CHOICES[root])]
            artist = {"small": 0, "medium": 100, "large": 200}[subset] + i // 2  # two tracks per artist
            split = {0: "training", 1: "training", 2: "training", 3: "validation", 4: "test"}[(i // 2) % 5]
            if f"{track_id:06d}" == MULTI_ROOT:
                genres = [25, 236]
            genres_all = sorted({a for g in genres for a in ancestors(g)})
            top = {root_of(g) for g in genres}
            rows.append({"id": track_id, "subset": subset, "split": split, "artist": artist, "genres": genres,
                         "genres_all": genres_all, "genre_top": GENRES[top.pop()][0] if len(top) == 1 else ""})
    return rows


def write_tracks_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", *(g for g, _ in TRACK_HEADER)])
        writer.writerow(["", *(c for _, c in TRACK_HEADER)])
        writer.writerow(["track_id"] + [""] * len(TRACK_HEADER))
        for row in rows:
            values = {
                ("album", "information"): "<p>Recorded live,\nin one take</p>",
                ("album", "tags"): "[]", ("album", "title"): f"Album {row['artist']}",
                ("artist", "bio"): f'<p>Line one of the "bio", with a comma\nLine two of {row["artist"]}</p>',
                ("artist", "id"): str(row["artist"]), ("artist", "name"): f"Artist {row['artist']}",
                ("set", "split"): row["split"], ("set", "subset"): row["subset"],
                ("track", "duration"): "30", ("track", "genre_top"): row["genre_top"],
                ("track", "genres"): str(row["genres"]), ("track", "genres_all"): str(row["genres_all"]),
                ("track", "information"): "", ("track", "tags"): "['loud', 'live']",
                ("track", "title"): f"Song {row['id']}", ("track", "listens"): "123",
            }
            writer.writerow([row["id"], *(values.get(column, "") for column in TRACK_HEADER)])


def feature_columns() -> list[tuple[str, str, str]]:
    return [(name, statistic, f"{k:02d}") for name, n in FEATURES for statistic in STATISTICS
            for k in range(1, n + 1)]


def features_for(rows, columns) -> dict[str, np.ndarray]:
    """Genre-separable features: the root genre shifts a block of columns."""
    rng = np.random.default_rng(0)
    roots = sorted({g for g, (_, parent) in GENRES.items() if parent == 0})
    out = {}
    for row in rows:
        values = rng.standard_normal(len(columns))
        if row["genre_top"]:
            values[roots.index(root_of(row["genres"][0])) * 10: roots.index(root_of(row["genres"][0])) * 10 + 10] += 4
        out[f"{row['id']:06d}"] = values * 10.0 ** (np.arange(len(columns)) % 4)  # wildly different scales
    return out


def write_features_csv(path, rows):
    columns = feature_columns()
    assert len(columns) == 518
    values = features_for(rows, columns)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for level, label in enumerate(("feature", "statistics", "number")):
            writer.writerow([label, *(c[level] for c in columns)])
        writer.writerow(["track_id"] + [""] * len(columns))
        for row in rows:
            key = f"{row['id']:06d}"
            if key == NO_FEATURES:
                continue
            cells = [f"{v:.6e}" for v in values[key]]
            if key == NAN_FEATURES:
                cells[7] = ""
            writer.writerow([row["id"], *cells])


def write_clip(path, *, seconds, sample_rate, channels, freq_hz):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * freq_hz * t) + 0.05 * np.sin(2 * np.pi * 3 * freq_hz * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([y] * channels, axis=1) if channels > 1 else y, sample_rate, format="MP3")


def write_audio(audio_dir, rows, *, seconds=2.5):
    for i, row in enumerate(rows):
        key = f"{row['id']:06d}"
        path = fma.fma_audio_path(audio_dir, key)
        if key == NO_AUDIO_FILE:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if key in fma.KNOWN_BAD_CLIPS[3:] or key == CORRUPT:
            path.write_bytes(b"" if key != CORRUPT else b"ID3\x03\x00\x00\x00garbage, not an mp3 frame")
            continue
        rate, channels = [(44100, 2), (22050, 1), (48000, 2)][i % 3]
        length = 0.4 if key in fma.KNOWN_BAD_CLIPS else seconds
        write_clip(path, seconds=length, sample_rate=rate, channels=channels, freq_hz=110.0 * 2 ** (i % 12 / 12))


@pytest.fixture(scope="module")
def fma_root(tmp_path_factory):
    """Metadata for small/medium/large, audio for fma_small and fma_medium (medium = small + medium)."""
    root = tmp_path_factory.mktemp("fma")
    rows = track_rows()
    (root / "fma_metadata").mkdir()
    write_tracks_csv(root / "fma_metadata" / "tracks.csv", rows)
    pd.DataFrame([{"genre_id": g, "#tracks": 1, "parent": p, "title": t, "top_level": root_of(g)}
                  for g, (t, p) in GENRES.items()]).to_csv(root / "fma_metadata" / "genres.csv", index=False)
    write_features_csv(root / "fma_metadata" / "features.csv", rows)
    write_audio(root / "fma_small", [r for r in rows if r["subset"] == "small"])
    write_audio(root / "fma_medium", [r for r in rows if r["subset"] in ("small", "medium")])
    return root


def importer(root, **settings):
    subset, kind = settings.get("subset", "small"), settings.get("input", "features")
    defaults = dict(root=str(root), prepared_dir=str(root / "prepared" / f"{subset}-{kind}"),
                    audio_dir=str(root / f"fma_{subset}"), max_skipped_fraction=0.5)
    return fma.FMAImporter(**{**defaults, **settings})


def report_of(dataset) -> dict:
    return json.loads((dataset.root / "prepare_report.json").read_text())


# -- parsing ------------------------------------------------------------------------------------------------
def test_audio_paths_use_the_zero_padded_id_and_its_first_three_digits(tmp_path):
    assert fma.fma_audio_path(tmp_path, 155320) == tmp_path / "155" / "155320.mp3"
    assert fma.fma_audio_path(tmp_path, "2") == tmp_path / "000" / "000002.mp3"


def test_genre_lists_are_python_literals():
    assert fma.parse_genre_list("[76, 103]") == [76, 103]
    assert fma.parse_genre_list("[]") == []
    for bad in ("[76, 'x']", "76, 103", "{76}", "[True]", "[76,"):
        with pytest.raises(ValueError, match="genre"):
            fma.parse_genre_list(bad)


def test_read_tracks_survives_quoted_newlines_and_the_track_id_line(fma_root):
    tracks = fma.read_tracks(fma_root / "fma_metadata" / "tracks.csv")
    rows = track_rows()
    assert tracks["track_id"].tolist() == [f"{r['id']:06d}" for r in rows]
    assert tracks.loc[tracks["track_id"] == "155320", "genres_all"].item() == str(rows[len(SMALL_IDS)]["genres_all"])
    assert set(tracks["subset"]) == {"small", "medium", "large"}
    assert tracks.loc[tracks["track_id"] == MULTI_ROOT, "genre_top"].item() == ""
    raw = pd.read_csv(fma_root / "fma_metadata" / "tracks.csv", header=[0, 1], index_col=0)
    assert raw.shape == (len(rows), 52) and "\n" in raw[("artist", "bio")].iloc[0]


def test_read_tracks_names_missing_columns(tmp_path):
    path = tmp_path / "tracks.csv"
    path.write_text(",album\n,title\ntrack_id,\n2,x\n")
    with pytest.raises(ValueError, match="set/split"):
        fma.read_tracks(path)


def test_read_features_keeps_the_three_header_levels_and_order(fma_root):
    ids, values, names = fma.read_features(fma_root / "fma_metadata" / "features.csv")
    assert values.shape == (len(track_rows()) - 1, 518) and values.dtype == np.float32
    assert names[0] == "chroma_cens/kurtosis/01" and names[-1] == "zcr/std/01"
    expected = features_for(track_rows(), feature_columns())
    assert np.allclose(values[ids.index("155320")], expected["155320"], rtol=1e-5)
    assert np.isnan(values[ids.index(NAN_FEATURES), 7])


def test_duplicate_genre_titles_get_their_id():
    genres = pd.DataFrame({"parent": [0, 0, 1], "title": ["Rock", "Pop", "Pop"], "top_level": [0, 1, 1]},
                          index=pd.Index([1, 2, 3], name="genre_id"))
    assert fma.genre_tag_names(genres) == {1: "Rock", 2: "Pop (2)", 3: "Pop (3)"}


def test_features_model_rebuilds_from_its_spec_and_checks_its_input():
    import torch

    from tagretrieval.models import build_from_spec
    from tagretrieval.models.features import FeaturesModel

    torch.manual_seed(0)
    model = FeaturesModel(word_dim=8, embedding_dim=4, hidden_dim=16, n_features=518)
    features = torch.randn(32, 518) * 10.0 ** (torch.arange(518) % 4)  # FMA-like scales
    model.embed_songs(features=features)  # training mode: updates the running statistics
    rebuilt = build_from_spec(model.spec())
    assert isinstance(rebuilt, FeaturesModel) and rebuilt.spec() == model.spec()
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        songs = model.embed_songs(features=features[:5])
        chunks = rebuilt.embed_song_chunks(None, None, features=features[:5])  # the evaluation entry point
    assert songs.shape == (5, 4) and torch.equal(songs, chunks)
    with pytest.raises(ValueError, match=r"\[batch, 518\]"):
        model.embed_songs(features=torch.randn(2, 517))
    with pytest.raises(ValueError, match="needs features"):
        model.embed_songs(mel=torch.randn(2, 128, 173))


# -- importing ----------------------------------------------------------------------------------------------
def test_small_genres_all_features(fma_root):
    dataset = importer(fma_root).prepare(frontend=MelFrontend(), progress=False)
    assert dataset.name == "fma-small"
    # every genre of the hierarchy that occurs in small, by title; roots are 'genre', the rest 'subgenre'
    assert dataset.tags == sorted(["Rock", "Punk", "Metal", "Thrash", "Electronic", "Ambient Electronic",
                                   "Hip-Hop", "Alternative Hip-Hop"])
    category = dict(zip(dataset.tags, dataset.categories))
    assert category["Rock"] == "genre" and category["Thrash"] == "subgenre" and category["Metal"] == "subgenre"
    # genres_all: a Thrash track is also Metal and Rock
    thrash = dataset.labels[:, dataset.tags.index("Thrash")].astype(bool)
    assert thrash.any() and dataset.labels[thrash][:, [dataset.tags.index("Metal"), dataset.tags.index("Rock")]].all()
    assert set(dataset.tracks["split"]) == {"train", "valid", "test"}
    assert (dataset.tracks.groupby("artist")["split"].nunique() == 1).all()
    assert dataset.features.shape == (len(dataset.tracks), 518)
    report = report_of(dataset)
    assert set(report["skipped"]["known bad audio"]) == set(fma.KNOWN_BAD_CLIPS)
    assert set(report["skipped"]["missing features"]) == {NO_FEATURES}
    assert set(report["skipped"]["non-finite features"]) == {NAN_FEATURES}
    assert report["n_candidates"] == len(SMALL_IDS) and report["n_kept"] == len(SMALL_IDS) - 8
    assert not any(t.startswith("155") for t in dataset.track_ids)
    # a second prepare reuses the import
    stamp = (dataset.root / "manifest.json").stat().st_mtime_ns
    importer(fma_root).prepare(frontend=MelFrontend(), progress=False)
    assert (dataset.root / "manifest.json").stat().st_mtime_ns == stamp


def test_medium_genre_top_is_single_label_and_includes_small(fma_root):
    dataset = importer(fma_root, subset="medium", tags="genre_top").prepare(frontend=MelFrontend(), progress=False)
    assert dataset.tags == ["Electronic", "Hip-Hop", "Old-Time / Historic", "Rock"]
    assert set(dataset.categories) == {"genre"}
    assert (dataset.labels.sum(axis=1) == 1).all()
    assert {"000002", "155320"} <= set(dataset.track_ids)
    assert MULTI_ROOT not in dataset.track_ids and not any(t.startswith("2000") for t in dataset.track_ids)
    report = report_of(dataset)
    assert any("have no genre_top" in note and MULTI_ROOT in note for note in report["notes"])
    assert report["n_candidates"] == len(SMALL_IDS) + len(MEDIUM_IDS) - 1


def test_audio_input_skips_and_reports_bad_clips(fma_root):
    dataset = importer(fma_root, subset="medium", input="audio").prepare(frontend=MelFrontend(), progress=False)
    report = report_of(dataset)
    assert set(report["skipped"]["known bad audio"]) == set(fma.KNOWN_BAD_CLIPS)
    assert set(report["skipped"]["missing audio"]) == {NO_AUDIO_FILE}
    assert set(report["skipped"]["decode error"]) == {CORRUPT}
    assert dataset.features is None and dataset.has_mels
    kept = set(dataset.track_ids)
    assert {NO_FEATURES, NAN_FEATURES} <= kept  # their audio is fine: features.csv is not read
    assert set(MelStore.open(dataset.root / "mels", frontend=MelFrontend()).track_ids) == kept
    assert all(path.endswith(".mp3") and "/fma_medium/" in path for path in dataset.tracks["audio_path"])


def test_too_many_skipped_fails_after_writing_the_report(fma_root, tmp_path):
    with pytest.raises(Exception, match="prepare_report.json"):
        importer(fma_root, prepared_dir=str(tmp_path / "p"), max_skipped_fraction=0.01).prepare(
            frontend=MelFrontend(), progress=False)
    assert (tmp_path / "p" / "prepare_report.json").exists()


def test_bad_settings_are_refused(fma_root, tmp_path):
    for key, value in (("subset", "tiny"), ("tags", "genres"), ("input", "mel")):
        with pytest.raises(ValueError, match=f"data.{key}"):
            importer(fma_root, **{key: value})
    with pytest.raises(FileNotFoundError, match="fma_large"):
        importer(fma_root, subset="large", input="audio", prepared_dir=str(tmp_path / "p")).prepare(
            frontend=MelFrontend(), progress=False)


def test_paper_baselines_on_separable_features(fma_root):
    dataset = importer(fma_root, subset="medium", tags="genre_top").prepare(frontend=MelFrontend(), progress=False)
    out = fma_genres.top_genre_baselines(dataset)
    assert out["n_classes"] == 4 and out["n_test"] == int((dataset.tracks["split"] == "test").sum())
    assert out["accuracy"]["logistic_regression"] >= 0.8 and out["accuracy"]["svm"] >= 0.5
    with pytest.raises(ValueError, match="genre_top"):
        fma_genres.top_genre_baselines(importer(fma_root).prepare(frontend=MelFrontend(), progress=False))


# -- end to end: python main.py data=fma ... (every pair of subset x tags x input values is covered) ----------
@pytest.mark.parametrize("subset, tags, kind", [
    ("small", "genres_all", "features"), ("small", "genre_top", "audio"),
    ("medium", "genres_all", "audio"), ("medium", "genre_top", "features"),
])
def test_main_trains_and_evaluates(fma_root, tmp_path, capsys, subset, tags, kind):
    # features: the dataset's own command, `data=fma data.root=R` (model=auto picks model=features); audio: model=
    model = [] if kind == "features" else ["model=acoustic"]
    run_task(["data=fma", f"data.root={fma_root}", f"data.subset={subset}", f"data.tags={tags}",
              f"data.input={kind}", "data.max_skipped_fraction=0.5", *model, "experiment=smoke",
              "trainer.max_epochs=1", "sampler.pairs_per_epoch=32", "progress=false", "logger=none"], tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["n_songs"] > 0 and set(metrics["per_category"]) <= {"genre", "subgenre"}
    built = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]["model"]
    assert built["_target_"].endswith("FeaturesModel" if kind == "features" else "AcousticModel")
    assert all(0.0 <= row["roc_auc"] <= 1.0 for row in metrics["per_tag"].values())
    assert (tmp_path / "prepare_report.json").exists()
    if (subset, tags, kind) == ("medium", "genre_top", "features"):  # the documented baselines command
        capsys.readouterr()  # drop the training run's output
        fma_genres.main(["baselines", str(fma_root / "prepared" / "medium-features"),
                  "--checkpoint", str(tmp_path / "checkpoints" / "best.ckpt")])
        accuracy = json.loads(capsys.readouterr().out)["accuracy"]
        assert set(accuracy) == {"logistic_regression", "svm", "checkpoint"}
        assert all(0.0 <= value <= 1.0 for value in accuracy.values())
