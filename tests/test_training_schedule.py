"""The rate schedule and the training step's bookkeeping through a real ``Trainer.fit`` (main.py's code path): a
decay on plateau during the warm-up is kept, the step loss is logged rank-local and the epoch mean synced once, and
the loss's learnt scale is clamped after every optimizer step."""

from __future__ import annotations

import math

import pytest
import torch

from batch_recorder import read_records
from conftest import read_metrics, run_task
from tagretrieval.training.losses import MultiLabelLoss
from tagretrieval.training.module import TagRetrievalModule
from tagretrieval.training.schedules import WarmupPlateau, apply_warmup, warmup_factor


def test_a_plateau_cut_during_the_warm_up_is_kept():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    plateau = WarmupPlateau(warmup_steps=10, factor=0.5, patience=0, min_lr=0.0).plateau(optimizer, mode="max")
    plateau.step(1.0)  # the first validation sets the best
    rates = []
    for step in range(14):
        apply_warmup(optimizer, step, warmup_steps=10)
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if step == 3:  # an epoch of 4 steps ends with a validation that did not improve: x0.5
            plateau.step(0.5)
    expected = [(1.0 if step < 4 else 0.5) * warmup_factor(step, warmup_steps=10) for step in range(14)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[-1] == pytest.approx(0.5)  # the ramp ends at the cut rate, not at the original 1.0
    assert "warmup_factor" not in optimizer.param_groups[0]  # nothing left behind once the warm-up is over


def test_a_checkpoint_saved_mid_warm_up_by_the_old_code_resumes_at_its_base_rate():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.3)
    optimizer.param_groups[0]["warmup_target_lr"] = 1.0  # the old code's key: lr 0.3 = 1.0 x warm-up factor
    apply_warmup(optimizer, 5, warmup_steps=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6) and "warmup_target_lr" not in optimizer.param_groups[0]


def test_fit_keeps_plateau_cuts_in_the_warm_up_logs_the_step_loss_unsynced_and_clamps_the_scale(
        tmp_path, smoke_overrides, monkeypatch):
    logged, constrained = [], []
    log, constrain = TagRetrievalModule.log, MultiLabelLoss.constrain_

    def spy_log(self, name, value, **kwargs):
        logged.append((name, kwargs))
        return log(self, name, value, **kwargs)

    def spy_constrain(self):
        constrained.append(float(self.log_scale.detach()))
        return constrain(self)

    monkeypatch.setattr(TagRetrievalModule, "log", spy_log)
    monkeypatch.setattr(MultiLabelLoss, "constrain_", spy_constrain)
    lrs = tmp_path / "lrs.jsonl"
    # 3 epochs of 4 steps inside a warm-up of 100 steps; every validation is a plateau (patience 0: a cut each)
    run_task([*smoke_overrides, "model=acoustic", "loss=multilabel", "scheduler=plateau", "scheduler.warmup_steps=100",
              "scheduler.patience=0", "scheduler.factor=0.5", "scheduler.min_lr=0", "trainer.max_epochs=3",
              "callbacks.early_stopping=null", "+callbacks.plateau._target_=probe_callbacks.PlateauEveryEpoch",
              f"+callbacks.plateau.path={lrs}"], tmp_path)
    base = 1.0e-3  # conf/optimizer/adam.yaml
    records = read_records(lrs)
    assert [r["step"] for r in records] == list(range(12))
    for r in records:  # the cuts after epochs 0 and 1 (steps 3 and 7) stay in the warm-up's ramp
        cuts = sum(r["step"] > end for end in (3, 7))
        assert r["lr"] == pytest.approx(base * 0.5 ** cuts * warmup_factor(r["step"], warmup_steps=100), rel=1e-9)

    train = [(name, kwargs) for name, kwargs in logged if name.startswith("train/")]
    assert {name for name, _ in train} == {"train/loss_step", "train/loss_epoch"}
    for name, kwargs in train:
        if kwargs.get("on_step"):  # a synced step value is an all-reduce at every step
            assert name == "train/loss_step" and kwargs["sync_dist"] is False and kwargs["on_epoch"] is False
        else:
            assert name == "train/loss_epoch" and kwargs["sync_dist"] is True and kwargs["on_epoch"] is True
    metrics = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss_step" in metrics and "train/loss_epoch" in metrics  # the keys trackers and plots read

    assert len(constrained) == 12  # once per optimizer step
    assert math.isfinite(read_metrics(tmp_path)["macro"]["pr_auc"])
