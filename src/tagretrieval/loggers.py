"""Experiment loggers that Lightning does not ship (config group ``logger``).

Lightning 2.6 removed its ``NeptuneLogger`` when the Neptune service was sunset (2026). The reference implementation
tracked its runs in Neptune, so :class:`NeptuneClientLogger` keeps that path open through the ``neptune`` client,
whose ``offline`` mode writes runs to a local folder without any server (``neptune sync`` uploads them to a
compatible server later, if one is available to you).
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any, Mapping

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class NeptuneClientLogger(Logger):
    """Logs hyperparameters and metrics to a Neptune run (``mode="offline"`` by default)."""

    def __init__(self, *, project: str, mode: str = "offline", data_directory: str | None = None,
                 api_token: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.mode = mode
        self.data_directory = data_directory
        self.api_token = api_token
        self._run = None

    @property
    def run(self):
        if self._run is None:
            try:
                import neptune
            except ImportError as error:
                raise ImportError("logger=neptune needs the `neptune` client: pip install \".[trackers]\"") from error
            if self.data_directory is not None:
                import os
                os.environ.setdefault("NEPTUNE_DATA_DIRECTORY", self.data_directory)
            self._run = neptune.init_run(project=self.project, mode=self.mode, api_token=self.api_token)
        return self._run

    @property
    def name(self) -> str:
        return "neptune"

    @property
    def version(self) -> str:
        return self.mode

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        params = vars(params) if isinstance(params, Namespace) else params
        self.run["parameters"] = _flatten(params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.run[key].append(float(value), step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is not None:
            self._run["status"] = status
            self._run.stop()
            self._run = None
