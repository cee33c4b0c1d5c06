"""Mixed precision for every model and loss, on CPU (bf16: what CI can run) and, where a GPU exists, on it.

Under autocast the branches compute in half precision; the scores and the metrics must not (they are float32), and
nothing may fail on a dtype mismatch (the crash that `trainer=gpu` had at the end of its first validation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagretrieval.evaluation import metric_keys

from conftest import read_metrics, requires_gpu, run_main, run_task
from test_fma import fma_root  # noqa: F401  (a fixture: a miniature FMA with precomputed features)

MODELS = ["acoustic", "cultural", "concat", "hybrid"]


@pytest.mark.parametrize("model", MODELS)
def test_main_trains_and_tests_every_model_in_bf16_mixed_on_cpu(tmp_path, smoke_overrides, model):
    run_dir = tmp_path / "run"
    done = run_main([*smoke_overrides, f"model={model}", "trainer.precision=bf16-mixed", "logger=none",
                     f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["n_songs"] > 0
    values = [value for row in metrics["per_tag"].values() for name, value in row.items()
              if name not in ("n_positives", "category")]
    assert np.isfinite(values).all() and all(0.0 <= v <= 1.0 for v in values)
    scores = np.load(run_dir / "metrics" / "test_scores.npz")["scores"]
    assert scores.dtype == np.float32 and np.abs(scores).max() <= 1.0 + 1e-6  # cosines, computed in float32


def test_features_model_and_infonce_in_bf16_mixed(tmp_path, fma_root):  # noqa: F811
    run_task(["data=fma", f"data.root={fma_root}", "data.max_skipped_fraction=0.5", "model=features",
              "loss=infonce", "trainer.precision=bf16-mixed", "experiment=smoke", "trainer.max_epochs=1",
              "sampler.pairs_per_epoch=32", "progress=false", "logger=none"], tmp_path)
    assert read_metrics(tmp_path)["n_songs"] > 0


def test_bce_baseline_and_checkpoint_modes_in_bf16_mixed(tmp_path, smoke_overrides, trained_run):
    bf16 = ["trainer.precision=bf16-mixed", "logger=none"]
    run_task([*smoke_overrides, *bf16, "mode=baseline", "+baseline=bce_cnn", "baseline.crops_per_epoch=32"],
             tmp_path / "bce")
    assert read_metrics(tmp_path / "bce")["n_songs"] > 0
    best = trained_run / "checkpoints" / "best.ckpt"
    results = run_task([*smoke_overrides, *bf16, "mode=test", f"ckpt_path={best}"], tmp_path / "test")
    full = read_metrics(trained_run)["macro"]
    # the same checkpoint evaluated in bf16: embeddings lose bits (bf16 keeps 8 of float32's 24), rankings barely move
    assert results.macro[metric_keys.ROC_AUC] == pytest.approx(full[metric_keys.ROC_AUC], abs=0.03)


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
@pytest.mark.parametrize("model", MODELS)
def test_gpu_trains_and_tests_every_model(tmp_path, smoke_overrides, model, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 (trainer=gpu falls back to 16-mixed)")
    run_task([*smoke_overrides, "trainer=gpu", f"model={model}", f"trainer.precision={precision}", "logger=none"],
             tmp_path)
    assert read_metrics(tmp_path)["n_songs"] > 0


@requires_gpu
@pytest.mark.gpu
def test_gpu_channels_last_and_compile(tmp_path, smoke_overrides):
    run_task([*smoke_overrides, "trainer=gpu", "model=acoustic", "performance.channels_last=true",
              "performance.compile=true", "logger=none"], tmp_path)
    assert read_metrics(tmp_path)["n_songs"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpu_ddp_matches_one_gpu_evaluation(tmp_path, smoke_overrides, trained_run):
    best = trained_run / "checkpoints" / "best.ckpt"
    common = [*smoke_overrides, "mode=test", f"ckpt_path={best}", "trainer.precision=32-true", "logger=none"]
    one = run_main([*common, "trainer=gpu", f"hydra.run.dir={tmp_path / 'one'}"])
    two = run_main([*common, "trainer=ddp", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'two'}"])
    assert one.returncode == 0 and two.returncode == 0, (one.stderr + two.stderr)[-3000:]
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert a["n_songs"] == b["n_songs"]
    for tag, row in a["per_tag"].items():  # cuDNN picks kernels per batch shape: tiny float32 differences
        assert b["per_tag"][tag][metric_keys.ROC_AUC] == pytest.approx(row[metric_keys.ROC_AUC], abs=1e-3)
