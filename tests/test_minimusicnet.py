"""mini-MusicNet import (``data=minimusicnet``), pitch tags, the seed's metric and baselines.

The miniature follows DATA_FORMATS.md section 3: ``audio-{split}.npy`` [N, 4096] clips at 44.1 kHz,
peak-normalised, ``labels-{split}.npy`` [N, 128] multi-hot, 250 consecutive rows per recording. The clips are
synthesised chords (random phases, harmonic partials) of the notes their labels name, so the labels are
known by construction; the dtypes vary per split (float32/float64 audio, float64/bool/int labels).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import average_precision_score

from tagretrieval.data.minimusicnet import importer as mm
from tagretrieval.tags.pitch import PitchEncoder, midi_to_name, name_to_midi

from conftest import REPO, read_metrics, run_task

SAMPLE_RATE = 44100
N_SAMPLES = 4096
NOTES = np.arange(55, 80)          # G3 .. G5
VALID_ONLY_NOTE = 90               # F#6: sounds in valid only, so it is not a tag
NAN_CLIP = ("test", 17)


def load_script():
    path = REPO / "scripts" / "minimusicnet_baselines.py"
    spec = importlib.util.spec_from_file_location("minimusicnet_baselines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthesise(rng, n_clips):
    """Clips [n, 4096] float64 and labels [n, 128] bool: 0-3 notes per clip, 4 harmonics, random phases."""
    t = np.arange(N_SAMPLES) / SAMPLE_RATE
    audio = np.zeros((n_clips, N_SAMPLES))
    labels = np.zeros((n_clips, 128), dtype=bool)
    for i in range(n_clips):
        notes = rng.choice(NOTES, size=rng.integers(0, 4), replace=False)
        labels[i, notes] = True
        for note in notes:
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            for h in range(1, 5):
                audio[i] += rng.uniform(0.3, 1.0) / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
        audio[i] += 0.01 * rng.standard_normal(N_SAMPLES)
        audio[i] /= np.abs(audio[i]).max()
    return audio, labels


@pytest.fixture(scope="module")
def minimusic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("minimusic")
    rng = np.random.default_rng(0)
    sizes = {"train": 500, "valid": 250, "test": 250}
    for split, n in sizes.items():
        audio, labels = synthesise(rng, n)
        if split == "valid":
            labels[3, VALID_ONLY_NOTE] = True
        if split == NAN_CLIP[0]:
            audio[NAN_CLIP[1], 100] = np.nan
        audio_dtype, labels_dtype = {"train": (np.float32, np.float64), "valid": (np.float64, bool),
                                     "test": (np.float32, np.int64)}[split]
        np.save(root / f"audio-{split}.npy", audio.astype(audio_dtype))
        np.save(root / f"labels-{split}.npy", labels.astype(labels_dtype))
    return root


def importer(root, **settings):
    return mm.MiniMusicNetImporter(**{"root": str(root), "prepared_dir": str(root / "prepared"), **settings})


# -- pitch names and the pitch encoder ------------------------------------------------------------------------
def test_pitch_names_follow_scientific_pitch_notation():
    assert [midi_to_name(k) for k in (0, 1, 21, 59, 60, 61, 69, 127)] == \
        ["C-1", "C#-1", "A0", "B3", "C4", "C#4", "A4", "G9"]
    assert all(name_to_midi(midi_to_name(k)) == k for k in range(128))
    assert name_to_midi("Db4") == 61 and name_to_midi("c4") == 60
    for not_a_note in ("H4", "C#", "C10", "G#9", "rock", "C4 major"):
        assert name_to_midi(not_a_note) is None
    with pytest.raises(ValueError):
        midi_to_name(128)
    tags, categories = mm.note_tags()
    assert tags[60] == "C4" and categories[60] == "octave 4" and categories[0] == "octave -1"


def test_pitch_encoder_neighbours_are_close_and_codes_shift_invariant():
    encoder = PitchEncoder(dim=300)
    vectors, missing = encoder.vectors(["C4", "C#4", "D4", "G4", "C5", "C7", "rock"], train_tag_lists=[])
    assert missing == ["rock"] and not vectors[-1].any()
    assert vectors.shape == (7, 300) and np.allclose(np.linalg.norm(vectors[:-1], axis=1), 1.0, atol=1e-5)
    similarity = vectors[0] @ vectors[:-1].T  # C4 against C4, C#4, D4, G4, C5, C7
    assert similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert similarity[1] > similarity[2] > similarity[3] and similarity[1] > similarity[4] > similarity[5]
    code = encoder.code(np.arange(128))
    assert np.allclose(code[60] @ code[62], code[100] @ code[102], atol=1e-6)
    assert len(np.unique(np.round(code, 5), axis=0)) == 128
    with pytest.raises(ValueError, match="even"):
        PitchEncoder(dim=301)


# -- the seed's metric ------------------------------------------------------------------------------------------
def test_micro_average_precision_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    for shape, decimals in (((11, 7), 1), ((40, 128), 2), ((5, 3), 0)):
        relevance = rng.random(shape) < 0.2
        relevance.flat[0] = True
        scores = np.round(rng.standard_normal(shape) + relevance, decimals)
        expected = average_precision_score(relevance.ravel(), scores.ravel())
        assert mm.micro_average_precision(scores, relevance) == pytest.approx(expected, abs=1e-12)
        assert mm.micro_average_precision(scores, relevance.astype(np.float64)) == pytest.approx(expected, abs=1e-12)


def test_micro_average_precision_hand_cases():
    # ranked 3, 2, 1 with relevance 1, 0, 1: (1/2)(1/1) + (1/2)(2/3)
    assert mm.micro_average_precision(np.array([[3.0, 2.0, 1.0]]), np.array([[1, 0, 1]])) == pytest.approx(5 / 6)
    # one tie group holding a positive and a negative: a single threshold at precision 1/2
    assert mm.micro_average_precision(np.array([[1.0, 1.0]]), np.array([[1, 0]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no positive"):
        mm.micro_average_precision(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="0 and 1"):
        mm.micro_average_precision(np.zeros((1, 2)), np.array([[2, 0]]))


def test_clip_spectrum_peaks_at_the_tone_and_stops_at_fmax():
    k = 60  # a tone exactly on bin 60 (646 Hz)
    y = np.sin(2 * np.pi * k * np.arange(N_SAMPLES) / N_SAMPLES)[None, :]
    spectrum = mm.clip_spectrum(y, sample_rate=SAMPLE_RATE, fmax_hz=8000.0)
    assert spectrum.shape == (1, int(8000 * N_SAMPLES / SAMPLE_RATE) + 1) == (1, 744)
    assert spectrum.dtype == np.float32 and spectrum[0].argmax() == k


# -- importing --------------------------------------------------------------------------------------------------
def test_import_tags_ids_artists_and_report(minimusic_root):
    dataset = importer(minimusic_root).prepare(progress=False)
    tags = [midi_to_name(k) for k in NOTES]
    assert dataset.tags == tags and dataset.categories[tags.index("C4")] == "octave 4"
    assert dataset.track_ids[:2] == ["train-000000", "train-000001"]
    assert dataset.tracks.loc[dataset.track_ids.index("train-000250"), "artist"] == "train-rec0001"
    assert dataset.tracks.loc[dataset.track_ids.index("valid-000249"), "artist"] == "valid-rec0000"
    assert len(dataset.tracks) == 999 and "test-000017" not in dataset.track_ids
    assert dataset.features.shape == (999, 744)
    labels = np.load(minimusic_root / "labels-train.npy")
    assert np.array_equal(dataset.labels[:500], labels[:, NOTES].astype(np.uint8))
    report = json.loads((minimusic_root / "prepared" / "prepare_report.json").read_text())
    assert report["skipped"]["non-finite audio"].keys() == {"test-000017"}
    assert "F#6" in report["skipped"]["tag: never in train"]
    assert "1 valid/test clip" in report["skipped"]["tag: never in train"]["F#6"]
    assert any("no (kept) note" in note for note in report["notes"])  # silent clips are kept as negatives
    assert not dataset.labels[dataset.split_indices("train")].any(axis=1).all()


def test_bad_labels_are_refused_naming_the_file(tmp_path):
    np.save(tmp_path / "audio-train.npy", np.zeros((3, 16), dtype=np.float32))
    np.save(tmp_path / "labels-train.npy", np.full((3, 128), 2.0))
    with pytest.raises(ValueError, match="labels-train.npy"):
        mm.read_split(tmp_path, "train")
    np.save(tmp_path / "labels-train.npy", np.zeros((4, 128)))
    with pytest.raises(ValueError, match=r"labels-train.npy: expected \[3, 128\]"):
        mm.read_split(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="audio-valid.npy"):
        mm.read_split(tmp_path, "valid")


# -- baselines and end to end -----------------------------------------------------------------------------------
def test_blockwise_ridge_equals_scikit_learn():
    script = load_script()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 20)), rng.standard_normal((300, 3))
    ours = script.fit_ridge(x, y, alpha=1e-3, transform=script.raw_audio, block_clips=64)
    assert np.allclose(ours, Ridge(alpha=1e-3, fit_intercept=False).fit(x, y).coef_.T, atol=1e-8)


def test_main_trains_with_pitch_tags_and_the_checkpoint_scores_with_the_seed_metric(minimusic_root, tmp_path):
    run_task(["data=minimusicnet", f"data.root={minimusic_root}", "model=features", "tag_encoder=pitch",
              "experiment=smoke", "progress=false", "logger=none"], tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["n_songs"] == 249 and set(metrics["per_category"]) <= {"octave 3", "octave 4", "octave 5"}
    # the documented baselines command: the seed's ridge baselines and our checkpoint, with the seed's metric
    load_script().main(["--root", str(minimusic_root), "--checkpoint", str(tmp_path / "checkpoints" / "best.ckpt"),
                        "--out", str(tmp_path / "baselines.json")])
    ap = json.loads((tmp_path / "baselines.json").read_text())["average_precision"]
    assert ap["ridge_abs_rfft"] > ap["ridge_raw_audio"] + 0.2  # as on the real data (0.47 vs 0.04)
    chance = np.delete(np.load(minimusic_root / "labels-test.npy"), NAN_CLIP[1], axis=0).mean()
    assert chance < ap["checkpoint"] <= 1.0


def test_learned_tag_vectors_also_run(minimusic_root, tmp_path):
    # no model=: model=auto picks model=features, the only model that reads clip spectra
    results = run_task(["data=minimusicnet", f"data.root={minimusic_root}", "tag_encoder=learned",
                        "experiment=smoke", "progress=false", "logger=none"], tmp_path)
    assert np.isfinite(list(results.macro.values())).all()
    built = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]["model"]
    assert built["_target_"] == "tagretrieval.models.features.FeaturesModel"
