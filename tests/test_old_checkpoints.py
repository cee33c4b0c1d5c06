"""Checkpoints written before the packages were reorganised still load and evaluate to the same metrics.

``tests/data/old_checkpoints/*_bf078ad.ckpt`` were trained by main at commit bf078ad (the last commit with the old
layout) on the tiny synthetic data of ``conftest.TINY_SYNTHETIC`` with ``experiment=smoke``; only their optimizer and
scheduler states were dropped to keep the files small. They name classes by their old import paths
(``tagretrieval.losses.MultiLabelLoss``, ``tagretrieval.tag_encoders.Cooccurrence``,
``tagretrieval.song_features.HandcraftedSongFeatures``); ``*.test.json`` is what ``mode=test`` wrote for them at
bf078ad. The metrics are rank statistics of fp32 scores computed by the same code on the same data, so they must
agree to rounding: 1e-9 leaves room for a different summation order and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_SYNTHETIC, read_metrics, run_task
from tagretrieval.models.spec import BUILDABLE, MOVED

OLD = Path(__file__).parent / "data" / "old_checkpoints"


def _assert_same_metrics(got: dict, expected: dict) -> None:
    assert got["n_songs"] == expected["n_songs"]
    for block in ("macro", "per_category", "per_tag"):
        assert got[block].keys() == expected[block].keys(), block
    flat = lambda d: {f"{a}/{b}": v for a, row in d.items() for b, v in row.items() if isinstance(v, float)}
    for block in ("per_category", "per_tag"):
        e, g = flat(expected[block]), flat(got[block])
        assert g.keys() == e.keys()
        assert all(abs(g[k] - e[k]) <= 1e-9 for k in e), {k: (g[k], e[k]) for k in e if abs(g[k] - e[k]) > 1e-9}
    for key, value in expected["macro"].items():
        assert got["macro"][key] == pytest.approx(value, abs=1e-9), key


def _evaluate(name: str, synthetic_root: Path, tmp_path: Path) -> None:
    ckpt = OLD / f"{name}_bf078ad.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert stored["loss"]["_target_"] in MOVED  # the file really names an old path
    run_task(["mode=test", f"ckpt_path={ckpt}", f"data.root={synthetic_root}", *TINY_SYNTHETIC, "progress=false",
              "logger=csv"], tmp_path)
    _assert_same_metrics(read_metrics(tmp_path), json.loads((OLD / f"{name}_bf078ad.test.json").read_text()))


def test_every_old_name_maps_to_a_class_we_still_build():
    from tagretrieval.training.checkpoints import DATA_IMPORTERS, SONG_FEATURES

    assert set(MOVED.values()) <= BUILDABLE | SONG_FEATURES | DATA_IMPORTERS
    assert not set(MOVED) & (BUILDABLE | SONG_FEATURES | DATA_IMPORTERS)


def test_a_hybrid_checkpoint_from_before_the_move_evaluates_to_its_old_metrics(synthetic_root, tmp_path):
    _evaluate("hybrid", synthetic_root, tmp_path)


@pytest.mark.slow
def test_a_fused_triplet_checkpoint_with_song_features_from_before_the_move_evaluates_to_its_old_metrics(
        synthetic_root, tmp_path):
    _evaluate("fused", synthetic_root, tmp_path)
