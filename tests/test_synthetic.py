"""The synthetic dataset: folder format, determinism, safe regeneration, and its known answers."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tagretrieval.data.synthetic import generate as synthetic
from tagretrieval.data.synthetic.generate import (
    AUDIBLE_CATEGORIES,
    GENERATOR_VERSION,
    INAUDIBLE_CATEGORIES,
    TAG_CATEGORIES,
    SyntheticSpec,
    generate_synthetic,
)

SMALL = SyntheticSpec(n_songs=120, n_artists=30, n_users=200, clip_seconds=2.0, cf_dim=16)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "small", spec=SMALL, progress=False)


def _read_tags(root: Path) -> pd.DataFrame:
    """tags.csv with a ``tag_list`` column: ``list[str]`` per track."""
    df = pd.read_csv(root / "tags.csv", dtype=str, keep_default_na=False)
    return df.assign(tag_list=df["tags"].str.split(";"))


def _file_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_layout_and_formats(small_root: Path) -> None:
    df = _read_tags(small_root)
    assert list(df.columns[:3]) == ["track_id", "artist", "tags"] and "split" not in df.columns
    assert len(df) == SMALL.n_songs and df["track_id"].is_unique
    assert df["artist"].nunique() == SMALL.n_artists

    audio = sorted((small_root / "audio").rglob("*.flac"))
    assert sorted(p.stem for p in audio) == sorted(df["track_id"])
    for path in audio:
        info = sf.info(path)
        assert (info.format, info.subtype, info.channels) == ("FLAC", "PCM_16", 1), path
        assert info.samplerate == SMALL.sample_rate, path
        y, _ = sf.read(path, dtype="float32")
        assert y.shape == (round(SMALL.clip_seconds * SMALL.sample_rate),), path
        assert 0.45 <= np.abs(y).max() <= 0.92, path  # peak-normalised to 0.5-0.9, plus the noise floor

    cf = np.load(small_root / "cf_vectors.npz")
    assert cf["vectors"].dtype == np.float32 and cf["vectors"].shape == (SMALL.n_songs, SMALL.cf_dim)
    assert np.isfinite(cf["vectors"]).all()
    assert list(cf["track_ids"]) == list(df["track_id"])

    categories = pd.read_csv(small_root / "tag_categories.csv", dtype=str)
    assert list(categories.columns) == ["tag", "category"] and categories["tag"].is_unique
    category_of = dict(zip(categories["tag"], categories["category"]))
    assert set(category_of.values()) == set(TAG_CATEGORIES)
    for track_id, tags in zip(df["track_id"], df["tag_list"]):
        assert set(tags) <= set(category_of), track_id
        per_category = pd.Series([category_of[t] for t in tags]).value_counts()
        assert {c: per_category.get(c, 0) for c in ("tempo", "mood", "location", "era")} == dict.fromkeys(
            ("tempo", "mood", "location", "era"), 1
        ), track_id
        assert 1 <= per_category.get("instrument", 0) <= 2, track_id
        assert tags != ["drums"], track_id

    # Inaudible tags belong to the artist: every song of an artist has the same location and era.
    inaudible = df["tag_list"].map(lambda tags: tuple(t for t in tags if category_of[t] in INAUDIBLE_CATEGORIES))
    assert (inaudible.groupby(df["artist"]).nunique() == 1).all()

    manifest = json.loads((small_root / "synthetic.json").read_text())
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert manifest["spec"] == dataclasses.asdict(SMALL)
    counts = df["tag_list"].explode().value_counts()
    assert manifest["tag_counts"] == {tag: counts.get(tag, 0) for tag in category_of}


def test_every_tag_has_enough_positives_in_artist_disjoint_splits(tmp_path: Path) -> None:
    # Default song/artist counts; tags do not depend on clip length, sample rate or CF settings.
    spec = SyntheticSpec(clip_seconds=1.0, sample_rate=8000, n_users=50, cf_dim=8)
    df = _read_tags(generate_synthetic(tmp_path / "default", spec=spec, progress=False))
    counts = df["tag_list"].explode().value_counts()
    assert (counts.reindex([t for tags in TAG_CATEGORIES.values() for t in tags]) >= 0.05 * len(df)).all()

    positives = pd.get_dummies(df["tag_list"].explode()).groupby(level=0).max()  # [n_songs, n_tags]
    artists = np.array(sorted(df["artist"].unique()))
    enough = []
    for seed in range(20):  # random artist-disjoint 70/15/15 splits
        order = np.random.default_rng(seed).permutation(artists)
        split_of = dict(zip(order, np.digitize(np.arange(len(order)), [0.7 * len(order), 0.85 * len(order)])))
        per_split = positives.groupby(df["artist"].map(split_of)).sum()  # [3, n_tags]
        enough.append(per_split.to_numpy().min() >= 10)
    assert np.mean(enough) >= 0.8  # 97% over 1000 seeds; the importer also redraws until every tag fits


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path, small_root: Path) -> None:
    again = generate_synthetic(tmp_path / "again", spec=SMALL, progress=False)
    other = generate_synthetic(tmp_path / "other", spec=dataclasses.replace(SMALL, seed=1), progress=False)
    for name in ("tags.csv", "cf_vectors.npz", "tag_categories.csv"):
        assert (again / name).read_bytes() == (small_root / name).read_bytes(), name
    assert (other / "tags.csv").read_bytes() != (small_root / "tags.csv").read_bytes()
    vectors, other_vectors = (np.load(r / "cf_vectors.npz")["vectors"] for r in (small_root, other))
    assert not np.allclose(vectors, other_vectors)

    track_ids = _read_tags(small_root)["track_id"]
    for track_id in track_ids:
        y, _ = sf.read(small_root / "audio" / f"{track_id}.flac")
        np.testing.assert_array_equal(sf.read(again / "audio" / f"{track_id}.flac")[0], y)
    first = track_ids.iloc[0]
    y_other, _ = sf.read(other / "audio" / f"{first}.flac")
    assert not np.array_equal(y_other, sf.read(small_root / "audio" / f"{first}.flac")[0])


def test_second_call_with_same_spec_rewrites_nothing(small_root: Path) -> None:
    before = _file_mtimes(small_root)
    assert generate_synthetic(small_root, spec=SMALL, progress=False) == small_root
    assert _file_mtimes(small_root) == before


def test_other_spec_or_version_is_refused_naming_the_field(small_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _file_mtimes(small_root)
    with pytest.raises(ValueError, match=r"n_users: on disk 200, requested 300"):
        generate_synthetic(small_root, spec=dataclasses.replace(SMALL, n_users=300), progress=False)
    with pytest.raises(ValueError, match=r"clip_seconds.*seed"):
        generate_synthetic(small_root, spec=dataclasses.replace(SMALL, clip_seconds=3.0, seed=7), progress=False)
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", GENERATOR_VERSION + 1)
    with pytest.raises(ValueError, match="generator_version"):
        generate_synthetic(small_root, spec=SMALL, progress=False)
    assert _file_mtimes(small_root) == before


def test_folder_that_is_not_a_synthetic_dataset_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        generate_synthetic(tmp_path / "mine", spec=SMALL, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"

    (tmp_path / "empty").mkdir()  # e.g. made by a launcher: fine to fill
    assert (generate_synthetic(tmp_path / "empty", spec=SMALL, progress=False) / "synthetic.json").is_file()


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and the stale-folder clean-up are POSIX only")
def test_killed_generation_looks_incomplete_and_next_run_recovers(tmp_path: Path) -> None:
    root = tmp_path / "data" / "synthetic"
    slow = dataclasses.replace(SMALL, n_songs=2000, n_artists=100)
    code = (
        "import sys, tagretrieval.data.synthetic as s\n"
        f"s.generate_synthetic(sys.argv[1], spec=s.SyntheticSpec(**{dataclasses.asdict(slow)!r}), progress=False)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(root)])
    try:
        deadline = time.monotonic() + 120.0
        while not any(root.parent.glob(".synthetic.partial-*/audio/*.flac")):
            assert process.poll() is None and time.monotonic() < deadline, "generation ended before it was killed"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    leftovers = list(root.parent.glob(".synthetic.partial-*"))
    assert len(leftovers) == 1 and not root.exists()  # nothing that looks complete

    assert (generate_synthetic(root, spec=SMALL, progress=False) / "synthetic.json").is_file()
    assert _read_tags(root)["track_id"].size == SMALL.n_songs
    assert not any(p.exists() for p in leftovers)  # the dead run's folder was cleaned up


def test_spec_rejects_values_the_dataset_cannot_honour() -> None:
    with pytest.raises(ValueError, match="n_artists"):
        SyntheticSpec(n_artists=3)
    with pytest.raises(ValueError, match="n_songs"):
        SyntheticSpec(n_songs=100, n_artists=300)
    with pytest.raises(ValueError, match="cf_dim"):
        SyntheticSpec(n_users=10, cf_dim=16)
    with pytest.raises(TypeError):
        SyntheticSpec(1200)  # keyword-only


# --- known answers: audio features find only audible tags, CF vectors only inaudible ones ---

_N_FFT, _HOP_LENGTH, _N_MELS = 1024, 256, 40


def _audio_features(path: Path, *, mel_basis: np.ndarray) -> np.ndarray:
    """Summary features ``[2 * n_mels + 6]`` of one clip: log-mel mean/std, flux, onset rate.

    The mel filterbank is built once (``melspectrogram()`` rebuilds it for every clip). The onset
    rate is detected on the broadband energy, not per band: flute vibrato moves energy between
    mel bands at 4.5-6.5 Hz and would read as fast onsets. It enters as a soft histogram over
    1, 2, 4, 8 onsets/s so that a linear model can single out the middle tempo.
    """
    y, sr = sf.read(path, dtype="float32")
    power = mel_basis @ np.abs(librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP_LENGTH)) ** 2  # [n_mels, n_frames]
    log_mel = librosa.power_to_db(power)
    flux = np.maximum(np.diff(log_mel, axis=1), 0.0).mean(axis=0)  # [n_frames - 1]
    energy_db = librosa.power_to_db(power.sum(axis=0, keepdims=True))
    envelope = librosa.onset.onset_strength(S=energy_db, sr=sr, hop_length=_HOP_LENGTH, lag=2)
    n_onsets = len(librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=_HOP_LENGTH))
    octaves = np.log2(max(n_onsets * sr / len(y), 0.5))
    rate_histogram = np.exp(-((octaves - np.arange(4)) ** 2) / 0.5)
    return np.concatenate([log_mel.mean(axis=1), log_mel.std(axis=1), [flux.mean(), flux.std()], rate_histogram])


def _macro_auc_per_category(
    features: np.ndarray, tag_lists: pd.Series, *, train: np.ndarray, test: np.ndarray
) -> dict[str, float]:
    """Mean over each category's tags of the test ROC-AUC of a one-vs-rest logistic regression."""
    result = {}
    for category, tags in TAG_CATEGORIES.items():
        aucs = []
        for tag in tags:
            y = np.array([tag in song_tags for song_tags in tag_lists])
            assert 0 < y[test].sum() < len(test), f"{tag}: one class only in the test artists"
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            model.fit(features[train], y[train])
            aucs.append(roc_auc_score(y[test], model.decision_function(features[test])))
        result[category] = float(np.mean(aucs))
    return result


def test_audio_reveals_only_audible_tags_and_cf_only_inaudible(tmp_path: Path) -> None:
    spec = SyntheticSpec(n_songs=400, n_artists=100, n_users=500, clip_seconds=3.0, sample_rate=16000, cf_dim=32)
    root = generate_synthetic(tmp_path / "known_answers", spec=spec, progress=False)
    df = _read_tags(root)
    cf = np.load(root / "cf_vectors.npz")["vectors"]
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0).split(cf, groups=df["artist"]))
    assert not set(df["artist"].iloc[train]) & set(df["artist"].iloc[test])

    with threadpool_limits(limits=1):  # tiny matrices: BLAS threads only spin on a busy 2-core machine
        mel_basis = librosa.filters.mel(sr=spec.sample_rate, n_fft=_N_FFT, n_mels=_N_MELS)
        audio = np.stack([_audio_features(root / "audio" / f"{t}.flac", mel_basis=mel_basis) for t in df["track_id"]])
        from_audio = _macro_auc_per_category(audio, df["tag_list"], train=train, test=test)
        from_cf = _macro_auc_per_category(cf, df["tag_list"], train=train, test=test)
    print(f"\nmacro ROC-AUC from audio: {from_audio}\nmacro ROC-AUC from CF:    {from_cf}")
    for category in AUDIBLE_CATEGORIES:
        assert from_audio[category] >= 0.85, (category, from_audio)
        assert from_cf[category] <= 0.65, (category, from_cf)
    for category in INAUDIBLE_CATEGORIES:
        assert from_audio[category] <= 0.65, (category, from_audio)
        assert from_cf[category] >= 0.85, (category, from_cf)
