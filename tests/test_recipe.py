"""The training recipe: its automatic settings, the block printed at start, and every option of issue 10 trained end to
end through ``main.py``'s code path (the multi-label loss, several crops per song and their pooling, augmentation,
warm-up and decay, early stopping), in float32 and in bf16 mixed precision."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tagretrieval.training.recipe import (CPU_CNN_CHANNELS, CROPS_PER_SONG, GPU_CNN_CHANNELS, MAX_CROPS_PER_EPOCH,
                                          MIN_CROPS_PER_EPOCH, MIN_VALID_SONGS, auto_cnn_channels,
                                          auto_pairs_per_epoch, lr_factor, scale_plan)
from tagretrieval.data.datamodule import training_crop_positions
from tagretrieval.training.schedules import warmup_factor

from conftest import read_metrics, run_task


def test_pairs_per_epoch_grow_with_the_data_in_whole_steps_within_the_device_bounds():
    # 4 crops per training song, rounded up to whole steps of batch x ranks
    assert auto_pairs_per_epoch(n_train_songs=695, batch_size=128, world_size=1, device="cpu") == 2816
    assert auto_pairs_per_epoch(n_train_songs=1500, batch_size=128, world_size=2, device="cpu") == 6144
    # two crops per pair: half the pairs, the same crops (the compute of an epoch does not depend on the context)
    assert auto_pairs_per_epoch(n_train_songs=695, batch_size=128, world_size=1, device="cpu", train_chunks=2) == 1408
    # a tiny dataset still gets MIN_CROPS_PER_EPOCH crops; a large one is capped (a CPU epoch stays short)
    assert auto_pairs_per_epoch(n_train_songs=10, batch_size=16, world_size=1, device="cpu") == MIN_CROPS_PER_EPOCH
    assert auto_pairs_per_epoch(n_train_songs=10, batch_size=16, world_size=1, device="cpu", train_chunks=3) == \
        16 * 43  # 2048 / 3 pairs, in whole batches
    assert auto_pairs_per_epoch(n_train_songs=160_000, batch_size=128, world_size=1, device="cpu") == \
        MAX_CROPS_PER_EPOCH["cpu"]
    assert auto_pairs_per_epoch(n_train_songs=160_000, batch_size=128, world_size=8, device="gpu", train_chunks=2) == \
        MAX_CROPS_PER_EPOCH["gpu"] // 2
    assert auto_pairs_per_epoch(n_train_songs=5_000, batch_size=128, world_size=1, device="gpu") == \
        128 * int(np.ceil(CROPS_PER_SONG * 5_000 / 128))
    assert auto_cnn_channels(device="gpu") == list(GPU_CNN_CHANNELS)
    assert auto_cnn_channels(device="cpu") == list(CPU_CNN_CHANNELS)
    with pytest.raises(ValueError, match="device"):
        auto_pairs_per_epoch(n_train_songs=10, batch_size=16, world_size=1, device="tpu")


def test_training_crops_lie_one_per_stratum_in_time_order():
    positions = training_crop_positions(np.array([0.0, 0.5, 0.999]), n_crops=4)
    assert positions.shape == (3, 4)
    assert np.allclose(positions[0], [0.0, 0.25, 0.5, 0.75]) and np.allclose(positions[1], [0.125, 0.375, 0.625, 0.875])
    assert (positions < 1.0).all() and (np.diff(positions, axis=1) > 0).all()
    assert np.allclose(training_crop_positions(np.array([0.3]), n_crops=1), [[0.3]])


def test_warm_up_ramps_linearly_then_holds():
    assert [warmup_factor(step, warmup_steps=4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, warmup_steps=0) == 1.0


def test_null_settings_are_chosen_from_the_data_and_printed_as_one_block(tmp_path, smoke_overrides, caplog):
    with caplog.at_level(logging.INFO, logger="tagretrieval.tasks"):
        run_task([*smoke_overrides, "model=acoustic", "sampler.pairs_per_epoch=null", "cnn_channels=null",
                  "train_chunks=2", "trainer.max_epochs=1"], tmp_path)
    block = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("recipe ("))
    for name in ("data", "device", "model", "loss", "CNN channels", "sampling", "context", "augment", "optimizer",
                 "schedule", "scale", "validation", "stopping"):
        assert f"\n  {name} " in block
    assert "(auto: cpu)" in block and f"(auto: {CROPS_PER_SONG} crops per training song" in block
    n_train = int(block.split("songs (train")[0].split(":")[-1].split("/")[0].replace(",", ""))
    expected = auto_pairs_per_epoch(n_train_songs=n_train, batch_size=16, world_size=1, device="cpu", train_chunks=2)
    assert f"{expected:,} pairs per epoch" in block
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["cnn_channels"] == list(CPU_CNN_CHANNELS)
    assert checkpoint["global_step"] == expected // 16  # one epoch of the chosen size


# every new option, end to end on the tiny synthetic data; each must train, validate and test to finite metrics
OPTIONS = {
    "multilabel": ["loss=multilabel"],
    "chunks_attention": ["train_chunks=3", "chunk_pooling=attention", "loss=multilabel"],
    "chunks_transformer": ["train_chunks=2", "chunk_pooling=transformer"],
    "augment": ["augment=mel", "augment.mix_probability=0.5", "augment.pitch_shift_bins=2",
                "augment.time_stretch=0.1"],
    "schedule": ["scheduler=plateau", "scheduler.warmup_steps=3", "optimizer=adamw"],
    "hybrid_chunks": ["model=hybrid", "train_chunks=2", "chunk_pooling=attention", "loss=multilabel"],
    "concat_chunks": ["model=concat", "train_chunks=2", "chunk_pooling=transformer", "augment=mel"],
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_option_trains_and_tests_end_to_end(tmp_path, smoke_overrides, option):
    model = [] if any(o.startswith("model=") for o in OPTIONS[option]) else ["model=acoustic"]
    results = run_task([*smoke_overrides, *model, *OPTIONS[option], "logger=none"], tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["n_songs"] > 0 and np.isfinite(list(results.macro.values())).all()
    assert (tmp_path / "checkpoints" / "best.ckpt").exists()


def test_new_loss_pooling_and_augmentation_in_bf16_mixed(tmp_path, smoke_overrides):
    run_task([*smoke_overrides, "model=acoustic", "loss=multilabel", "train_chunks=2", "chunk_pooling=transformer",
              "augment=mel", "augment.mix_probability=0.5", "scheduler=plateau", "optimizer=adamw",
              "trainer.precision=bf16-mixed", "logger=none"], tmp_path)
    metrics = read_metrics(tmp_path)
    values = [v for row in metrics["per_tag"].values() for k, v in row.items() if k not in ("n_positives", "category")]
    assert metrics["n_songs"] > 0 and np.isfinite(values).all()
    scores = np.load(tmp_path / "metrics" / "test_scores.npz")["scores"]
    assert scores.dtype == np.float32 and np.abs(scores).max() <= 1.0 + 1e-6


def test_early_stopping_stops_after_patience_validations_without_improvement(tmp_path, smoke_overrides):
    # min_delta=1: no validation after the first can count as an improvement, so patience 2 stops after 3 epochs
    run_task([*smoke_overrides, "model=acoustic", "trainer.max_epochs=6", "callbacks.early_stopping.patience=2",
              "callbacks.early_stopping.min_delta=1.0", "logger=none"], tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2


# the scaling rules (docs/scale-out.md, "Scaling rules"): one function, tested at 1, 8 and 32 GPUs
MSD500_GPU = dict(n_train_songs=160_000, n_valid_songs=36_000, batch_size=128, device="gpu", train_chunks=2,
                  base_lr=1e-3, base_warmup_steps=50, n_valid_chunks=8)


def test_an_epoch_reads_the_same_crops_at_every_world_size_in_fewer_larger_steps():
    plans = {n: scale_plan(world_size=n, **MSD500_GPU) for n in (1, 8, 32)}
    assert {p.crops_per_epoch for p in plans.values()} == {MAX_CROPS_PER_EPOCH["gpu"]}
    assert [p.global_batch for p in plans.values()] == [128, 1024, 4096]
    assert [p.steps_per_epoch for p in plans.values()] == [1024, 128, 32]
    for p in plans.values():
        assert p.steps_per_epoch * p.global_batch * 2 == p.crops_per_epoch  # whole steps, 2 crops per pair
    # a given pairs_per_epoch is global too
    assert [scale_plan(world_size=n, **{**MSD500_GPU, "pairs_per_epoch": 10_240}).steps_per_epoch
            for n in (1, 8, 32)] == [80, 10, 2]


def test_learning_rate_scales_with_the_square_root_of_the_world_size_or_as_asked():
    assert [scale_plan(world_size=n, **MSD500_GPU).lr for n in (1, 8, 32)] == pytest.approx(
        [1e-3, 1e-3 * 8 ** 0.5, 1e-3 * 32 ** 0.5])
    assert scale_plan(world_size=8, lr_rule="linear", **MSD500_GPU).lr == pytest.approx(8e-3)
    assert scale_plan(world_size=8, lr_rule="none", **MSD500_GPU).lr == pytest.approx(1e-3)
    assert lr_factor(1, rule="sqrt") == 1.0
    with pytest.raises(ValueError, match="scaling.lr"):
        lr_factor(4, rule="cubic")


def test_warm_up_is_counted_in_pairs_not_steps():
    plans = [scale_plan(world_size=n, **MSD500_GPU) for n in (1, 8, 32)]
    assert {p.warmup_pairs for p in plans} == {50 * 128}
    assert [p.warmup_steps for p in plans] == [50, 7, 2]  # ceil(6,400 / global batch)
    assert all(p.warmup_steps * p.global_batch >= p.warmup_pairs > (p.warmup_steps - 1) * p.global_batch
               for p in plans)


def test_validation_reads_at_most_a_quarter_of_the_training_crops_unless_told():
    for n in (1, 8, 32):
        plan = scale_plan(world_size=n, **MSD500_GPU)
        assert plan.valid_crop_reads <= 0.25 * plan.crops_per_epoch and not plan.valid_whole
        assert plan.valid_songs == 0.25 * MAX_CROPS_PER_EPOCH["gpu"] // 8  # 8,192 of 36,000 songs x 8 chunks
    # validating every 5 epochs: the budget is 25% of those 5 epochs' crops
    assert scale_plan(world_size=8, validate_every_n_epochs=5, **MSD500_GPU).valid_songs == 36_000
    # a given validation.max_songs is kept; a small valid split is validated whole (>= MIN_VALID_SONGS songs)
    assert scale_plan(world_size=8, max_valid_songs=5_000, **MSD500_GPU).valid_songs == 5_000
    small = scale_plan(world_size=1, **{**MSD500_GPU, "n_train_songs": 695, "n_valid_songs": 149, "device": "cpu"})
    assert small.valid_whole and small.valid_songs == 149 < MIN_VALID_SONGS
    floor = scale_plan(world_size=1, **{**MSD500_GPU, "n_train_songs": 695, "n_valid_songs": 5_000, "device": "cpu"})
    assert floor.valid_songs == MIN_VALID_SONGS


def test_one_process_runs_the_recipe_of_before_but_the_validation_budget():
    """The change for a single GPU (stated in docs/scale-out.md): learning rate, warm-up and epoch as before; only
    a valid split larger than the budget (MSD500: 36,000 songs x 8 chunks) is now subset."""
    plan = scale_plan(world_size=1, **MSD500_GPU)
    assert (plan.lr, plan.warmup_steps, plan.pairs_per_epoch) == (1e-3, 50, auto_pairs_per_epoch(
        n_train_songs=160_000, batch_size=128, world_size=1, device="gpu", train_chunks=2))
    assert plan.valid_songs == 8_192


def test_the_task_layer_applies_the_plan_to_the_config_and_prints_it(tmp_path, caplog):
    """``resolve_recipe`` at 8 processes (a composed config, no training): the scaled rate, the warm-up in steps of
    the global batch and the validation budget are what the module and the datamodule get."""
    from types import SimpleNamespace

    from tagretrieval.tasks import resolve_recipe

    from conftest import compose_config

    splits = {"train": np.arange(160_000), "valid": np.arange(36_000), "test": np.arange(100)}
    labels = np.ones((160_000, 2), dtype=np.uint8)
    labels[:1000] = 0   # 1,000 untagged training songs
    dataset = SimpleNamespace(name="msd-like", tags=["a", "b"], labels=labels, split_indices=splits.__getitem__)
    cfg = compose_config(["trainer=ddp", "trainer.devices=8", "loader.num_workers=0"], tmp_path)
    with caplog.at_level(logging.INFO, logger="tagretrieval.tasks"):
        resolve_recipe(cfg, dataset, model="acoustic")
    expected = scale_plan(world_size=8, **MSD500_GPU)
    assert cfg.optimizer.lr == pytest.approx(expected.lr) and cfg.scheduler.warmup_steps == expected.warmup_steps == 7
    assert cfg.validation.max_songs == expected.valid_songs == 8_192
    assert cfg.sampler.pairs_per_epoch == expected.pairs_per_epoch
    block = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("recipe ("))
    assert "8 process(es): global batch 1,024 pairs, 128 steps per epoch (262,144 crops), lr 0.00283 (sqrt rule), " \
           "warm-up 7 steps (6,400 pairs)" in block
    assert "8,192 songs, 65,536 crop reads per validation (a seeded subset)" in block
    assert "1,000 untagged training songs used as negatives (+1 per batch)" in block
