"""The training recipe: its automatic settings, the block printed at start, and every option of issue 10 trained end to
end through ``main.py``'s code path (the multi-label loss, several crops per song and their pooling, augmentation,
warm-up and decay, early stopping), in float32 and in bf16 mixed precision."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tagretrieval.training.recipe import (CPU_CNN_CHANNELS, CROPS_PER_SONG, GPU_CNN_CHANNELS, MAX_CROPS_PER_EPOCH,
                                 MIN_CROPS_PER_EPOCH, auto_cnn_channels, auto_pairs_per_epoch)
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
                 "schedule", "stopping"):
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
