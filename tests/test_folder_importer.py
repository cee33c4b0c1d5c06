"""Importing a user's folder: mixed formats and rates, bad files skipped and reported, splits, CF vectors."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.data.folder.importer import FolderImporter
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.report import TooManySkippedError
from tagretrieval.data.splits import artist_disjoint_split

FORMATS = [("wav", 22050, 1), ("flac", 44100, 2), ("ogg", 16000, 1), ("mp3", 48000, 2)]


def write_tone(path, *, sample_rate, channels, seconds=1.5, freq_hz=440.0):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.4 * np.sin(2 * np.pi * freq_hz * t)
    sf.write(path, np.stack([y] * channels, axis=1) if channels > 1 else y, sample_rate)


@pytest.fixture
def frontend():
    return MelFrontend()


@pytest.fixture
def folder(tmp_path):
    """24 good tracks in 4 formats by 8 artists, plus a corrupt, an empty and a silent file."""
    root = tmp_path / "mydata"
    (root / "audio" / "sub").mkdir(parents=True)
    rows = []
    for i in range(24):
        ext, rate, channels = FORMATS[i % 4]
        if ext not in {f.lower() for f in sf.available_formats()} and ext != "ogg":
            ext, rate, channels = "wav", rate, channels
        folder = root / "audio" / ("sub" if i % 2 else "")
        write_tone(folder / f"t{i:02d}.{ext}", sample_rate=rate, channels=channels, freq_hz=200 + 30 * i)
        tags = ["rock" if i % 2 else "jazz", "happy" if i % 3 else "sad"]
        rows.append({"track_id": f"t{i:02d}", "tags": ";".join(tags), "artist": f"a{i % 8}"})
    (root / "audio" / "bad.wav").write_bytes(b"RIFF not really a wav file at all")
    (root / "audio" / "empty.flac").write_bytes(b"")
    sf.write(root / "audio" / "quiet.wav", np.zeros(22050), 22050)
    rows += [{"track_id": t, "tags": "rock", "artist": "a0"} for t in ("bad", "empty", "quiet", "ghost")]
    rows.append({"track_id": "t01", "tags": "jazz", "artist": "a1"})  # duplicate id
    pd.DataFrame(rows).to_csv(root / "tags.csv", index=False)
    pd.DataFrame({"tag": ["rock", "jazz", "happy", "sad"], "category": ["genre", "genre", "mood", "mood"]}).to_csv(
        root / "tag_categories.csv", index=False)
    return root


def importer(root, **kwargs):
    settings = dict(root=str(root), prepared_dir=str(root / "prepared"), max_skipped_fraction=0.5)
    settings.update(kwargs)
    return FolderImporter(**settings)


def test_mixed_formats_import_and_bad_files_are_reported(folder, frontend):
    dataset = importer(folder).prepare(frontend=frontend, progress=False)
    assert len(dataset.tracks) == 24
    assert dataset.tags == ["happy", "jazz", "rock", "sad"]
    assert dataset.categories == ["mood", "genre", "genre", "mood"]
    assert set(dataset.tracks["split"]) == {"train", "valid", "test"}
    # artist-disjoint
    by_artist = dataset.tracks.groupby("artist")["split"].nunique()
    assert (by_artist == 1).all()
    report = json.loads((folder / "prepared" / "prepare_report.json").read_text())
    skipped = {reason: set(items) for reason, items in report["skipped"].items()}
    assert skipped["missing audio"] == {"ghost"}
    assert skipped["duplicate track id"] == {"t01"}
    assert skipped["silent"] == {"quiet"}
    assert "bad" in skipped["decode error"] and skipped["empty"] == {"empty"}  # a 0-byte file has its own reason
    assert report["n_kept"] == 24
    # every kept track has a finite mel at 22,050 Hz whatever its original rate and channel count
    reloaded = PreparedDataset.load(folder / "prepared")
    assert reloaded.tracks.equals(dataset.tracks)
    store = MelStore.open(folder / "prepared" / "mels", frontend=MelFrontend())
    mels = [store.read(t) for t in reloaded.track_ids]  # [n_frames, n_mels]
    assert len(mels) == len(store) == 24
    assert all(m.shape[1] == 128 and np.isfinite(m).all() for m in mels)
    assert all(abs(m.shape[0] - (1 + int(1.5 * 22050) // 512)) <= 1 for m in mels)


def test_second_prepare_reuses_the_import(folder, frontend):
    first = importer(folder).prepare(frontend=frontend, progress=False)
    stamp = (folder / "prepared" / "manifest.json").stat().st_mtime_ns
    second = importer(folder).prepare(frontend=frontend, progress=False)
    assert (folder / "prepared" / "manifest.json").stat().st_mtime_ns == stamp
    assert second.tracks.equals(first.tracks)
    # a changed setting re-imports (reusing the mel cache)
    third = importer(folder, split_seed=7).prepare(frontend=frontend, progress=False)
    assert third.source["split_seed"] == 7


def test_given_split_column_with_aliases_and_long_format(tmp_path, frontend):
    root = tmp_path / "long"
    (root / "audio").mkdir(parents=True)
    pairs = []
    for i, split in enumerate(["train", "val", "validation", "test", "Train", "TEST"]):
        write_tone(root / "audio" / f"s{i}.wav", sample_rate=22050, channels=1)
        pairs += [{"track_id": f"s{i}", "tag": "Piano ", "split": split}, {"track_id": f"s{i}", "tag": "calm", "split": split}]
    pd.DataFrame(pairs).to_csv(root / "tags.csv", index=False)
    dataset = importer(root).prepare(frontend=frontend, progress=False)
    assert dataset.tracks["split"].tolist() == ["train", "valid", "valid", "test", "train", "test"]
    assert dataset.tags == ["calm", "piano"] and dataset.labels.all()


def test_bad_split_value_and_missing_root_are_clear(tmp_path, frontend):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        importer(tmp_path / "nowhere").prepare(frontend=frontend, progress=False)
    root = tmp_path / "bad_split"
    (root / "audio").mkdir(parents=True)
    write_tone(root / "audio" / "x.wav", sample_rate=22050, channels=1)
    pd.DataFrame([{"track_id": "x", "tags": "a", "split": "holdout"}]).to_csv(root / "tags.csv", index=False)
    with pytest.raises(ValueError, match="holdout"):
        importer(root).prepare(frontend=frontend, progress=False)


def test_cf_vectors_nan_names_tracks_and_missing_vectors_are_skipped(folder, frontend):
    ids = [f"t{i:02d}" for i in range(24)]
    vectors = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
    vectors[[4, 9]] = np.nan
    np.savez(folder / "cf_vectors.npz", track_ids=np.array(ids), vectors=vectors)
    with pytest.raises(ValueError, match="t04, t09"):
        importer(folder).prepare(frontend=frontend, progress=False)
    vectors[[4, 9]] = 1.0
    np.savez(folder / "cf_vectors.npz", track_ids=np.array(ids[:-2]), vectors=vectors[:-2])
    dataset = importer(folder).prepare(frontend=frontend, progress=False)
    assert dataset.cf.shape == (22, 5)
    row = dataset.track_ids.index("t05")
    assert np.array_equal(dataset.cf[row], vectors[5])
    report = json.loads((folder / "prepared" / "prepare_report.json").read_text())
    # the broken files have no CF vector either: they are skipped before any decoding
    assert set(report["skipped"]["missing CF vector"]) == {"t22", "t23", "bad", "empty", "quiet"}


def test_too_many_skipped_fails_after_writing_the_report(folder, frontend):
    with pytest.raises(TooManySkippedError, match="prepare_report.json"):
        importer(folder, max_skipped_fraction=0.05).prepare(frontend=frontend, progress=False)
    assert (folder / "prepared" / "prepare_report.json").exists()


def test_artist_disjoint_split_meets_the_positive_threshold():
    rng = np.random.default_rng(0)
    artists = [f"a{i // 4}" for i in range(400)]
    labels = (rng.random((400, 6)) < 0.2).astype(np.uint8)
    outcome = artist_disjoint_split(artists, labels, seed=3, min_positives=5)
    assert outcome.satisfied and outcome.min_positives >= 5
    shares = pd.Series(outcome.splits).value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["test"] - 0.15) < 0.03
    splits_per_artist = pd.DataFrame({"a": artists, "s": outcome.splits}).groupby("a")["s"].nunique()
    assert (splits_per_artist == 1).all()
    again = artist_disjoint_split(artists, labels, seed=3, min_positives=5)
    assert (again.splits == outcome.splits).all()
    impossible = artist_disjoint_split(artists, labels, seed=3, min_positives=1000, max_draws=5)
    assert not impossible.satisfied and impossible.n_draws == 5


def test_main_trains_on_a_mixed_folder(folder, tmp_path):
    from conftest import read_metrics, run_task

    # no model=: audio without cf_vectors.npz, so model=auto picks model=acoustic
    run_task(["data=folder", f"data.root={folder}", "data.max_skipped_fraction=0.5",
              "experiment=smoke", "progress=false", "logger=none"], tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    built = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]["model"]
    assert built["_target_"] == "tagretrieval.models.AcousticModel"
    assert metrics["n_songs"] > 0 and metrics["per_tag"]
    assert set(metrics["per_tag"]) | set(metrics["skipped_tags"]) == {"happy", "jazz", "rock", "sad"}


def _with_untagged(folder):
    """The folder plus four tracks listed with empty tags (t24-t27, each of its own artist's group)."""
    table = pd.read_csv(folder / "tags.csv", dtype=str, keep_default_na=False)
    for i in range(24, 28):
        write_tone(folder / "audio" / f"t{i}.wav", sample_rate=22050, channels=1, freq_hz=900 + 20 * i)
    extra = pd.DataFrame({"track_id": [f"t{i}" for i in range(24, 28)], "tags": "", "artist": [f"u{i}" for i in
                                                                                                range(4)]})
    pd.concat([table, extra]).to_csv(folder / "tags.csv", index=False)
    return {f"t{i}" for i in range(24, 28)}


def test_untagged_rows_are_skipped_or_kept_as_negatives(folder, frontend, tmp_path, caplog, monkeypatch):
    import logging

    from conftest import read_metrics, run_task

    untagged = _with_untagged(folder)
    importer(folder).prepare(frontend=frontend, progress=False)
    report = json.loads((folder / "prepared" / "prepare_report.json").read_text())
    assert set(report["skipped"]["no tags"]) == untagged
    assert "keep_untagged" in json.dumps(report["skipped"]["no tags"])   # the skip says how to keep them

    with caplog.at_level(logging.INFO, logger="tagretrieval"):
        run_task(["data=folder", f"data.root={folder}", "data.max_skipped_fraction=0.5", "data.keep_untagged=true",
                  "experiment=smoke", "progress=false", "logger=none"], tmp_path / "run")
    dataset = PreparedDataset.load(folder / "prepared")
    assert dataset.source["keep_untagged"] is True and untagged <= set(dataset.track_ids)
    rows = [dataset.track_ids.index(t) for t in sorted(untagged)]
    assert not dataset.labels[rows].any() and dataset.labels.sum(axis=1)[
        [i for i, t in enumerate(dataset.track_ids) if t not in untagged]].min() > 0
    report = json.loads((folder / "prepared" / "prepare_report.json").read_text())
    assert "no tags" not in report["skipped"] and any("kept as negatives" in n for n in report["notes"])
    # the untagged test songs are scored (as negatives of every tag); the untagged training songs go into batches
    metrics = read_metrics(tmp_path / "run")
    assert metrics["n_songs"] == len(dataset.split_indices("test"))
    n_train = int(dataset.tracks.loc[rows, "split"].eq("train").sum())
    log = caplog.text
    assert n_train >= 1 and f"{n_train} untagged training song" in log   # the split (seed 0) puts some in train
    # loss=infonce scores them too: its softmax runs over the pairs' songs and the untagged ones after them
    from tagretrieval.training.losses import InfoNCELoss

    shapes, forward = [], InfoNCELoss.forward

    def recording(self, anchor, songs, positive_mask):
        shapes.append((len(anchor), len(songs)))
        return forward(self, anchor, songs, positive_mask)

    monkeypatch.setattr(InfoNCELoss, "forward", recording)
    run_task(["data=folder", f"data.root={folder}", "data.max_skipped_fraction=0.5", "data.keep_untagged=true",
              "loss=infonce", "experiment=smoke", "progress=false", "logger=none"], tmp_path / "infonce")
    assert shapes and all(n_songs > n_pairs for n_pairs, n_songs in shapes)
