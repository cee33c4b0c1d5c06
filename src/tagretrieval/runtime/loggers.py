"""Experiment loggers that Lightning does not ship (config group ``logger``).

Lightning 2.6 removed its ``NeptuneLogger`` when the Neptune service was sunset (2026). The reference implementation
tracked its runs in Neptune, so :class:`NeptuneClientLogger` keeps that path open through the ``neptune`` client,
whose ``offline`` mode writes runs to a local folder without any server (``neptune sync`` uploads them to a
compatible server later, if one is available to you).

Metric keys are those of :mod:`tagretrieval.evaluation.metric_keys`: Neptune's namespaces are folders, and no key of ours is both
a value and a folder (``valid/pr_auc/macro`` next to ``valid/pr_auc/era``).
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` inside the block (unchanged for None), the previous state restored after it."""
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


class NeptuneClientLogger(Logger):
    """Logs hyperparameters and metrics to a Neptune run (``mode="offline"`` by default).

    One run per logger: training and the test that follows it log into the same run (Lightning finalizes a logger
    after ``fit`` and again after ``test``; the run is flushed each time and stopped when the process exits, as
    Lightning's former ``NeptuneLogger`` did). ``data_directory`` is where the client writes (its
    ``NEPTUNE_DATA_DIRECTORY``), set for this run only: every job of a sweep writes into its own folder.
    """

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
            # the client reads the folder from the environment when the run starts (and only then)
            with _environment("NEPTUNE_DATA_DIRECTORY", self.data_directory):
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
        """Record ``status`` and flush the run to disk (or the server); the run stays open for a later ``test``."""
        if self._run is not None:
            self._run["status"] = status
            self._run.wait()

    def stop(self) -> None:
        """End the run now (otherwise the client ends it when the process exits)."""
        if self._run is not None:
            self._run.stop()
            self._run = None
