"""A preparation killed half-way (SIGKILL, as by the OOM killer or a pre-empted job) resumes to the same store.

``python main.py mode=prepare data=folder`` runs in a subprocess with 2 worker processes on 60 generated
tracks and is killed once the mel store has committed a few tracks; its orphaned workers must exit by
themselves. Running the same command again must finish the import, keep the committed tracks as they were (their
bytes at the same place in the shard: not recomputed, not rewritten) and give a store whose every mel is
byte-identical to that of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.data.prepared import PreparedDataset

from conftest import REPO, run_task

N_TRACKS = 60
KILL_AFTER_ENTRIES = 5
ORPHAN_EXIT_S = 10.0


def make_folder(root: Path) -> None:
    """60 mono 44.1 kHz FLACs of 10 s (resampled to 22,050 Hz by the import) and their tags."""
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(10 * 44100) / 44100
    rows = []
    for i in range(N_TRACKS):
        y = 0.3 * np.sin(2 * np.pi * (100 + 7 * i) * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(root / "audio" / f"track{i:02d}.flac", y.astype(np.float32), 44100)
        rows.append({"track_id": f"track{i:02d}", "tags": "low" if i % 2 else "high", "artist": f"a{i % 12}"})
    pd.DataFrame(rows).to_csv(root / "tags.csv", index=False)


def entries(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Committed tracks of the mel store at ``root``: id -> (shard, first frame, the mel's bytes); {} before any."""
    try:
        store = MelStore.open(root, frontend=MelFrontend())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    ids = store.track_ids
    where = store.locate(ids)
    return {t: (int(where.shard[i]), int(where.offset[i]), store.read(t).tobytes()) for i, t in enumerate(ids)}


def prepare_args(root: Path, run_dir: Path) -> list[str]:
    return ["mode=prepare", "data=folder", f"data.root={root}", "data.num_workers=2", "progress=false",
            f"hydra.run.dir={run_dir}"]


def wait_for_group_exit(pgid: int, *, timeout_s: float) -> bool:
    """True once no process of group ``pgid`` is left (the killed parent's workers exited by themselves)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_killed_prepare_resumes_to_the_same_cache_without_recomputing(tmp_path):
    root, reference_root = tmp_path / "data", tmp_path / "reference"
    make_folder(root)
    shutil.copytree(root, reference_root)
    cache = root / "prepared" / "mels"

    # 1. start the import in its own process group and SIGKILL the main process once a few mels are cached
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), *prepare_args(root, tmp_path / "run1")],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(entries(cache)) < KILL_AFTER_ENTRIES and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert process.poll() is None, "the import finished (or failed) before it could be interrupted: " + \
            process.stderr.read().decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        # the orphaned workers should notice that their parent is gone and exit (after their current track)
        workers_exited = wait_for_group_exit(process.pid, timeout_s=ORPHAN_EXIT_S)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # workers left behind (and everything, if the test failed)
        except ProcessLookupError:
            pass
        process.stderr.close()
    assert wait_for_group_exit(process.pid, timeout_s=30)
    assert process.returncode == -signal.SIGKILL
    interrupted = entries(cache)
    assert KILL_AFTER_ENTRIES <= len(interrupted) < N_TRACKS, f"{len(interrupted)} entries after the kill"
    assert not (root / "prepared" / "manifest.json").exists()  # an unfinished import is never read

    # 2. the same command again (in-process: the same code path, one interpreter start-up less) finishes it
    run_task(prepare_args(root, tmp_path / "run2")[:-1], tmp_path / "run2")
    final = entries(cache)
    assert len(final) == N_TRACKS and len(PreparedDataset.load(root / "prepared").tracks) == N_TRACKS
    for name, before in interrupted.items():  # committed tracks were neither recomputed nor moved
        assert final[name] == before

    # 3. byte-identical to an uninterrupted run
    run_task(prepare_args(reference_root, tmp_path / "run3")[:-1], tmp_path / "run3")
    reference_cache = reference_root / "prepared" / "mels"
    reference = entries(reference_cache)
    assert reference.keys() == final.keys()
    for name in final:
        assert final[name][2] == reference[name][2], name

    assert workers_exited, f"prepare_mels' worker processes were still alive {ORPHAN_EXIT_S} s after their parent " \
        "was killed"
