"""Training curves of a run, read back from the CSV logger or the TensorBoard event files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CSV_LOG = Path("csv") / "metrics.csv"
"""Where ``logger=csv`` writes (``conf/logger/csv.yaml``: ``name: csv``, ``version: ""``)."""
TENSORBOARD_DIR = Path("tensorboard")
"""Where ``logger=tensorboard`` (the default) writes its event files."""
_INDEX_COLUMNS = ("epoch", "step")


@dataclass(frozen=True)
class TrainingLog:
    """Logged scalars in long form: ``frame`` has columns ``key`` (``"valid/pr_auc/macro"``), ``step``, ``value``."""

    source: Path
    frame: pd.DataFrame

    def series(self, key: str) -> pd.DataFrame:
        """``step``, ``value`` of one key, sorted by step (empty when the key was never logged)."""
        rows = self.frame[self.frame["key"] == key]
        return rows[["step", "value"]].sort_values("step", kind="stable").reset_index(drop=True)

    @property
    def keys(self) -> list[str]:
        return sorted(self.frame["key"].unique())


def read_training_log(run_dir: str | Path) -> TrainingLog | None:
    """The scalars a run logged: ``run_dir/csv/metrics.csv`` if present, else the TensorBoard event files under
    ``run_dir/tensorboard``; ``None`` when the run kept neither (``logger=none``, or another tracker).

    Raises:
        ValueError: a CSV log without a ``step`` column (not written by Lightning's CSVLogger).
    """
    run_dir = Path(run_dir)
    if (run_dir / CSV_LOG).exists():
        return TrainingLog(source=run_dir / CSV_LOG, frame=_read_csv(run_dir / CSV_LOG))
    event_files = sorted((run_dir / TENSORBOARD_DIR).rglob("events.out.tfevents.*"))
    if event_files:
        frame = pd.concat([_read_events(path) for path in event_files], ignore_index=True)
        return TrainingLog(source=run_dir / TENSORBOARD_DIR, frame=frame)
    return None


def _read_csv(path: Path) -> pd.DataFrame:
    wide = pd.read_csv(path)
    if "step" not in wide.columns:
        raise ValueError(f"{path}: no 'step' column; expected the file of Lightning's CSVLogger")
    value_columns = [c for c in wide.columns if c not in _INDEX_COLUMNS]
    long = wide.melt(id_vars=["step"], value_vars=value_columns, var_name="key", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)[["key", "step", "value"]]


def _read_events(path: Path) -> pd.DataFrame:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    rows = [(key, event.step, event.value)
            for key in accumulator.Tags()["scalars"] for event in accumulator.Scalars(key)]
    return pd.DataFrame(rows, columns=["key", "step", "value"])
