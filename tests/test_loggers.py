"""Experiment trackers (config group ``logger``), offline, end to end through main.py: each run writes where its
config says, and the logged ``test/pr_auc/macro`` read back from the tracker's own files equals ``metrics/test.json``.

The trackers are the optional ``pip install ".[trackers]"``; a test of a tracker whose client is missing is skipped
with the install command. The default suite runs one training with every tracker at once; ``-m slow`` runs every
file of ``conf/logger/`` on its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from pathlib import Path

import pandas as pd
import pytest

from tagretrieval.evaluation import metric_keys

from conftest import CONF, TINY_SYNTHETIC, read_metrics, run_main

KEY = metric_keys.key(metric_keys.TEST, metric_keys.PR_AUC)  # "test/pr_auc/macro"
CLIENTS = {"mlflow": "mlflow", "wandb": "wandb", "neptune": "neptune"}
TRACKERS = ("tensorboard", "csv", "mlflow", "wandb", "neptune")
# logged as float32 by Lightning, written as float64 to test.json: they agree to float32 precision
FLOAT32_TOLERANCE = 1e-6


def needs_client(*names: str):
    missing = [CLIENTS[n] for n in names if n in CLIENTS and importlib.util.find_spec(CLIENTS[n]) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {missing}: pip install -e \".[trackers]\"")


# ---------- reading each tracker's files back ----------

def tensorboard_value(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for path in (run_dir / "tensorboard").rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        if KEY in events.Tags()["scalars"]:
            values += [event.value for event in events.Scalars(KEY)]
    assert len(values) == 1, values
    return values[0]


def csv_value(run_dir: Path) -> float:
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return float(frame[KEY].dropna().item())


def mlflow_value(run_dir: Path) -> float:
    """Through the URI docs/tracking.md gives `mlflow ui` (relative to the folder main.py ran in, the current one)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
    experiment = client.get_experiment_by_name("tagretrieval")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return float(runs[0].data.metrics[KEY])


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (``run-ID.wandb``): a LevelDB-style log of 32 KiB blocks,
    each record a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes, after the
    file's 7-byte header ``:W&B``, magic, version. (The client that wrote it no longer ships a Python reader.)"""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (length, kind) == (0, 0):  # the rest of a block is padding
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_value(run_dir: Path) -> float:
    [path] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    values = [json.loads(item.value_json) for record in wandb_records(path) if record.HasField("history")
              for item in record.history.item if ("/".join(item.nested_key) or item.key) == KEY]
    assert len(values) == 1, values
    return float(values[0])


def neptune_value(run_dir: Path) -> float:
    """From the operations the offline client queued for upload (``RUN/.neptune/offline/run__*/data-1.log``)."""
    [folder] = (run_dir / ".neptune" / "offline").glob("run__*")  # one run: training and test together
    values = []
    for line in (folder / "data-1.log").read_text().splitlines():
        operation = json.loads(line)["obj"]
        if operation.get("path") == KEY.split("/") and operation["type"] == "LogFloats":
            values += [point["value"] for point in operation["values"]]
    assert len(values) == 1, values
    return float(values[0])


def logged_value(tracker: str, run_dir: Path) -> float:
    return {"tensorboard": tensorboard_value, "csv": csv_value, "mlflow": mlflow_value, "wandb": wandb_value,
            "neptune": neptune_value}[tracker](run_dir)


def train(tmp_path: Path, synthetic_root: Path, logger: str, monkeypatch) -> tuple[Path, Path]:
    """``python main.py experiment=smoke logger=...`` (one epoch) from a fresh working folder ``tmp_path/cwd``."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the config's own default: cwd/mlflow.db
    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY", raising=False)
    cwd, run_dir = tmp_path / "cwd", tmp_path / "run"
    cwd.mkdir()
    result = run_main([f"data.root={synthetic_root}", *TINY_SYNTHETIC, "experiment=smoke", "trainer.max_epochs=1",
                       "progress=false", f"logger={logger}", f"hydra.run.dir={run_dir}"], cwd=cwd)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    monkeypatch.chdir(cwd)  # where a user then reads the runs
    return run_dir, cwd


@needs_client(*TRACKERS)
def test_every_tracker_logs_the_test_metrics_it_is_given(tmp_path, synthetic_root, monkeypatch):
    run_dir, cwd = train(tmp_path, synthetic_root, "[" + ",".join(TRACKERS) + "]", monkeypatch)
    expected = read_metrics(run_dir)["macro"][metric_keys.PR_AUC]
    for tracker in TRACKERS:
        assert logged_value(tracker, run_dir) == pytest.approx(expected, abs=FLOAT32_TOLERANCE), tracker
    assert not (cwd / "mlruns").exists()  # MLflow 3 refuses the old file store: a database it is


@pytest.mark.slow
@pytest.mark.parametrize("logger", sorted(path.stem for path in (CONF / "logger").glob("*.yaml")))
def test_each_logger_config_runs_end_to_end(tmp_path, synthetic_root, monkeypatch, logger):
    trackers = {"many": ("tensorboard", "csv"), "none": ()}.get(logger, (logger,))
    if any(importlib.util.find_spec(CLIENTS[t]) is None for t in trackers if t in CLIENTS):
        pytest.skip(f"logger={logger} needs its client: pip install -e \".[trackers]\"")
    run_dir, cwd = train(tmp_path, synthetic_root, logger, monkeypatch)
    expected = read_metrics(run_dir)["macro"][metric_keys.PR_AUC]
    for tracker in trackers:
        assert logged_value(tracker, run_dir) == pytest.approx(expected, abs=FLOAT32_TOLERANCE), tracker
    if logger == "none":
        assert not any((run_dir / name).exists() for name in ("tensorboard", "csv", "wandb", ".neptune"))


def test_neptune_writes_each_run_into_its_own_folder(tmp_path, monkeypatch):
    """Two loggers of one process (two jobs of a sweep) write into their own data folders: the first job's folder is
    not kept for the next, and the environment is left as it was."""
    pytest.importorskip("neptune", reason="pip install -e \".[trackers]\"")
    from tagretrieval.runtime.loggers import NeptuneClientLogger

    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY", raising=False)
    for job in ("0", "1"):
        logger = NeptuneClientLogger(project="test/project", data_directory=str(tmp_path / job / ".neptune"))
        logger.log_metrics({KEY: 0.5}, step=0)
        logger.finalize("success")
        logger.stop()
    for job in ("0", "1"):
        assert len(list((tmp_path / job / ".neptune" / "offline").glob("run__*"))) == 1, job
    assert "NEPTUNE_DATA_DIRECTORY" not in os.environ
