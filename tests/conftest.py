"""Shared fixtures: the real Hydra config tree, composed and pointed at ``tmp_path``; a tiny synthetic dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# a synthetic dataset small enough for tests, big enough for every tag to be in every split
TINY_SYNTHETIC = [
    "data.n_songs=300", "data.n_artists=100", "data.n_users=300", "data.clip_seconds=4.5", "data.cf_dim=16",
]


def compose_config(overrides: list[str], output_dir: Path):
    """The real config tree with ``overrides``, writing into ``output_dir`` (no Hydra run needed)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[f"paths.output_dir={output_dir}", *overrides])


def run_task(overrides: list[str], output_dir: Path):
    """``python main.py OVERRIDES`` in-process: returns the test RetrievalResults (None for mode=prepare)."""
    from tagretrieval.tasks import run

    return run(compose_config(overrides, output_dir), output_dir=output_dir, overrides=overrides)


def run_main(args: list[str], *, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` in a subprocess, as a user types it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def read_metrics(run_dir: Path, split: str = "test") -> dict:
    return json.loads((Path(run_dir) / "metrics" / f"{split}.json").read_text())


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset, generated and imported once per test session."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    run_task(["mode=prepare", f"data.root={root}", "progress=false", *TINY_SYNTHETIC],
             tmp_path_factory.mktemp("prepare_run"))
    return root


@pytest.fixture(scope="session")
def smoke_overrides(synthetic_root) -> list[str]:
    """Overrides for a quick training run on the tiny synthetic data."""
    return [f"data.root={synthetic_root}", *TINY_SYNTHETIC, "experiment=smoke", "progress=false", "logger=csv"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, smoke_overrides) -> Path:
    """One smoke training run (hybrid model) shared by the tests that only read its outputs."""
    run_dir = tmp_path_factory.mktemp("trained")
    run_task(smoke_overrides, run_dir)
    return run_dir


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
