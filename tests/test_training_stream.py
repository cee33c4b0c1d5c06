"""The training stream through a real ``Trainer.fit`` (``main.py``'s code path): fresh pairs and crops every epoch,
the same stream for the same seed, and a resumed run that equals an uninterrupted one. Nothing here calls a hook
that Lightning should call."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_recorder import read_records
from conftest import read_metrics, run_task


def recorder(path: Path) -> list[str]:
    return ["+callbacks.recorder._target_=batch_recorder.BatchRecorder", f"+callbacks.recorder.path={path}"]


def by_epoch(records: list[dict]) -> dict[int, list[tuple]]:
    epochs: dict[int, list[tuple]] = {}
    for r in records:
        epochs.setdefault(r["epoch"], []).append((tuple(r["rows"]), tuple(r["tags"]), r.get("mel_sum")))
    return epochs


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory, smoke_overrides) -> tuple[Path, list[dict]]:
    """An uninterrupted 3-epoch smoke run (acoustic model: its batches carry mel crops) with every batch recorded."""
    run_dir = tmp_path_factory.mktemp("three_epochs")
    run_task([*smoke_overrides, "model=acoustic", "trainer.max_epochs=3", *recorder(run_dir / "batches.jsonl")],
             run_dir)
    return run_dir, read_records(run_dir / "batches.jsonl")


def test_every_epoch_draws_fresh_pairs_and_crops(three_epochs):
    _, records = three_epochs
    epochs = by_epoch(records)
    assert sorted(epochs) == [0, 1, 2] and len({len(batches) for batches in epochs.values()}) == 1
    pairs = [{(row, tag) for rows, tags, _ in batches for row, tag in zip(rows, tags)} for batches in epochs.values()]
    assert pairs[0] != pairs[1] != pairs[2]
    # not one batch is repeated, pairs or crops, from one epoch to the next
    for a, b in ((0, 1), (1, 2)):
        assert not set(epochs[a]) & set(epochs[b])
    assert [r["step"] for r in records] == list(range(len(records)))


def test_same_seed_same_stream_and_metrics_other_seed_other_stream(tmp_path, smoke_overrides, three_epochs):
    first_dir, first = three_epochs
    run_task([*smoke_overrides, "model=acoustic", "trainer.max_epochs=3", *recorder(tmp_path / "a.jsonl")],
             tmp_path / "a")
    assert read_records(tmp_path / "a.jsonl") == first
    assert read_metrics(tmp_path / "a") == read_metrics(first_dir)
    run_task([*smoke_overrides, "model=acoustic", "trainer.max_epochs=1", "seed=7", *recorder(tmp_path / "b.jsonl")],
             tmp_path / "b")
    assert by_epoch(read_records(tmp_path / "b.jsonl"))[0] != by_epoch(first)[0]


def test_resume_after_epoch_two_equals_the_uninterrupted_run(tmp_path, smoke_overrides, three_epochs):
    full_dir, full = three_epochs
    common = [*smoke_overrides, "model=acoustic"]
    run_task([*common, "trainer.max_epochs=2", *recorder(tmp_path / "first.jsonl")], tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run_task([*common, "trainer.max_epochs=3", f"ckpt_path={last}", *recorder(tmp_path / "resumed.jsonl")],
             tmp_path / "resumed")
    resumed = read_records(tmp_path / "resumed.jsonl")
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in full if r["epoch"] == 2]
    assert resumed == [r for r in full if r["epoch"] == 2]  # the same pairs, crops and steps as uninterrupted
    assert read_metrics(tmp_path / "resumed") == read_metrics(full_dir)


def test_how_loader_workers_start_changes_no_batch_and_no_metric(tmp_path, smoke_overrides, three_epochs):
    """``loader.start_method=fork`` (workers copied from the training process) against the default fork server:
    each worker is seeded the same way, so the runs are the same run."""
    first_dir, first = three_epochs
    run_task([*smoke_overrides, "model=acoustic", "trainer.max_epochs=3", "loader.start_method=fork",
              *recorder(tmp_path / "fork.jsonl")], tmp_path / "fork")
    assert read_records(tmp_path / "fork.jsonl") == first
    assert read_metrics(tmp_path / "fork") == read_metrics(first_dir)
