"""The task layer: the only code under ``main.py`` that reads the Hydra config.

``run(cfg, output_dir=...)`` dispatches on ``cfg.mode``: ``prepare`` imports the data, ``train`` fits and then
evaluates the best checkpoint on the test split, ``test`` evaluates ``cfg.ckpt_path`` (ours or a reference one).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from tagretrieval import metric_keys
from tagretrieval.audio import MelCache, MelFrontend
from tagretrieval.checkpoints import is_ours, module_from_checkpoint, read_checkpoint
from tagretrieval.data.datamodule import TagRetrievalDataModule
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.report import copy_report
from tagretrieval.evaluation import RetrievalResults, write_results
from tagretrieval.models import TagRetrievalModel
from tagretrieval.models.reference import model_from_reference
from tagretrieval.module import TagRetrievalModule
from tagretrieval.reports.run_report import scores_path
from tagretrieval.reports.scores import ScoreMatrix
from tagretrieval.tag_encoders import resolve_missing

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    dataset: PreparedDataset
    frontend: MelFrontend
    prepared_dir: Path


def prepare_data(cfg: DictConfig, output_dir: Path) -> Prepared:
    """Import (or reuse) the prepared dataset; copy its report into the run folder."""
    frontend = instantiate(cfg.audio)
    importer = instantiate(cfg.data)
    dataset = importer.prepare(frontend=frontend, progress=cfg.progress)
    report = copy_report(importer.prepared_dir, output_dir)
    log.info("prepared dataset '%s' at %s: %d tracks, %d tags%s", dataset.name, importer.prepared_dir,
             len(dataset.tracks), len(dataset.tags), f" (report: {report})" if report else "")
    return Prepared(dataset=dataset, frontend=frontend, prepared_dir=Path(importer.prepared_dir))


def tag_vectors(cfg: DictConfig, dataset: PreparedDataset) -> tuple[PreparedDataset, np.ndarray, bool]:
    """Word vectors of the dataset's tags from ``cfg.tag_encoder``; tags without one are refused or dropped."""
    encoder = instantiate(cfg.tag_encoder)
    vectors, missing = encoder.vectors(dataset.tags, train_tag_lists=dataset.tag_lists(metric_keys.TRAIN))
    kept, vectors, dropped = resolve_missing(dataset.tags, vectors, missing, drop_missing=encoder.drop_missing)
    if dropped:
        log.warning("dropped %d tag(s) without a word vector: %s", len(dropped), ", ".join(dropped))
    return dataset.select_tags(kept), vectors, encoder.trainable


def build_model(cfg: DictConfig, dataset: PreparedDataset) -> TagRetrievalModel:
    """Instantiate ``cfg.model``; CF and feature dimensions come from the data (their one source of truth)."""
    model_class = get_class(cfg.model._target_)
    extra = {}
    if model_class.uses_cf and dataset.cf is not None:
        extra["cf_dim"] = int(dataset.cf.shape[1])
    if model_class.uses_features and dataset.features is not None:
        extra["n_features"] = int(dataset.features.shape[1])
    return instantiate(cfg.model, **extra)


def build_datamodule(cfg: DictConfig, prepared: Prepared, model: TagRetrievalModel,
                     dataset: PreparedDataset) -> TagRetrievalDataModule:
    mel_cache = None
    if model.uses_audio:
        if not dataset.has_mels:
            raise ValueError(f"model {type(model).__name__} needs audio, but dataset '{dataset.name}' at {dataset.root} "
                             "was imported without a mel cache (data=fma data.input=features: use model=features, "
                             "or import with data.input=audio)")
        mel_cache = MelCache.open(prepared.prepared_dir / "mels", frontend=prepared.frontend)
    return TagRetrievalDataModule(
        dataset=dataset, sampler=instantiate(cfg.sampler), mel_cache=mel_cache, use_cf=model.uses_cf,
        use_features=model.uses_features,
        chunk_frames=cfg.chunk_frames, n_eval_chunks=cfg.n_eval_chunks,
        eval_batch_size=cfg.loader.eval_batch_size, num_workers=cfg.loader.num_workers,
    )


def build_trainer(cfg: DictConfig, output_dir: Path) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def finish(trainer: L.Trainer, module: TagRetrievalModule, dataset: PreparedDataset,
           output_dir: Path) -> RetrievalResults:
    """Write ``metrics/test.json``, the per-tag CSV and the score matrix (rank zero); print the results table."""
    results = module.results[metric_keys.TEST]
    if trainer.is_global_zero:
        paths = write_results(results, output_dir)
        scores, relevance = module.scores[metric_keys.TEST]
        track_ids = [dataset.track_ids[i] for i in dataset.split_indices(metric_keys.TEST)]
        paths["scores"] = ScoreMatrix(
            split=metric_keys.TEST, scores=scores, relevance=relevance, tags=module.tags,
            categories=list(module.hparams["categories"]), track_ids=track_ids,
        ).save(scores_path(output_dir, metric_keys.TEST))
        print(results.table())
        print("metrics written to " + ", ".join(str(p) for p in paths.values()))
    return results


def train(cfg: DictConfig, output_dir: Path) -> RetrievalResults:
    prepared = prepare_data(cfg, output_dir)
    dataset, vectors, trainable = tag_vectors(cfg, prepared.dataset)
    model = build_model(cfg, dataset)
    module = TagRetrievalModule(
        model=model, loss=instantiate(cfg.loss), tags=dataset.tags, categories=dataset.categories,
        word_dim=vectors.shape[1], tag_vectors=vectors, train_tag_vectors=trainable,
        negatives=get_class(cfg.sampler._target_).negatives, optimizer=instantiate(cfg.optimizer),
        seed=cfg.seed, k=cfg.top_k, tag_encoder=OmegaConf.to_container(cfg.tag_encoder, resolve=True),
    )
    datamodule = build_datamodule(cfg, prepared, model, dataset)
    trainer = build_trainer(cfg, output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    best = "best" if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path else None
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    return finish(trainer, module, dataset, output_dir)


def test(cfg: DictConfig, output_dir: Path) -> RetrievalResults:
    if not cfg.ckpt_path:
        raise ValueError("mode=test needs ckpt_path=PATH (one of our checkpoints or a reference one)")
    prepared = prepare_data(cfg, output_dir)
    checkpoint = read_checkpoint(cfg.ckpt_path, trusted=cfg.checkpoint_trusted)
    if is_ours(checkpoint):
        module = module_from_checkpoint(checkpoint)
        dataset = _align_tags(prepared.dataset, module.tags)
    else:
        dataset, vectors, _ = tag_vectors(cfg, prepared.dataset)
        model = model_from_reference(checkpoint["state_dict"])
        module = TagRetrievalModule(
            model=model, loss=instantiate(cfg.loss), tags=dataset.tags, categories=dataset.categories,
            word_dim=vectors.shape[1], tag_vectors=vectors, seed=cfg.seed, k=cfg.top_k,
            tag_encoder=OmegaConf.to_container(cfg.tag_encoder, resolve=True),
        )
    datamodule = build_datamodule(cfg, prepared, module.model, dataset)
    trainer = build_trainer(cfg, output_dir)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return finish(trainer, module, dataset, output_dir)


def _align_tags(dataset: PreparedDataset, tags: list[str]) -> PreparedDataset:
    """The dataset's labels in the checkpoint's tag order; a tag the data lacks is a clear error."""
    missing = [t for t in tags if t not in set(dataset.tags)]
    if missing:
        raise ValueError(f"the checkpoint was trained on tags that dataset '{dataset.name}' lacks: {missing}")
    return dataset.select_tags(tags)


def prepare(cfg: DictConfig, output_dir: Path) -> None:
    prepared = prepare_data(cfg, output_dir)
    print(f"prepared '{prepared.dataset.name}': {len(prepared.dataset.tracks)} tracks, "
          f"{len(prepared.dataset.tags)} tags at {prepared.prepared_dir}")


# mode -> "module:function"; each function takes (cfg, output_dir). Imported lazily: a mode's dependencies
# are only needed when it runs.
MODES: dict[str, str] = {
    "train": "tagretrieval.tasks:train",
    "test": "tagretrieval.tasks:test",
    "prepare": "tagretrieval.tasks:prepare",
    "report": "tagretrieval.reports.task:report",
    # use a trained model (tagretrieval.inference, docs/usage/retrieval.md)
    "retrieve": "tagretrieval.inference.tasks:retrieve",
    "tag": "tagretrieval.inference.tasks:tag",
    "export": "tagretrieval.inference.tasks:export",
    # baselines that place our numbers (tagretrieval.baselines, docs/usage/baselines.md)
    "baseline": "tagretrieval.baselines.tasks:baseline",
}


def run(cfg: DictConfig, *, output_dir: str | Path):
    """Entry point of ``main.py``: seed, then run ``cfg.mode``."""
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode={cfg.mode!r}; valid modes: {', '.join(MODES)}")
    output_dir = Path(output_dir)
    L.seed_everything(cfg.seed, workers=True)
    module_name, function = MODES[cfg.mode].split(":")
    return getattr(importlib.import_module(module_name), function)(cfg, output_dir)
