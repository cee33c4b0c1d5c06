"""Loader workers: started from a fork server, never forked from the training process (which runs threads: a fork
there can hang the run on CPython < 3.11.10, see tagretrieval.data.datamodule), with the songs' arrays shared, not
copied into every worker; a wrong start method is refused before anything runs."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from conftest import REPO, compose_config, run_main
from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.data.datamodule import SongInputs, TagRetrievalDataModule
from tagretrieval.data.prepared import PreparedDataset


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def datamodule(root: Path, tmp_path: Path, **options) -> TagRetrievalDataModule:
    prepared = PreparedDataset.load(root / "prepared")
    sampler = instantiate(compose_config([f"data.root={root}"], tmp_path).sampler)
    return TagRetrievalDataModule(dataset=prepared, sampler=sampler,
                                  mel_store=MelStore.open(root / "prepared" / "mels", frontend=MelFrontend()),
                                  use_cf=True, use_features=False, chunk_frames=173, n_eval_chunks=2,
                                  eval_batch_size=16, **options)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads parent pids from /proc (Linux)")
def test_workers_start_from_the_fork_server_and_read_what_the_training_process_reads(synthetic_root, tmp_path):
    in_process = [batch for batch in datamodule(synthetic_root, tmp_path, num_workers=0).val_dataloader()]
    loader = datamodule(synthetic_root, tmp_path, num_workers=2).val_dataloader()
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    iterator = iter(loader)
    batches = list(iterator)
    parents = {parent_pid(worker.pid) for worker in iterator._workers}  # persistent workers: still running
    assert os.getpid() not in parents and len(parents) == 1  # both forked by the one fork server
    assert len(batches) == len(in_process)
    for got, want in zip(batches, in_process):  # the same bytes of the same store: equal, not merely close
        assert got.keys() == want.keys()
        for name in want:
            assert (got[name] == want[name]).all(), name


def test_the_song_arrays_reach_workers_through_shared_memory(synthetic_root, tmp_path):
    dm = datamodule(synthetic_root, tmp_path)
    inputs: SongInputs = dm.inputs
    n_songs = len(inputs.labels)
    # labels as large as MSD500's would be (hundreds of MB): what a worker receives must not grow with them
    inputs.labels = np.random.default_rng(0).random((n_songs, 20_000), dtype=np.float32)
    want_labels, want_cf = inputs.labels.copy(), inputs.cf.copy()
    sent = bytes(ForkingPickler.dumps(inputs))
    assert len(sent) < inputs.labels.nbytes / 20, len(sent)
    received = pickle.loads(sent)
    assert np.array_equal(received.labels, want_labels) and np.array_equal(received.cf, want_cf)
    assert np.array_equal(inputs.labels, want_labels)  # the training process reads the shared copy, unchanged
    assert len(bytes(ForkingPickler.dumps(inputs))) == len(sent)  # shared once, not once per worker
    # pickled to a file (no shared memory), the values travel with it
    assert np.array_equal(pickle.loads(pickle.dumps(inputs)).labels, want_labels)


def test_an_unknown_start_method_is_refused_in_one_line(tmp_path):
    done = run_main(["loader.start_method=thread", f"hydra.run.dir={tmp_path}"], cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "error: loader.start_method='thread': one of fork, spawn, forkserver" in done.stderr
    assert "Traceback" not in done.stderr


KILLED_MID_EPOCH = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_loader_workers import datamodule

loader = datamodule(Path({root!r}), Path({tmp!r}), num_workers=2).val_dataloader()
iterator = iter(loader)  # workers started; whether they have read a batch yet is theirs to decide
print(*(worker.pid for worker in iterator._workers), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would: no shutdown of the workers
"""


def test_a_training_process_killed_with_sigkill_leaves_no_worker_behind(synthetic_root, tmp_path):
    """Workers whose parent is the fork server would otherwise run on forever, holding the caller's stdout (a
    ``subprocess.run`` waiting for it never returns), the fork server and the shared memory."""
    script = KILLED_MID_EPOCH.format(tests=str(REPO / "tests"), root=str(synthetic_root), tmp=str(tmp_path))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-3000:]
    assert time.monotonic() - started < 110  # the pipes closed: no worker kept them open
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
