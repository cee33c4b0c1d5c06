"""DDP edge cases on 2 CPU processes (gloo) through ``main.py``: every rank must reach every collective, and every
rank must test the same weights. A deadlock fails the test at its timeout (the whole process group is killed)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from conftest import REPO, compose_config, read_metrics, run_task
from tagretrieval import tasks
from tagretrieval.data.datamodule import PADDING, ShardBatchSampler
from tagretrieval.training.module import TagRetrievalModule

CPU_DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
TESTS = Path(__file__).resolve().parent


def run_ddp(args: list[str], *, timeout_s: int = 300) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` in its own process group; past ``timeout_s`` (a deadlock) every rank is killed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",  # main.py finds probe_callbacks, and this checkout's package
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"DDP run still running after {timeout_s} s (a rank waiting at a collective):\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_rank_without_evaluation_songs_evaluates_one_padding_song_that_is_dropped():
    assert [list(b) for b in ShardBatchSampler(1, batch_size=4, rank=1, world_size=2)] == [[PADDING]]
    assert [list(b) for b in ShardBatchSampler(1, batch_size=4, rank=0, world_size=2)] == [[0]]
    assert [list(b) for b in ShardBatchSampler(3, batch_size=4, rank=1, world_size=4)] == [[1]]
    assert [list(b) for b in ShardBatchSampler(3, batch_size=4, rank=3, world_size=4)] == [[PADDING]]
    assert len(ShardBatchSampler(0, batch_size=4, rank=1, world_size=2)) == 0  # an empty split: empty everywhere


def last_validation(run_dir: Path) -> dict[str, float]:
    rows = [row for row in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if row.get("valid/pr_auc/macro")]
    return {key: float(value) for key, value in rows[-1].items() if key.startswith("valid/") and value}


@pytest.mark.slow
def test_ddp_validation_of_one_song_on_two_ranks_fails_clearly_on_every_rank(tmp_path, smoke_overrides):
    # validation.max_songs=1 (or a valid split of one song) on 2 ranks: rank 1 has no song. One song ranks nothing,
    # so the validation fails, as on one process, but on every rank and with its message: it must not hang
    done = run_ddp([*smoke_overrides, "model=acoustic", "validation.max_songs=1", *CPU_DDP,
                    f"hydra.run.dir={tmp_path}"], timeout_s=240)
    assert done.returncode != 0
    assert "no tag can be scored on split 'valid'" in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_ddp_validates_fewer_songs_than_ranks_and_decides_on_triplets_over_all_ranks(tmp_path, smoke_overrides):
    # validation.max_songs=2 on 3 ranks: rank 2 has no valid song (as with a valid split smaller than the world
    # size); rank 0 has no valid triplet in any epoch, the others have some: the run must neither hang nor fail
    run_dir = tmp_path / "ddp"
    overrides = [*smoke_overrides, "model=acoustic", "loss=triplet", "validation.max_songs=2",
                 "callbacks.early_stopping=null"]
    done = run_ddp([*overrides, *CPU_DDP, "trainer.devices=3",
                    "+callbacks.probe._target_=probe_callbacks.NoValidTripletOnRankZero", f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metrics(run_dir)["n_songs"] > 0
    ddp = last_validation(run_dir)
    # the same validation on one process, of the weights at the end (rank 0's: last.ckpt), on the same two songs
    cfg = compose_config(overrides, tmp_path / "single")
    prepared = tasks.prepare_data(cfg, tmp_path / "single")
    module = TagRetrievalModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    datamodule = tasks.build_datamodule(cfg, prepared, module.model, tasks._align_tags(prepared.dataset, module.tags))
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
              enable_model_summary=False).validate(module, datamodule=datamodule, verbose=False)
    single = module.results["valid"]
    assert single.n_songs == 2  # the padding song of rank 2 is not counted
    assert ddp.keys() == single.flat().keys()
    assert ddp == pytest.approx(single.flat(), abs=1e-6)  # the csv holds the logged float32 values as text


@pytest.mark.slow
def test_ddp_without_a_best_checkpoint_tests_rank_zeros_final_weights_on_every_rank(tmp_path, smoke_overrides):
    # no validation, so no best checkpoint: the test after training uses the weights at the end. Under DDP each
    # rank's batch-norm statistics are its own after training (DDP broadcasts rank 0's before each training forward,
    # then every rank updates them with its own batch): every rank must test rank 0's (tasks.tested_checkpoint)
    run_dir = tmp_path / "ddp"
    overrides = [*smoke_overrides, "model=acoustic", "+trainer.limit_val_batches=0", "callbacks.early_stopping=null"]
    done = run_ddp([*overrides, *CPU_DDP, f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    # a single-process test of the same weights: the same scores for every (tag, song), so the same metrics
    run_task([*overrides, "mode=test", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], tmp_path / "single")
    ddp_scores, single_scores = (np.load(d / "metrics" / "test_scores.npz")["scores"] for d in (run_dir, tmp_path / "single"))
    # float32 cosines of embeddings computed in other batches (rank shards): equal to a few ulps
    np.testing.assert_allclose(ddp_scores, single_scores, rtol=0, atol=1e-5)
    ddp_macro, single_macro = (read_metrics(d)["macro"] for d in (run_dir, tmp_path / "single"))
    assert ddp_macro == pytest.approx(single_macro, abs=1e-6)
    # what it tested is kept in the run folder: rank 0's weights at the end (as last.ckpt, which rank 0 wrote)
    final, last = (torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]
                   for name in ("final.ckpt", "last.ckpt"))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
