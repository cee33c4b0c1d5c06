"""Faults survived: a training run killed with SIGKILL resumes to the uninterrupted result; a full disk while filling
the mel store leaves nothing partial and names the file; the next run finishes the job."""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tagretrieval.audio import MelFrontend, MelStore, cache_params, prepare_mels
from tagretrieval.audio.store import MelStoreWriter
from tagretrieval.runtime.files import FileWriteError

from conftest import read_metrics, run_main, run_task

pytestmark = pytest.mark.reliability


@pytest.mark.slow  # three main.py runs: in CI's `pytest -m slow`
def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, smoke_overrides, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # main.py finds the fault-injecting callback
    common = [*smoke_overrides, "model=acoustic", "trainer.max_epochs=3", "logger=none"]
    killed = run_main([*common, "+callbacks.killer._target_=fault_callbacks.KillDuringEpoch",
                       "+callbacks.killer.epoch=2", "+callbacks.killer.batch=1", f"hydra.run.dir={tmp_path / 'killed'}"],
                      cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert last.exists() and not (tmp_path / "killed" / "metrics" / "test.json").exists()
    resumed = run_main([*common, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    uninterrupted = run_main([*common, f"hydra.run.dir={tmp_path / 'full'}"], cwd=tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    assert read_metrics(tmp_path / "resumed") == read_metrics(tmp_path / "full")


def test_a_full_disk_while_filling_the_store_leaves_nothing_partial_and_names_the_file(tmp_path, monkeypatch):
    frontend = MelFrontend()
    items = []
    for i in range(6):
        path = tmp_path / f"t{i}.wav"
        sf.write(path, 0.3 * np.sin(np.linspace(0, 300 * (i + 1), 22050)), 22050)
        items.append((f"t{i}", path))
    store = MelStore(tmp_path / "mels", frontend_params=cache_params(frontend))
    real_write, calls = MelStoreWriter._write_bytes, {"n": 0}

    def disk_fills_at_the_fourth_track(self, data):
        calls["n"] += 1
        if calls["n"] == 4:
            self._file.write(bytes(data)[: len(data) // 3])  # part of the track reached the disk, then ENOSPC
            raise FileWriteError(self._file.name, OSError(errno.ENOSPC, "No space left on device"))
        real_write(self, data)

    monkeypatch.setattr(MelStoreWriter, "_write_bytes", disk_fills_at_the_fourth_track)
    with pytest.raises(FileWriteError, match=r"shard-00000\.mel.*No space left") as info:
        prepare_mels(store, items, frontend, progress=False)
    assert info.value.errno == errno.ENOSPC
    reopened = MelStore(tmp_path / "mels", frontend_params=cache_params(frontend))
    assert sorted(reopened.track_ids) == ["t0", "t1", "t2"]  # the three complete ones, never the partial fourth
    monkeypatch.setattr(MelStoreWriter, "_write_bytes", real_write)  # space again: the same call finishes the job
    outcome = prepare_mels(reopened, items, frontend, progress=False)
    assert outcome.n_computed == 3 and sorted(reopened.track_ids) == [t for t, _ in items]
    fresh = MelStore(tmp_path / "fresh", frontend_params=cache_params(frontend))
    prepare_mels(fresh, items, frontend, progress=False)
    for track_id, _ in items:
        np.testing.assert_array_equal(reopened.read(track_id), fresh.read(track_id))
