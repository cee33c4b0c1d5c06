"""One import, many readers: concurrent imports of one folder, refused imports, the import lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import REPO, run_task
from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.data.folder.importer import FolderImporter
from tagretrieval.runtime.lock import exclusive, lock_path_for
from tagretrieval.data.prepared import PreparedDataError, PreparedDataset
from tagretrieval.data.report import TooManySkippedError

N_GOOD = 24


def make_folder(root: Path, *, n_good: int = N_GOOD, n_bad: int = 0) -> Path:
    """``n_good`` 1.5 s tones by 8 artists in two genres and two moods, plus ``n_bad`` undecodable files."""
    (root / "audio").mkdir(parents=True)
    rows = []
    rate = 22050
    t = np.arange(int(1.5 * rate)) / rate
    for i in range(n_good):
        sf.write(root / "audio" / f"t{i:02d}.wav", 0.4 * np.sin(2 * np.pi * (200 + 30 * i) * t), rate)
        rows.append({"track_id": f"t{i:02d}", "artist": f"a{i % 8}",
                     "tags": ";".join(["rock" if i % 2 else "jazz", "happy" if i % 3 else "sad"])})
    for i in range(n_bad):
        (root / "audio" / f"bad{i}.wav").write_bytes(b"RIFF not a wav file")
        rows.append({"track_id": f"bad{i}", "artist": "a0", "tags": "rock"})
    pd.DataFrame(rows).to_csv(root / "tags.csv", index=False)
    return root


def folder_importer(root: Path, *, max_skipped_fraction: float) -> FolderImporter:
    return FolderImporter(root=str(root), prepared_dir=str(root / "prepared"),
                          max_skipped_fraction=max_skipped_fraction)


# ---------------------------------------------------------------- refused imports
def test_a_refused_import_is_never_loadable(tmp_path):
    root = make_folder(tmp_path / "mydata", n_bad=4)  # 4 of 28 tracks skipped: 14% > 10%
    frontend = MelFrontend()
    for attempt in range(2):  # the same command twice: refused both times, never trained on
        with pytest.raises(TooManySkippedError, match="4 of 28"):
            folder_importer(root, max_skipped_fraction=0.1).prepare(frontend=frontend, progress=False)
    with pytest.raises(PreparedDataError):
        PreparedDataset.load(root / "prepared")
    report = json.loads((root / "prepared" / "prepare_report.json").read_text())
    assert report["counts"] == {"decode error": 4}  # the user sees why
    # through main.py's task layer: mode=prepare, then a training run, both refuse
    for mode in ("prepare", "train"):
        with pytest.raises(TooManySkippedError):
            run_task([f"mode={mode}", "data=folder", f"data.root={root}", "model=acoustic", "experiment=smoke",
                      "progress=false", "logger=none"], tmp_path / f"run_{mode}")
    # allowed with a looser threshold (the mel cache is reused: only the import's last step runs again)
    dataset = folder_importer(root, max_skipped_fraction=0.2).prepare(frontend=frontend, progress=False)
    assert len(dataset.tracks) == N_GOOD


def test_an_import_accepted_under_a_looser_threshold_is_refused_under_a_stricter_one(tmp_path):
    root = make_folder(tmp_path / "mydata", n_bad=4)
    frontend = MelFrontend()
    assert len(folder_importer(root, max_skipped_fraction=0.5).prepare(frontend=frontend, progress=False).tracks) \
        == N_GOOD
    with pytest.raises(TooManySkippedError):
        folder_importer(root, max_skipped_fraction=0.1).prepare(frontend=frontend, progress=False)
    with pytest.raises(PreparedDataError):  # and the folder is no longer loadable by anyone
        PreparedDataset.load(root / "prepared")


# ---------------------------------------------------------------- the lock
def test_the_lock_makes_a_second_process_wait_and_names_the_holder(tmp_path, caplog):
    lock = lock_path_for(tmp_path / "prepared")
    assert lock == tmp_path / ".prepared.lock"
    holder = subprocess.Popen(  # holds the lock until it reads a line
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from tagretrieval.runtime.lock import exclusive
            with exclusive({str(lock)!r}, purpose="import of test"):
                print("locked", flush=True)
                sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    outcome = []
    try:
        assert holder.stdout.readline().strip() == "locked"
        with caplog.at_level("INFO", logger="tagretrieval.runtime.lock"):
            def wait_for_the_lock():
                with exclusive(lock, purpose="import of test") as locked:
                    outcome.append(locked)

            waiter = threading.Thread(target=wait_for_the_lock)
            waiter.start()
            deadline = time.monotonic() + 120
            while "waiting for" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            assert outcome == []  # still waiting: the holder has the lock
            assert f"pid {holder.pid}" in caplog.text and "import of test" in caplog.text
            holder.stdin.write("release\n")
            holder.stdin.flush()
            waiter.join(timeout=120)
        assert outcome == [True]  # took the lock once the holder let it go
        assert "took the lock" in caplog.text
    finally:
        holder.kill() if holder.poll() is None else None
        holder.wait(timeout=60)


@pytest.mark.parametrize("failure", ["read-only folder", "no flock"])
def test_an_unlockable_folder_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog, failure):
    import errno
    import fcntl

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS if failure == "read-only folder" else errno.ENOLCK, "refused")

    monkeypatch.setattr(os, "open", refuse) if failure == "read-only folder" else monkeypatch.setattr(
        fcntl, "flock", refuse)
    ran = []
    with caplog.at_level("WARNING"), exclusive(tmp_path / ".x.lock", purpose="import of x") as locked:
        ran.append(locked)
    assert ran == [False]
    assert "import of x runs without a lock" in caplog.text


def test_an_import_on_a_file_system_without_flock_runs_unlocked_and_warns_once(tmp_path, monkeypatch, caplog):
    """Issue 17 item 6: where ``flock`` fails with ENOSYS (Lustre without ``-o flock``) a real import through
    main.py's task layer finishes, unlocked, with one warning (the mel store's writer used to call ``flock`` itself
    and crash with ``OSError: [Errno 38]``)."""
    import errno
    import fcntl

    def no_flock(*args, **kwargs):
        raise OSError(errno.ENOSYS, "Function not implemented")

    root = make_folder(tmp_path / "mydata")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    with caplog.at_level("WARNING"):
        run_task(["mode=prepare", "data=folder", f"data.root={root}", "progress=false", "logger=none"],
                 tmp_path / "run")
    warnings = [r.getMessage() for r in caplog.records if "runs without a lock" in r.getMessage()]
    assert len(warnings) == 1 and "import of" in warnings[0], warnings
    dataset = PreparedDataset.load(root / "prepared")
    store = MelStore.open(root / "prepared" / "mels", frontend=MelFrontend())
    assert len(dataset.tracks) == N_GOOD and sorted(store.track_ids) == sorted(dataset.tracks["track_id"])


def test_threads_of_one_process_cannot_share_the_lock_by_accident(tmp_path):
    """flock locks belong to open file descriptions: two ``with`` blocks in one process exclude each other too."""
    lock = tmp_path / ".x.lock"
    inside, overlaps = [], []

    def work():
        with exclusive(lock, purpose="x"):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.2)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1]


# ---------------------------------------------------------------- two processes, one folder
DECODE_HOOK = '''
import os
if os.environ.get("TAGRETRIEVAL_TEST_DECODE_LOG"):
    import time

    import soundfile

    _read = soundfile.read

    def read(file, *args, **kwargs):  # one line per decoded file: "<pid> <path>"
        with open(os.environ["TAGRETRIEVAL_TEST_DECODE_LOG"], "a") as log:
            log.write(f"{os.getpid()} {file}\\n")
        time.sleep(float(os.environ.get("TAGRETRIEVAL_TEST_DECODE_SECONDS", "0")))  # a longer import
        return _read(file, *args, **kwargs)

    soundfile.read = read
'''


def decode_counting_env(tmp_path: Path) -> tuple[dict, Path]:
    """Environment whose Python processes log every ``soundfile.read`` (a ``sitecustomize`` hook), and the log."""
    hook = tmp_path / "decode_hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(DECODE_HOOK)
    log = tmp_path / "decodes.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TAGRETRIEVAL_TEST_DECODE_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return env, log


def decodes(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(pid), path) for pid, path in (line.split(" ", 1) for line in log.read_text().splitlines())]


def prepare_command(root: Path, run_dir: Path) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), "mode=prepare", "data=folder", f"data.root={root}",
            "progress=false", f"hydra.run.dir={run_dir}"]


def prepared_content(prepared: Path) -> dict:
    """What a user trains on, independent of where the folder lies: tracks (without their absolute audio
    paths), tags, labels, the report's counts, and every mel."""
    tracks = pd.read_csv(prepared / "tracks.csv", dtype=str, keep_default_na=False).drop(columns="audio_path")
    report = json.loads((prepared / "prepare_report.json").read_text())
    store = MelStore.open(prepared / "mels", frontend=MelFrontend())
    return {"tracks": tracks, "tags": (prepared / "tags.csv").read_text(), "labels": np.load(prepared / "labels.npy"),
            "counts": report["counts"], "n_kept": report["n_kept"],
            "mels": {t: np.asarray(store.read(t), dtype=np.float32) for t in tracks["track_id"]}}


@pytest.mark.slow
def test_two_concurrent_prepares_make_one_import_identical_to_a_single_run(tmp_path):
    root = make_folder(tmp_path / "shared", n_bad=1)
    single = tmp_path / "single"
    shutil.copytree(root, single)
    env, log = decode_counting_env(tmp_path)
    # 0.3 s per file: the import lasts ~7 s, so the two processes (started together) overlap
    env["TAGRETRIEVAL_TEST_DECODE_SECONDS"] = "0.3"
    runs = [subprocess.Popen(prepare_command(root, tmp_path / f"run{i}"), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    both = decodes(log)
    # every file decoded once, all by one of the two processes: the other waited, then loaded the import
    assert len(both) == N_GOOD + 1 and len({path for _, path in both}) == N_GOOD + 1
    assert {pid for pid, _ in both} <= {run.pid for run in runs} and len({pid for pid, _ in both}) == 1
    assert all(f"prepared 'folder': {N_GOOD} tracks" in out for out in outputs)
    print("\n".join(line for out in outputs for line in out.splitlines() if "lock" in line))  # shown with -s

    log.unlink()
    env["TAGRETRIEVAL_TEST_DECODE_SECONDS"] = "0"
    done = subprocess.run(prepare_command(single, tmp_path / "run_single"), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(decodes(log)) == N_GOOD + 1
    concurrent, alone = prepared_content(root / "prepared"), prepared_content(single / "prepared")
    pd.testing.assert_frame_equal(concurrent.pop("tracks"), alone.pop("tracks"))
    np.testing.assert_array_equal(concurrent.pop("labels"), alone.pop("labels"))
    mels, mels_alone = concurrent.pop("mels"), alone.pop("mels")
    assert concurrent == alone
    assert mels.keys() == mels_alone.keys()
    for track_id, mel in mels.items():
        # the same files through the same float32 front end in another process: equal up to float32 rounding
        # (BLAS/FFT thread splits may differ), far below the 1e-2 dB that any audible change makes
        np.testing.assert_allclose(mel, mels_alone[track_id], rtol=0, atol=1e-3)
    # the folder's lock file lies beside it, and the second process reused the import instead of redoing it
    assert (root / ".prepared.lock").exists()


# ---------------------------------------------------------------- the report a run copies (issue 17 item 11)
def test_a_run_copies_its_own_import_report_when_another_job_reimports_the_folder(tmp_path, monkeypatch):
    """Two sweep jobs share one prepared folder with different settings (here the split seed): the second imports
    again the moment the first releases the lock. The report copied into the first run's folder must be the one
    of its own import (copied under the lock), not the second job's."""
    import logging

    from tagretrieval import tasks

    root = make_folder(tmp_path / "mydata")
    real_copy = tasks.copy_report
    second: dict = {}
    waiting: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record):
            waiting.append(record.getMessage())

    def job(seed: int, out: Path) -> None:
        run_task(["mode=prepare", "data=folder", f"data.root={root}", f"data.split_seed={seed}", "progress=false",
                  "logger=none"], out)

    def copy_then_let_the_other_job_in(prepared_dir, run_dir):
        if not second:  # the first job, about to copy its report: the second job starts its import now
            second["thread"] = threading.Thread(target=job, args=(1, tmp_path / "run_b"), daemon=True)
            second["thread"].start()
            deadline = time.monotonic() + 120
            while second["thread"].is_alive() and not any("waiting for" in m for m in waiting):
                assert time.monotonic() < deadline, "the second job neither finished nor waited for the lock"
                time.sleep(0.05)
        return real_copy(prepared_dir, run_dir)

    handler = Seen(level=logging.INFO)
    lock_log = logging.getLogger("tagretrieval.runtime.lock")
    lock_log.addHandler(handler)
    old_level = lock_log.level
    lock_log.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the loggers' cached levels
    monkeypatch.setattr(tasks, "copy_report", copy_then_let_the_other_job_in)
    try:
        job(0, tmp_path / "run_a")
        second["thread"].join(timeout=300)
    finally:
        lock_log.removeHandler(handler)
        lock_log.setLevel(old_level)
    notes = {name: " ".join(json.loads((tmp_path / name / "prepare_report.json").read_text())["notes"])
             for name in ("run_a", "run_b")}
    assert "seed 0" in notes["run_a"] and "seed 1" not in notes["run_a"], notes
    assert "seed 1" in notes["run_b"], notes
