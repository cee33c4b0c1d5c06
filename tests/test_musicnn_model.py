"""model=musicnn: a song branch initialised from musicnn's shipped weights and fine-tuned, through the real runs.

Skipped when the musicnn weights are not installed, unless ``TAGRETRIEVAL_REQUIRE_PRETRAINED=1`` (CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from tagretrieval.models import build_from_spec
from tagretrieval.models.musicnn import AFTER_LAYER, LAYERS, MusicnnModel
from tagretrieval.pretrained import INSTALL_HINT, build_network, load_pretrained

from conftest import read_metrics, run_main, run_task

MISSING = importlib.util.find_spec("musicnn") is None
if MISSING and os.environ.get("TAGRETRIEVAL_REQUIRE_PRETRAINED") == "1":
    raise RuntimeError(f"TAGRETRIEVAL_REQUIRE_PRETRAINED=1 but the musicnn weights are not installed: {INSTALL_HINT}")
pytestmark = pytest.mark.skipif(MISSING, reason=f"the musicnn weights are not installed: {INSTALL_HINT}")

SMALL = {"word_dim": 8, "embedding_dim": 16, "hidden_dim": 32, "n_eval_chunks": 2}
FAST = ["model=musicnn", "model.n_eval_chunks=1", "validation.n_chunks=1", "validation.max_songs=8", "trainer.max_epochs=2",
        "sampler.batch_size=4", "sampler.pairs_per_epoch=8", "train_chunks=1"]


def test_the_model_embeds_musicnn_chunks_and_rebuilds_from_its_spec_without_reading_the_wheel():
    torch.manual_seed(0)
    model = MusicnnModel(**SMALL, pretrained="MSD_vgg", layer="pooled").eval()
    mel = torch.randn(3, 96, 400)
    with torch.no_grad():
        songs = model.embed_songs(mel=mel)
        assert songs.shape == (3, 16) and torch.isfinite(songs).all()
        rebuilt = build_from_spec(json.loads(json.dumps(model.spec())))
        rebuilt.load_state_dict(model.state_dict())
        torch.testing.assert_close(rebuilt.eval().embed_songs(mel=mel), songs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="penultimate"):
        MusicnnModel(**SMALL, pretrained="MTT_vgg", layer="penultimate")  # the VGG has no dense layer
    with pytest.raises(ValueError, match=r"mel must be \[batch, 96"):
        model.embed_songs(mel=torch.randn(2, 128, 400))


def _fit(model: MusicnnModel, tmp_path, *, epochs: int):
    """A few real optimizer steps through Trainer.fit on random batches (the module's own optimizer and hooks)."""
    from functools import partial

    from tagretrieval.training.losses import MultiLabelLoss
    from tagretrieval.training.module import TagRetrievalModule

    module = TagRetrievalModule(model=model, loss=MultiLabelLoss(), tags=["a", "b", "c"],
                                categories=["x", "x", "y"], word_dim=8, tag_vectors=torch.randn(3, 8),
                                optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01))
    generator = torch.Generator().manual_seed(0)
    batches = [{"mel": torch.randn(4, 187, 96, generator=generator), "labels": torch.eye(3)[[0, 1, 2, 0]],
                "tag": torch.tensor([0, 1, 2, 0])} for _ in range(3)]
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return module, trainer


@pytest.mark.parametrize("architecture, layer", [(a, layer) for a, layers in LAYERS.items() for layer in layers])
def test_only_the_backbone_parts_after_the_layer_are_left_untrained(architecture, layer):
    """DDP refuses a trainable parameter without a gradient: what the model leaves untrained is exactly what the
    layer does not depend on (autograd's answer), and everything else trains."""
    network = build_network(architecture).eval()
    network(torch.randn(2, 96, 187))[layer].sum().backward()
    unused = {name for name, p in network.named_parameters() if p.grad is None}
    model = MusicnnModel(**SMALL, pretrained=f"MTT_{architecture}", layer=layer)
    untrained = {name for name, p in model.backbone.named_parameters() if not p.requires_grad}
    assert untrained == unused and AFTER_LAYER[architecture][layer]
    trained = {id(p) for group in model.parameter_groups() for p in group["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}


def test_training_starts_from_the_shipped_weights_keeps_them_frozen_then_moves_them_at_a_lower_rate(tmp_path):
    shipped = load_pretrained("MTT_musicnn").state_dict()
    model = MusicnnModel(**SMALL, frozen_epochs=1, backbone_lr_scale=0.1)
    assert not torch.equal(model.backbone.dense.weight, shipped["dense.weight"])  # untrained until fit starts
    module, trainer = _fit(model, tmp_path, epochs=1)
    # one frozen epoch: the backbone (weights and batch-norm statistics) is exactly the shipped network
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, shipped[name]), name
    rates = {group.get("lr_scale", 1.0): group["lr"] for group in trainer.optimizers[0].param_groups}
    assert rates == {0.1: pytest.approx(1e-4), 1.0: pytest.approx(1e-3)}

    model = MusicnnModel(**SMALL, frozen_epochs=0)
    _fit(model, tmp_path, epochs=1)
    assert not torch.equal(model.backbone.dense.weight, shipped["dense.weight"])


def test_main_trains_and_tests_model_musicnn_in_bf16_with_its_own_mels(tmp_path, smoke_overrides, caplog):
    """fp32 training is the Trainer.fit test above; through main.py the bf16-mixed path (the slower one on CPU)."""
    import logging

    with caplog.at_level(logging.INFO, logger="tagretrieval.tasks"):
        run_task([*smoke_overrides, *FAST, "trainer.precision=bf16-mixed"], tmp_path)
    # the printed recipe names the backbone and its crops, and no CNN it does not have
    block = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("recipe ("))
    assert "musicnn, MTT_musicnn penultimate (backbone lr x0.1, frozen for 1 epoch(s))" in block
    assert "1 crop(s) of 187 frames (of the model's own front end)" in block and "CNN channels" not in block
    metrics = read_metrics(tmp_path)
    assert 0.0 < metrics["macro"]["roc_auc"] <= 1.0 and np.isfinite(metrics["macro"]["pr_auc"])
    root = Path(next(arg.split("=", 1)[1] for arg in smoke_overrides if arg.startswith("data.root=")))
    stores = [p for p in root.parent.rglob("mels-musicnn") if p.is_dir()]
    assert stores, f"no mels-musicnn store beside the prepared mels under {root.parent}"
    params = json.loads((stores[0] / "manifest.json").read_text())["frontend_params"]
    assert (params["sample_rate"], params["n_mels"]) == (16000, 96)


@pytest.mark.slow
def test_model_musicnn_trains_under_two_process_cpu_ddp(tmp_path, smoke_overrides):
    done = run_main([*smoke_overrides, *FAST, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.precision=bf16-mixed", f"hydra.run.dir={tmp_path}"], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 0.0 < read_metrics(tmp_path)["macro"]["roc_auc"] <= 1.0
