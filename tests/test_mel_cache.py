"""The mel cache (MelCache) and the job that fills it (prepare_mels)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from tagretrieval.audio import CacheMismatchError, MelCache, MelFrontend, cache_params, mel_from_file, prepare_mels

SR = 22050


@pytest.fixture
def frontend() -> MelFrontend:
    return MelFrontend(sample_rate=SR, n_fft=1024, hop_length=512, n_mels=128)


@pytest.fixture
def cache(tmp_path, frontend) -> MelCache:
    return MelCache(tmp_path / "mels", frontend_params=cache_params(frontend))


@pytest.fixture
def tracks(tmp_path) -> list[tuple[str, str]]:
    """Six 1 s wavs at 44.1 kHz (so decoding resamples), each a different tone plus seeded noise."""
    folder = tmp_path / "audio"
    folder.mkdir()
    items = []
    for i in range(6):
        t = np.arange(44100) / 44100
        y = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * np.random.default_rng(i).standard_normal(t.shape)
        path = folder / f"track{i}.wav"
        sf.write(path, y, 44100, subtype="FLOAT")
        items.append((f"track{i}", str(path)))
    return items


def entry_bytes(cache: MelCache, track_ids) -> dict[str, bytes]:
    return {t: cache.path_for(t).read_bytes() for t in track_ids}


def random_mel(*, n_frames: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-30, 10, size=(128, n_frames)).astype(np.float32)


# --- MelCache -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_write_read_round_trip(tmp_path, frontend, dtype):
    cache = MelCache(tmp_path / "mels", frontend_params=cache_params(frontend, dtype=dtype))
    mel = random_mel()
    assert not cache.has("t1")
    cache.write("t1", mel)
    assert cache.has("t1")
    mapped = cache.read("t1")
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(mapped, mel.astype(dtype))
    np.testing.assert_array_equal(cache.read("t1", mmap=False), mapped)
    reopened = MelCache(tmp_path / "mels", frontend_params=cache_params(frontend, dtype=dtype))
    np.testing.assert_array_equal(reopened.read("t1"), mapped)
    manifest = json.loads((tmp_path / "mels" / "manifest.json").read_text())
    assert manifest["frontend_params"] == cache_params(frontend, dtype=dtype)


def test_manifest_mismatch_names_every_difference(tmp_path, frontend, cache):
    other = MelFrontend(sample_rate=SR, n_fft=1024, hop_length=256, n_mels=96)
    with pytest.raises(CacheMismatchError) as info:
        MelCache(cache.root, frontend_params=cache_params(other))
    message = str(info.value)
    assert str(cache.root) in message
    assert "n_mels: expected 96, found 128" in message
    assert "hop_length: expected 256, found 512" in message
    assert "sample_rate" not in message  # only what differs
    with pytest.raises(CacheMismatchError, match="dtype: expected 'float16', found 'float32'"):
        MelCache(cache.root, frontend_params=cache_params(frontend, dtype="float16"))
    with pytest.raises(ValueError, match="dtype"):
        MelCache(tmp_path / "other", frontend_params=frontend.params())  # caller must pass the full params


def test_write_refuses_non_finite_and_bad_shapes(cache, tmp_path, frontend):
    for bad in (np.nan, np.inf):
        mel = random_mel()
        mel[3, 2] = bad
        with pytest.raises(ValueError, match="'t-bad'.*NaN/inf"):
            cache.write("t-bad", mel)
    with pytest.raises(ValueError, match="'t-bad'.*shape"):
        cache.write("t-bad", random_mel()[:64])
    assert not cache.has("t-bad")
    half = MelCache(tmp_path / "half", frontend_params=cache_params(frontend, dtype="float16"))
    with pytest.raises(ValueError, match="float16"):
        half.write("loud", np.full((128, 3), 1e5, dtype=np.float32))  # overflows float16 to inf


def test_track_ids_map_to_safe_distinct_paths(cache):
    plain = cache.path_for("track-01_v2.mp3")
    assert plain.name == "track-01_v2.mp3.npy"
    assert plain.parent.parent == cache.root and re.fullmatch(r"[0-9a-f]{2}", plain.parent.name)
    odd = ["a/b c", "a_b_c", "../escape", ".hidden", "ünïcödé", "日本の歌", "x" * 300, "Abc", "abc"]
    paths = [cache.path_for(t) for t in odd]
    assert len(set(paths)) == len(odd)
    for track_id, path in zip(odd, paths):
        assert path.parent.parent == cache.root
        assert re.fullmatch(r"[A-Za-z0-9._=-]{1,210}\.npy", path.name), path.name
        assert not path.name.startswith(".")
        cache.write(track_id, random_mel(seed=len(track_id)))
    for track_id in odd:
        np.testing.assert_array_equal(cache.read(track_id), random_mel(seed=len(track_id)))
    # a plain id spelled like a hashed name cannot take a hashed id's file
    hashed = cache.path_for("a/b c")
    assert cache.path_for(hashed.stem.replace("=", "-")) != hashed


def test_leftover_temp_file_is_never_an_entry(cache, tracks, frontend):
    track_id, path = tracks[0]
    final = cache.path_for(track_id)
    final.parent.mkdir(parents=True)
    # what a writer killed mid-write leaves behind: a hidden, truncated temp file next to the entry
    good = mel_from_file(path, frontend)
    with open(final.parent / f".{final.name}.k1ll3d.tmp", "wb") as f:
        np.save(f, good)
    truncated = final.parent / f".{final.name}.k1ll3d.tmp"
    truncated.write_bytes(truncated.read_bytes()[:200])
    assert not cache.has(track_id)
    with pytest.raises(FileNotFoundError, match=track_id):
        cache.read(track_id)
    outcome = prepare_mels(cache, tracks[:1], frontend, progress=False)
    assert outcome.n_computed == 1
    np.testing.assert_array_equal(cache.read(track_id), good)


def test_failed_write_leaves_no_entry_and_no_temp(cache, monkeypatch):
    def save_half_then_die(f, arr, allow_pickle):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        cache.write("t1", random_mel())
    assert not cache.has("t1")
    assert list(cache.path_for("t1").parent.iterdir()) == []


# --- prepare_mels ---------------------------------------------------------------------------------------


class DiesAfter(MelFrontend):
    """A front end that crashes on its (k + 1)-th call: a run killed half-way."""

    def __init__(self, *, k: int):
        super().__init__(sample_rate=SR, n_fft=1024, hop_length=512, n_mels=128)
        self.k, self.calls = k, 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.k:
            raise RuntimeError("killed")
        return super().forward(y)


def test_prepare_is_resumable_and_equals_an_uninterrupted_run(tmp_path, frontend, tracks):
    ids = [t for t, _ in tracks]
    reference = MelCache(tmp_path / "reference", frontend_params=cache_params(frontend))
    full = prepare_mels(reference, tracks, frontend, progress=False)
    assert full.done == ids and full.n_computed == 6 and full.skipped == {}

    cache = MelCache(tmp_path / "resumed", frontend_params=cache_params(frontend))
    with pytest.raises(RuntimeError, match="killed"):
        prepare_mels(cache, tracks, DiesAfter(k=3), progress=False)
    assert [cache.has(t) for t in ids] == [True] * 3 + [False] * 3
    resumed = prepare_mels(cache, tracks, frontend, progress=True)
    assert resumed.n_computed == 3  # only the missing ones
    assert resumed.done == ids and resumed.skipped == {}
    assert entry_bytes(cache, ids) == entry_bytes(reference, ids)
    again = prepare_mels(cache, tracks, DiesAfter(k=0), progress=False)  # nothing left: never calls the front end
    assert again.n_computed == 0 and again.done == ids
    np.testing.assert_array_equal(cache.read("track2"), mel_from_file(tracks[2][1], frontend))


def test_prepare_skips_bad_audio_with_reasons(tmp_path, cache, frontend, tracks):
    corrupt, silent, short, text = (tmp_path / n for n in ("corrupt.wav", "silent.flac", "short.wav", "notes.txt"))
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    sf.write(silent, np.zeros(2 * SR), SR)
    sf.write(short, 0.3 * np.sin(np.linspace(0, 2000, SR // 4)), SR)
    text.write_text("la la la")
    items = [tracks[0], ("corrupt", corrupt), ("silent", silent), tracks[1], ("short", short), ("text", text)]
    outcome = prepare_mels(cache, items, frontend, min_seconds=0.5, progress=False)
    assert outcome.done == ["track0", "track1"] and outcome.n_computed == 2
    assert list(outcome.skipped) == ["corrupt", "silent", "short", "text"]
    assert outcome.skipped["corrupt"].startswith("decode error: ") and str(corrupt) in outcome.skipped["corrupt"]
    assert outcome.skipped["silent"] == "silent"
    assert outcome.skipped["short"].startswith("too short: 0.25 s")
    assert outcome.skipped["text"].startswith("decode error: ") and "extension" in outcome.skipped["text"]
    assert not any(cache.has(t) for t in outcome.skipped)


def test_prepare_with_workers_is_identical_to_in_process(tmp_path, frontend, tracks):
    ids = [t for t, _ in tracks]
    items = tracks + [("missing", tmp_path / "missing.wav")]
    serial = MelCache(tmp_path / "serial", frontend_params=cache_params(frontend))
    parallel = MelCache(tmp_path / "parallel", frontend_params=cache_params(frontend))
    a = prepare_mels(serial, items, frontend, num_workers=0, progress=False)
    b = prepare_mels(parallel, items, frontend, num_workers=2, progress=False)
    assert a == b and a.done == ids  # same order and reasons, whatever order the workers finished in
    assert entry_bytes(parallel, ids) == entry_bytes(serial, ids)


def test_prepare_refuses_another_frontend_and_duplicate_ids(cache, tracks):
    with pytest.raises(CacheMismatchError, match="n_mels: expected 64, found 128"):
        prepare_mels(cache, tracks, MelFrontend(n_mels=64), progress=False)
    with pytest.raises(ValueError, match="'track0' appears more than once"):
        prepare_mels(cache, tracks + tracks[:1], MelFrontend(), progress=False)
