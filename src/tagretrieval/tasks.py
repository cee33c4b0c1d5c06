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
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from tagretrieval import metric_keys
from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.checkpoints import is_ours, module_from_checkpoint, read_checkpoint
from tagretrieval.console import configure_console
from tagretrieval.data.datamodule import TagRetrievalDataModule, default_num_workers
from tagretrieval.data.lock import exclusive, lock_path_for
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.report import copy_report, skipped_summary
from tagretrieval.evaluation import RetrievalResults, write_results
from tagretrieval.evaluation.results import small_split_note
from tagretrieval.models import TagRetrievalModel
from tagretrieval.models.reference import model_from_reference
from tagretrieval.module import TagRetrievalModule
from tagretrieval.reports.run_report import scores_path
from tagretrieval.reports.scores import ScoreMatrix
from tagretrieval.shared_vectors import settings_key, shared_tag_matrix
from tagretrieval.tag_encoders import resolve_missing

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    dataset: PreparedDataset
    frontend: MelFrontend
    prepared_dir: Path


def prepare_data(cfg: DictConfig, output_dir: Path) -> Prepared:
    """Import (or reuse) the prepared dataset; copy its report into the run folder.

    One process at a time (DDP ranks, parallel sweep jobs) runs the import of a prepared folder: the first to take
    its lock imports, the others then find the import done and load it (:mod:`tagretrieval.data.lock`).
    """
    frontend = instantiate(cfg.audio)
    importer = instantiate(cfg.data)
    with exclusive(lock_path_for(importer.prepared_dir), purpose=f"import of {importer.prepared_dir}"):
        dataset = importer.prepare(frontend=frontend, progress=cfg.progress)
    report = copy_report(importer.prepared_dir, output_dir)
    log.info("prepared dataset '%s' at %s: %d tracks, %d tags; %s", dataset.name, importer.prepared_dir,
             len(dataset.tracks), len(dataset.tags), skipped_summary(report) if report else "no import report")
    if cfg.mode in ("train", "test", "baseline"):  # the modes that report P@k
        for split in (metric_keys.VALID, metric_keys.TEST):
            if note := small_split_note(k=cfg.top_k, n_songs=len(dataset.split_indices(split))):
                log.warning("%s split: %s", split, note)
    return Prepared(dataset=dataset, frontend=frontend, prepared_dir=Path(importer.prepared_dir))


def tag_vectors(cfg: DictConfig, dataset: PreparedDataset, *,
                shared_in: Path | None = None) -> tuple[PreparedDataset, np.ndarray, bool]:
    """Word vectors of the dataset's tags from ``cfg.tag_encoder``; tags without one are refused or dropped.

    With ``shared_in`` (the run folder), the first process of the run computes them and the other ranks load them
    (:mod:`tagretrieval.shared_vectors`): one process per run folder reads the word-vector file.
    """
    encoder = instantiate(cfg.tag_encoder)

    def compute() -> tuple[list[str], np.ndarray, list[str]]:
        vectors, missing = encoder.vectors(dataset.tags, train_tag_lists=dataset.tag_lists(metric_keys.TRAIN))
        return resolve_missing(dataset.tags, vectors, missing, drop_missing=encoder.drop_missing)

    if shared_in is None:
        kept, vectors, dropped = compute()
    else:
        key = settings_key({"tag_encoder": OmegaConf.to_container(cfg.tag_encoder, resolve=True),
                            "tags": dataset.tags, "prepared_dir": str(dataset.root), "source": dataset.source})
        kept, vectors, dropped = shared_tag_matrix(shared_in, key=key, compute=compute)
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
    mel_store = None
    if model.uses_audio:
        if not dataset.has_mels:
            raise ValueError(f"model {type(model).__name__} needs audio, but dataset '{dataset.name}' at {dataset.root} "
                             "was imported without a mel cache (data=fma data.input=features: use model=features, "
                             "or import with data.input=audio)")
        mel_store = MelStore.open(prepared.prepared_dir / "mels", frontend=prepared.frontend)
    loader = cfg.loader
    return TagRetrievalDataModule(
        dataset=dataset, sampler=instantiate(cfg.sampler), mel_store=mel_store, use_cf=model.uses_cf,
        use_features=model.uses_features,
        chunk_frames=cfg.chunk_frames, n_eval_chunks=cfg.n_eval_chunks,
        n_valid_chunks=cfg.validation.n_chunks, max_valid_songs=cfg.validation.max_songs,
        eval_batch_size=loader.eval_batch_size, seed=cfg.seed,
        num_workers=default_num_workers() if loader.num_workers is None else loader.num_workers,
        pin_memory=on_gpu(cfg) if loader.pin_memory is None else loader.pin_memory,
        prefetch_factor=loader.prefetch_factor,
    )


def on_gpu(cfg: DictConfig) -> bool:
    """Whether the trainer runs on CUDA devices (``trainer.accelerator`` gpu/cuda, or auto with CUDA present)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def trainer_settings(cfg: DictConfig) -> dict:
    """Trainer arguments decided from the device: bf16 falls back to fp16 on GPUs without bf16 (before Ampere),
    and ``benchmark: null`` turns cuDNN's autotuner on unless the run is deterministic (input shapes are fixed)."""
    settings = {}
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision.startswith("bf16") and on_gpu(cfg) and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        settings["precision"] = precision.replace("bf16", "16")
        log.warning("this GPU has no bfloat16: trainer.precision=%s instead of %s", settings["precision"], precision)
    if "benchmark" in cfg.trainer and cfg.trainer.benchmark is None and on_gpu(cfg):
        settings["benchmark"] = cfg.trainer.get("deterministic") is not True
    return settings


def build_trainer(cfg: DictConfig, output_dir: Path) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_settings(cfg))


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
    dataset, vectors, trainable = tag_vectors(cfg, prepared.dataset, shared_in=output_dir)
    model = build_model(cfg, dataset)
    module = TagRetrievalModule(
        model=model, loss=instantiate(cfg.loss), tags=dataset.tags, categories=dataset.categories,
        word_dim=vectors.shape[1], tag_vectors=vectors, train_tag_vectors=trainable,
        negatives=get_class(cfg.sampler._target_).negatives, optimizer=instantiate(cfg.optimizer),
        seed=cfg.seed, k=cfg.top_k, tag_encoder=OmegaConf.to_container(cfg.tag_encoder, resolve=True),
        channels_last=cfg.performance.channels_last, compile_cnn=cfg.performance.compile,
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
        dataset, vectors, _ = tag_vectors(cfg, prepared.dataset, shared_in=output_dir)
        model = model_from_reference(checkpoint["state_dict"])
        module = TagRetrievalModule(
            model=model, loss=instantiate(cfg.loss), tags=dataset.tags, categories=dataset.categories,
            word_dim=vectors.shape[1], tag_vectors=vectors, seed=cfg.seed, k=cfg.top_k,
            tag_encoder=OmegaConf.to_container(cfg.tag_encoder, resolve=True),
        )
    module.channels_last, module.compile_cnn = cfg.performance.channels_last, cfg.performance.compile
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
    configure_console()  # Lightning's lines once each, no advert (tagretrieval.console)
    L.seed_everything(cfg.seed, workers=True)
    module_name, function = MODES[cfg.mode].split(":")
    return getattr(importlib.import_module(module_name), function)(cfg, output_dir)
