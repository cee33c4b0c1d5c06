"""``main.py mode=baseline``: the only code of :mod:`tagretrieval.baselines` that reads the Hydra config."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from tagretrieval.baselines.context import BaselineContext
from tagretrieval.tasks import build_trainer, prepare_data, resolve_recipe


def baseline(cfg: DictConfig, output_dir: Path):
    """Prepare (or reuse) ``cfg.data``, then run ``cfg.baseline`` into ``output_dir``; returns what it returns
    (the test ``RetrievalResults``; the topics for ``baseline=topics``)."""
    if "baseline" not in cfg or cfg.baseline is None:
        raise ValueError("mode=baseline needs a baseline: +baseline=NAME, NAME one of conf/baseline/*.yaml "
                         "(handcrafted_logreg, handcrafted_rf, handcrafted_hgb, handcrafted_svm, probe, musicnn_probe, "
                         "topics, bce_cnn)")
    prepared = prepare_data(cfg, output_dir)
    # a baseline that trains a CNN (bce_cnn) gets the retrieval model's budget, automatic settings included
    resolve_recipe(cfg, prepared.dataset, announce="cnn_channels" in cfg.baseline)
    runner = instantiate(cfg.baseline, _convert_="all")
    context = BaselineContext(dataset=prepared.dataset, output_dir=Path(output_dir), frontend=prepared.frontend,
                              progress=cfg.progress, top_k=cfg.top_k,
                              make_trainer=lambda: build_trainer(cfg, Path(output_dir)))
    return runner.run(context)
