"""The packed mel store (MelStore), the job that fills it (prepare_mels) and the conversion of the old per-file cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from tagretrieval.audio import (
    CacheMismatchError,
    LegacyCacheError,
    LegacyMelCache,
    MelFrontend,
    MelStore,
    cache_params,
    mel_from_file,
    open_for_prepare,
    prepare_mels,
)

SR = 22050


@pytest.fixture
def frontend() -> MelFrontend:
    return MelFrontend(sample_rate=SR, n_fft=1024, hop_length=512, n_mels=128)


@pytest.fixture
def store(tmp_path, frontend) -> MelStore:
    return MelStore(tmp_path / "mels", frontend_params=cache_params(frontend))


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


def random_mel(*, n_frames: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-30, 10, size=(128, n_frames)).astype(np.float32)


def contents(store: MelStore) -> dict[str, np.ndarray]:
    return {t: store.read(t) for t in sorted(store.track_ids)}


# --- MelStore -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_write_read_round_trip_time_major(tmp_path, frontend, dtype):
    store = MelStore(tmp_path / "mels", frontend_params=cache_params(frontend, dtype=dtype))
    mels = {f"t{i}": random_mel(n_frames=5 + i, seed=i) for i in range(3)}
    assert not store.has("t0") and len(store) == 0
    with store.writer() as writer:
        for track_id, mel in mels.items():
            writer.add(track_id, mel)
    reopened = MelStore(tmp_path / "mels", frontend_params=cache_params(frontend, dtype=dtype))
    for s in (store, reopened):
        assert sorted(s.track_ids) == sorted(mels) and s.has("t1")
        for track_id, mel in mels.items():
            stored = s.read(track_id)
            assert stored.dtype == np.dtype(dtype) and stored.shape == (mel.shape[1], 128)  # [n_frames, n_mels]
            np.testing.assert_array_equal(stored, mel.T.astype(dtype))
    manifest = json.loads((tmp_path / "mels" / "manifest.json").read_text())
    assert manifest["frontend_params"] == cache_params(frontend, dtype=dtype) and manifest["layout_version"] == 2
    assert [p.name for p in sorted((tmp_path / "mels").glob("shard-*"))] == ["shard-00000.idx.npz", "shard-00000.mel"]
    assert (tmp_path / "mels" / "shard-00000.mel").stat().st_size == sum(m.size for m in mels.values()) * \
        np.dtype(dtype).itemsize  # packed: nothing but the values


def test_crops_are_one_read_each_and_zero_padded_past_the_end(store):
    mel = random_mel(n_frames=40, seed=3)
    store.write("song", mel)
    where = store.locate(["song", "song", "song"])
    before = store.bytes_read
    crops = store.read_frames(where, np.array([0, 30, 45]), 16)  # in the song, over its end, past it
    assert crops.shape == (3, 16, 128)
    np.testing.assert_array_equal(crops[0], mel.T[0:16])
    np.testing.assert_array_equal(crops[1, :10], mel.T[30:40])
    assert (crops[1, 10:] == 0).all() and (crops[2] == 0).all()
    assert store.bytes_read - before == (16 + 10) * 128 * 4  # exactly the frames asked for, nothing more


def test_manifest_mismatch_names_every_difference(tmp_path, frontend, store):
    other = MelFrontend(sample_rate=SR, n_fft=1024, hop_length=256, n_mels=96)
    with pytest.raises(CacheMismatchError) as info:
        MelStore(store.root, frontend_params=cache_params(other))
    message = str(info.value)
    assert str(store.root) in message
    assert "n_mels: expected 96, found 128" in message
    assert "hop_length: expected 256, found 512" in message
    assert "sample_rate" not in message  # only what differs
    with pytest.raises(CacheMismatchError, match="dtype: expected 'float16', found 'float32'"):
        MelStore(store.root, frontend_params=cache_params(frontend, dtype="float16"))
    with pytest.raises(ValueError, match="dtype"):
        MelStore(tmp_path / "other", frontend_params=frontend.params())  # caller must pass the full params


def test_write_refuses_non_finite_bad_shapes_and_duplicates(store, tmp_path, frontend):
    for bad in (np.nan, np.inf):
        mel = random_mel()
        mel[3, 2] = bad
        with pytest.raises(ValueError, match="'t-bad'.*NaN/inf"):
            store.write("t-bad", mel)
    with pytest.raises(ValueError, match="'t-bad'.*shape"):
        store.write("t-bad", random_mel()[:64])
    assert not store.has("t-bad")
    half = MelStore(tmp_path / "half", frontend_params=cache_params(frontend, dtype="float16"))
    with pytest.raises(ValueError, match="float16"):
        half.write("loud", np.full((128, 3), 1e5, dtype=np.float32))  # overflows float16 to inf
    store.write("once", random_mel())
    with pytest.raises(ValueError, match="'once' is already in the mel store"):
        store.write("once", random_mel(seed=1))


def test_any_track_id_is_stored(store):
    odd = ["a/b c", "a_b_c", "../escape", ".hidden", "ünïcödé", "日本の歌", "x" * 300, "Abc", "abc"]
    with store.writer() as writer:
        for track_id in odd:
            writer.add(track_id, random_mel(seed=len(track_id)))
    for track_id in odd:
        np.testing.assert_array_equal(store.read(track_id), random_mel(seed=len(track_id)).T)
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == [
        "manifest.json", "shard-00000.idx.npz", "shard-00000.mel"]  # ids never become file names


def test_shards_roll_over_and_each_reader_process_opens_them_once(tmp_path, frontend):
    store = MelStore(tmp_path / "mels", frontend_params=cache_params(frontend))
    with store.writer(shard_bytes=10 * 128 * 4) as writer:  # 10 frames per shard
        for i in range(5):
            writer.add(f"t{i}", random_mel(n_frames=6, seed=i))
    assert store.shard_names == ["shard-00000", "shard-00001", "shard-00002"]
    where = store.locate([f"t{i}" for i in range(5)])
    assert where.shard.tolist() == [0, 0, 1, 1, 2]
    crops = store.read_frames(where, np.zeros(5, dtype=np.int64), 6)
    for i in range(5):
        np.testing.assert_array_equal(crops[i], random_mel(n_frames=6, seed=i).T)
    assert len(store._fds) == 3  # one descriptor per shard, kept


WRITE_THEN_DIE = textwrap.dedent("""
    import os, sys
    import numpy as np
    from tagretrieval.audio import MelFrontend, MelStore, cache_params
    store = MelStore(sys.argv[1], frontend_params=cache_params(MelFrontend()))
    with store.writer(commit_seconds=3600, commit_tracks=1000) as writer:
        for i in range(3):
            writer.add(f"t{i}", np.full((128, 5), float(i), dtype=np.float32))
        writer.commit()
        for i in range(3, 6):
            writer.add(f"t{i}", np.full((128, 5), float(i), dtype=np.float32))
        os._exit(9)  # SIGKILL-like: no clean-up, three tracks appended but never committed
""")


def test_a_writer_killed_mid_way_loses_only_its_uncommitted_tail(tmp_path, frontend):
    """The dead writer's uncommitted tracks are absent and its committed ones read back exactly. Its dead tail is not
    cut away (it used to be): where the lock does not exclude, bytes past the committed ones may be another live
    writer's, so the next writer leaves them as unreferenced space and appends after the shard's real end."""
    root = tmp_path / "mels"
    done = subprocess.run([sys.executable, "-c", WRITE_THEN_DIE, str(root)], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    store = MelStore(root, frontend_params=cache_params(frontend))
    assert sorted(store.track_ids) == ["t0", "t1", "t2"]  # what the manifest committed, no more
    track_bytes = 5 * 128 * 4
    assert (root / "shard-00000.mel").stat().st_size == 6 * track_bytes  # the dead tail is on disk
    with store.writer() as writer:  # the next writer appends after it: t3 again, now with other values
        writer.add("t3", np.full((128, 5), 30.0, dtype=np.float32))
    assert (root / "shard-00000.mel").stat().st_size == 7 * track_bytes
    reopened = MelStore(root, frontend_params=cache_params(frontend))
    assert sorted(reopened.track_ids) == ["t0", "t1", "t2", "t3"]
    assert reopened.locate(["t3"]).offset.tolist() == [6 * 5]  # the new bytes, not the dead writer's t3
    for i in range(4):
        np.testing.assert_array_equal(reopened.read(f"t{i}"), np.full((5, 128), 30.0 if i == 3 else float(i)))


def test_two_writers_whose_lock_does_not_exclude_keep_each_track_its_own_frames(tmp_path, frontend, monkeypatch):
    """Issue 17 item 5: on a file system whose lock does not exclude (here ``flock`` is a no-op), two writers append
    to one store in turns, roll over shards and commit at different times. Every track reads back its own frames
    exactly, and neither writer's commit drops the other's tracks."""
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda *args, **kwargs: None)
    root = tmp_path / "mels"
    MelStore(root, frontend_params=cache_params(frontend))
    n_tracks = 12
    turn = threading.Condition()
    state = {"turn": 0, "errors": []}

    def mel(writer: int, i: int) -> np.ndarray:
        return random_mel(n_frames=3 + (5 * i + writer) % 6, seed=100 * writer + i)

    def in_turn(writer: int, step) -> None:  # the two writers act strictly in turns: 0, 1, 0, 1, ...
        with turn:
            assert turn.wait_for(lambda: state["turn"] == writer or state["errors"], timeout=120)
            try:
                if not state["errors"]:
                    step()
            except Exception as error:  # noqa: BLE001 - handed to the test's thread below
                state["errors"].append(error)
            state["turn"] = 1 - writer
            turn.notify_all()

    def job(writer: int) -> None:
        store = MelStore(root, frontend_params=cache_params(frontend))
        opened = store.writer(shard_bytes=40 * 128 * 4, commit_seconds=3600, commit_tracks=3 + writer)
        handle = {}
        in_turn(writer, lambda: handle.setdefault("writer", opened.__enter__()))
        for i in range(n_tracks):
            in_turn(writer, lambda i=i: handle["writer"].add(f"w{writer}-{i}", mel(writer, i)))
        in_turn(writer, lambda: opened.__exit__(None, None, None))

    threads = [threading.Thread(target=job, args=(writer,)) for writer in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if state["errors"]:
        raise state["errors"][0]
    reopened = MelStore(root, frontend_params=cache_params(frontend))
    assert len(reopened.shard_names) > 1  # the writers rolled over shards too
    for track_id in reopened.track_ids:  # every committed track: its own frames, not the other writer's
        writer, i = (int(part) for part in track_id[1:].split("-"))
        np.testing.assert_array_equal(reopened.read(track_id), mel(writer, i).T, err_msg=track_id)
    assert sorted(reopened.track_ids) == sorted(f"w{w}-{i}" for w in (0, 1) for i in range(n_tracks))


def test_a_track_another_unlocked_writer_committed_meanwhile_is_kept_once_not_refused(tmp_path, frontend,
                                                                                       monkeypatch):
    """Two unlocked imports of one folder compute the same tracks: one that the other writer committed after this
    writer checked for it (seen in this writer's next commit) is skipped, not refused as a duplicate."""
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda *args, **kwargs: None)
    root = tmp_path / "mels"
    first, second = (MelStore(root, frontend_params=cache_params(frontend)) for _ in range(2))
    with first.writer(commit_tracks=1) as a, second.writer(commit_tracks=1) as b:
        a.add("x", random_mel(seed=1))  # committed by the first writer
        b.add("y", random_mel(seed=2))  # the second writer's commit merges "x" in
        b.add("x", random_mel(seed=1))  # computed meanwhile by the second import: kept once
        with pytest.raises(ValueError, match="already in the mel store"):
            b.add("y", random_mel(seed=2))  # a caller's own duplicate is still refused
    reopened = MelStore(root, frontend_params=cache_params(frontend))
    assert sorted(reopened.track_ids) == ["x", "y"]
    np.testing.assert_array_equal(reopened.read("x"), random_mel(seed=1).T)
    np.testing.assert_array_equal(reopened.read("y"), random_mel(seed=2).T)


WRITE_WITHOUT_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    import numpy as np
    from tagretrieval.audio import MelFrontend, MelStore, cache_params
    fcntl.flock = lambda *args, **kwargs: None  # a lock that does not exclude
    root, writer_id, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = MelStore(root, frontend_params=cache_params(MelFrontend()))
    while not os.path.exists(go):  # both processes start writing together
        time.sleep(0.001)
    with store.writer(shard_bytes=60 * 128 * 4, commit_tracks=1) as writer:
        for i in range(40):
            mel = np.random.default_rng(100 * writer_id + i).normal(size=(128, 3 + (5 * i + writer_id) % 6))
            writer.add(f"w{writer_id}-{i}", mel.astype(np.float32))
""")


def test_two_free_running_writer_processes_without_a_lock_never_mix_up_frames(tmp_path, frontend):
    """Two processes append and commit at the same time, unlocked, as on two nodes of a file system whose lock does
    not exclude (the issue measured 19 of 29 committed tracks reading another track's frames)."""
    root, go = tmp_path / "mels", tmp_path / "go"
    MelStore(root, frontend_params=cache_params(frontend))
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_WITHOUT_LOCK, str(root), str(w), str(go)],
                                stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    time.sleep(0.5)
    go.touch()
    errors = [writer.communicate(timeout=300)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    reopened = MelStore(root, frontend_params=cache_params(frontend))
    assert len(reopened) > 40  # both writers committed (a race of two commits may drop a last one: computed again)
    for track_id in reopened.track_ids:
        writer, i = (int(part) for part in track_id[1:].split("-"))
        mel = np.random.default_rng(100 * writer + i).normal(size=(128, 3 + (5 * i + writer) % 6)).astype(np.float32)
        np.testing.assert_array_equal(reopened.read(track_id), mel.T, err_msg=track_id)


# --- prepare_mels ---------------------------------------------------------------------------------------------


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
    reference = MelStore(tmp_path / "reference", frontend_params=cache_params(frontend))
    full = prepare_mels(reference, tracks, frontend, progress=False)
    assert full.done == ids and full.n_computed == 6 and full.skipped == {}

    store = MelStore(tmp_path / "resumed", frontend_params=cache_params(frontend))
    with pytest.raises(RuntimeError, match="killed"):
        prepare_mels(store, tracks, DiesAfter(k=3), progress=False)
    assert [store.has(t) for t in ids] == [True] * 3 + [False] * 3  # a crash still commits what was computed
    resumed = prepare_mels(store, tracks, frontend, progress=True)
    assert resumed.n_computed == 3  # only the missing ones
    assert resumed.done == ids and resumed.skipped == {}
    assert {t: v.tobytes() for t, v in contents(store).items()} == \
        {t: v.tobytes() for t, v in contents(reference).items()}
    again = prepare_mels(store, tracks, DiesAfter(k=0), progress=False)  # nothing left: never calls the front end
    assert again.n_computed == 0 and again.done == ids
    np.testing.assert_array_equal(store.read("track2"), mel_from_file(tracks[2][1], frontend).T)


def test_prepare_skips_bad_audio_with_reasons(tmp_path, store, frontend, tracks):
    corrupt, silent, short, text, empty = (tmp_path / n for n in
                                          ("corrupt.wav", "silent.flac", "short.wav", "notes.txt", "empty.mp3"))
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    sf.write(silent, np.zeros(2 * SR), SR)
    sf.write(short, 0.3 * np.sin(np.linspace(0, 2000, SR // 4)), SR)
    text.write_text("la la la")
    empty.write_bytes(b"")
    items = [tracks[0], ("corrupt", corrupt), ("silent", silent), tracks[1], ("short", short), ("text", text),
             ("empty", empty)]
    outcome = prepare_mels(store, items, frontend, min_seconds=0.5, progress=False)
    assert outcome.done == ["track0", "track1"] and outcome.n_computed == 2
    assert list(outcome.skipped) == ["corrupt", "silent", "short", "text", "empty"]
    assert outcome.skipped["corrupt"].startswith("decode error: ") and str(corrupt) in outcome.skipped["corrupt"]
    assert outcome.skipped["silent"] == "silent"
    assert outcome.skipped["short"].startswith("too short: 0.25 s")
    assert outcome.skipped["text"].startswith("decode error: ") and "extension" in outcome.skipped["text"]
    assert outcome.skipped["empty"].startswith("empty: ") and "0 bytes" in outcome.skipped["empty"]
    assert not any(store.has(t) for t in outcome.skipped)


def test_prepare_with_workers_is_identical_to_in_process(tmp_path, frontend, tracks):
    ids = [t for t, _ in tracks]
    items = tracks + [("missing", tmp_path / "missing.wav")]
    serial = MelStore(tmp_path / "serial", frontend_params=cache_params(frontend))
    parallel = MelStore(tmp_path / "parallel", frontend_params=cache_params(frontend))
    a = prepare_mels(serial, items, frontend, num_workers=0, progress=False)
    b = prepare_mels(parallel, items, frontend, num_workers=2, progress=False)
    assert a == b and a.done == ids  # same order and reasons, whatever order the workers finished in
    assert {t: v.tobytes() for t, v in contents(parallel).items()} == \
        {t: v.tobytes() for t, v in contents(serial).items()}


def test_prepare_refuses_another_frontend_and_duplicate_ids(store, tracks):
    with pytest.raises(CacheMismatchError, match="n_mels: expected 64, found 128"):
        prepare_mels(store, tracks, MelFrontend(n_mels=64), progress=False)
    with pytest.raises(ValueError, match="'track0' appears more than once"):
        prepare_mels(store, tracks + tracks[:1], MelFrontend(), progress=False)


# --- the old per-file cache -----------------------------------------------------------------------------------


def test_an_old_per_file_cache_is_converted_without_recomputing(tmp_path, frontend, tracks):
    root = tmp_path / "mels"
    legacy = LegacyMelCache(root, frontend_params=cache_params(frontend))
    for track_id, path in tracks[:4]:
        legacy.write(track_id, mel_from_file(path, frontend))
    with pytest.raises(LegacyCacheError, match="mode=prepare"):  # the loader says what to do, never reads it
        MelStore.open(root, frontend=frontend)

    store = open_for_prepare(root, frontend_params=cache_params(frontend))
    counting = DiesAfter(k=2)  # two tracks are not in the old cache; a third computation would crash
    outcome = prepare_mels(store, tracks, counting, progress=False)
    assert outcome.n_converted == 4 and outcome.n_computed == 2 and counting.calls == 2
    assert not (tmp_path / "mels.v1").exists() and len(store) == 6
    for track_id, path in tracks:
        np.testing.assert_array_equal(store.read(track_id), mel_from_file(path, frontend).T)
    with pytest.raises(CacheMismatchError, match="n_mels"):  # an old cache of other parameters is refused too
        LegacyMelCache(tmp_path / "old", frontend_params=cache_params(MelFrontend(n_mels=64)))
        open_for_prepare(tmp_path / "old", frontend_params=cache_params(frontend))
    assert os.path.isdir(tmp_path / "old")
