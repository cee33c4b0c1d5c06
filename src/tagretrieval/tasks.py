"""The task layer: the only code under ``main.py`` that reads the Hydra config.

``run(cfg, output_dir=...)`` dispatches on ``cfg.mode``: ``prepare`` imports the data, ``train`` fits and then
evaluates the best checkpoint on the test split, ``test`` evaluates ``cfg.ckpt_path`` (ours or a reference one).
The modes that use a checkpoint take the data it was trained on unless the command line chooses other data
(:func:`checkpoint_settings`); ``model=auto`` builds the model that fits the data (:func:`model_config`).
"""

from __future__ import annotations

import copy
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from tagretrieval.evaluation import metric_keys

from tagretrieval.pretrained import overlapping_dataset
from tagretrieval.pretrained.embedder import pretrained_model
from tagretrieval.pretrained.weights import weights_installed
from tagretrieval.runtime import preflight
from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.audio.cache import open_for_prepare, prepare_mels
from tagretrieval.audio.store import cache_params
from tagretrieval.training.checkpoints import data_config, is_ours, module_from_checkpoint, read_checkpoint
from tagretrieval.runtime.console import configure_console
from tagretrieval.data.datamodule import TagRetrievalDataModule, default_num_workers
from tagretrieval.data.samplers import untagged_per_batch
from tagretrieval.runtime.lock import exclusive, lock_path_for
from tagretrieval.data.inputs import AUDIO, FEATURES, dataset_inputs, describe
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.report import copy_report, skipped_summary
from tagretrieval.runtime.errors import ConfigError, DataError
from tagretrieval.evaluation import RetrievalResults, write_results
from tagretrieval.evaluation.results import small_split_note
from tagretrieval.evaluation.unseen import check_unseen_vectors, choose_unseen_tags
from tagretrieval.runtime.launch import n_training_processes
from tagretrieval.models import TagRetrievalModel
from tagretrieval.models.choice import MODELS, auto_model, fitting_models, model_inputs, model_name
from tagretrieval.models.reference import model_from_reference
from tagretrieval.training.module import TagRetrievalModule
from tagretrieval.training.recipe import (CROPS_PER_SONG, ScalePlan, auto_cnn_channels, auto_pairs_per_epoch,
                                          recipe_block, scale_plan)
from tagretrieval.reports.run_report import scores_path
from tagretrieval.reports.scores import ScoreMatrix
from tagretrieval.tags.shared import settings_key, shared_tag_matrix
from tagretrieval.tags.encoders import resolve_missing

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    dataset: PreparedDataset
    frontend: MelFrontend
    prepared_dir: Path


def prepare_data(cfg: DictConfig, output_dir: Path) -> Prepared:
    """Import (or reuse) the prepared dataset; copy its report into the run folder.

    One process at a time (DDP ranks, parallel sweep jobs) runs the import of a prepared folder: the first to take
    its lock imports, the others then find the import done and load it (:mod:`tagretrieval.runtime.lock`).
    """
    frontend = instantiate(cfg.audio)
    importer = instantiate(cfg.data)
    for warning in pretrained_overlap(cfg):
        log.warning("%s", warning)
    if cfg.get("data_read_only"):
        return _read_only_data(cfg, importer, frontend, output_dir)
    with exclusive(lock_path_for(importer.prepared_dir), purpose=f"import of {importer.prepared_dir}"):
        dataset = importer.prepare(frontend=frontend, progress=cfg.progress)
        if cfg.song_features:  # computed into the prepared folder under the same lock (tagretrieval.data.song_features)
            dataset = instantiate(cfg.song_features).attach(dataset, report_dir=output_dir, progress=cfg.progress)
        # under the lock: a job sharing the prepared folder (a sweep over protocols or split indices) may import
        # into it the moment the lock is released, replacing the report
        report = copy_report(importer.prepared_dir, output_dir)
    log.info("prepared dataset '%s' at %s: %d tracks, %d tags; %s", dataset.name, importer.prepared_dir,
             len(dataset.tracks), len(dataset.tags), skipped_summary(report) if report else "no import report")
    if cfg.mode in ("train", "test", "baseline"):  # the modes that report P@k
        for split in (metric_keys.VALID, metric_keys.TEST):
            if note := small_split_note(k=cfg.top_k, n_songs=len(dataset.split_indices(split))):
                log.warning("%s split: %s", split, note)
    return Prepared(dataset=dataset, frontend=frontend, prepared_dir=Path(importer.prepared_dir))


def pretrained_models(cfg: DictConfig) -> list[str]:
    """The musicnn networks (``MTT_musicnn``, ...) this run uses: ``song_features=musicnn``, ``baseline/source=musicnn``
    (``+baseline=musicnn_probe``), ``mode=tag pretrained=NAME``, ``model=musicnn``."""
    models = []
    baseline = cfg.get("baseline")
    for node in (cfg.get("song_features"), baseline.get("source") if baseline else None):
        if node and {"weights", "architecture"} <= set(node) and "musicnn" in str(node.get("_target_", "")).lower():
            models.append(pretrained_model(weights=node.weights, architecture=node.architecture))
    if cfg.mode == "tag" and cfg.get("pretrained"):
        models.append(str(cfg.pretrained))
    model = cfg.get("model")
    if model and model.get("_target_") == MODELS["musicnn"]:  # model=musicnn: a network to fine-tune
        models.append(str(model.pretrained))
    return models


def pretrained_overlap(cfg: DictConfig) -> list[str]:
    """The warnings of :func:`tagretrieval.pretrained.overlapping_dataset` for this run: an MTT-trained network on
    ``data=mtat``, an MSD-trained one on ``data=msd500`` (the data sub-package of ``data._target_`` names the set)."""
    dataset = (str(cfg.data.get("_target_", "")).split(".")[-2:] or [""])[0]  # tagretrieval.data.mtat.MTATImporter
    return [w for model in dict.fromkeys(pretrained_models(cfg)) if (w := overlapping_dataset(model, dataset))]


def _read_only_data(cfg: DictConfig, importer, frontend: MelFrontend, output_dir: Path) -> Prepared:
    """``data_read_only``: the current import of ``cfg.data`` where it already is, read without importing, generating,
    locking or writing anything at its paths (the data a checkpoint remembers: :func:`checkpoint_settings`).

    Raises:
        DataError: there is no current import of it (or, with ``song_features``, no feature cache); the
            one-line message lists the data's paths and how to proceed.
    """
    load_existing = getattr(importer, "load_existing", None)  # the importers' reuse test (data/importer.py)
    dataset = load_existing() if load_existing is not None else None
    if dataset is None:
        raise DataError(_read_only_refusal(cfg, "holds no current import of it"))
    if cfg.song_features:
        workers = {"num_workers": 0} if "num_workers" in cfg.song_features else {}
        song_features = instantiate(cfg.song_features, **workers)
        if not song_features.has_cache(dataset):
            raise DataError(_read_only_refusal(cfg, "holds no feature cache for its song_features"))
        # tracks the cache lacks are skipped and reported (song_features.max_skipped_fraction), not computed
        dataset = song_features.attach(dataset, report_dir=output_dir, progress=False, read_only=True)
    report = copy_report(importer.prepared_dir, output_dir)
    log.info("prepared dataset '%s' at %s (read only): %d tracks, %d tags; %s", dataset.name, importer.prepared_dir,
             len(dataset.tracks), len(dataset.tags), skipped_summary(report) if report else "no import report")
    return Prepared(dataset=dataset, frontend=frontend, prepared_dir=Path(importer.prepared_dir))


PATH_KEYS = ("root", "prepared_dir")


def _data_paths(node: dict) -> str:
    """The paths a data config names: ``root``, ``prepared_dir`` and any other ``*_dir``/``*path*``/``*file*``."""
    keys = [k for k in node if k in PATH_KEYS or k.endswith("_dir") or "path" in k or "file" in k]
    return ", ".join(f"data.{k}={node[k]}" for k in dict.fromkeys(keys) if isinstance(node[k], str))


def _read_only_refusal(cfg: DictConfig, what: str) -> str:
    node = OmegaConf.to_container(cfg.data, resolve=True)
    where = f"the data ckpt_path={cfg.ckpt_path} remembers" if cfg.ckpt_path else "the data"
    return (f"{where} ({_data_paths(node)}) {what}, and a checkpoint's paths are only read, never imported or "
            f"written into: import that data first, name the data on the command line (data=NAME data.root=PATH), or "
            f"pass trust_checkpoint_paths=true if you trust the checkpoint's paths")


def tag_vectors(cfg: DictConfig, dataset: PreparedDataset, *, shared_in: Path | None = None,
                unseen: Sequence[str] = ()) -> tuple[PreparedDataset, np.ndarray, bool]:
    """Word vectors of the dataset's tags from ``cfg.tag_encoder``; tags without one are refused or dropped.

    With ``shared_in`` (the run folder), the first process of the run computes them and the other ranks load them
    (:mod:`tagretrieval.tags.shared`): one process per run folder reads the word-vector file. ``unseen``: tags held
    out of training (the zero-shot protocol): the encoder learns nothing from their labels, and one that cannot embed
    them is refused (:func:`tagretrieval.evaluation.unseen.check_unseen_vectors`).
    """
    encoder = instantiate(cfg.tag_encoder)
    seen = [tag for tag in dataset.tags if tag not in set(unseen)]

    def compute() -> tuple[list[str], np.ndarray, list[str]]:
        train_lists = dataset.select_tags(seen).tag_lists(metric_keys.TRAIN)  # no held-out tag in what it learns
        vectors, missing = encoder.vectors(dataset.tags, train_tag_lists=train_lists)
        if unseen:  # an encoder that cannot embed a held-out tag stops here, before any training
            check_unseen_vectors(unseen, missing, encoder_name=type(encoder).__name__, trainable=encoder.trainable,
                                 drop_missing=encoder.drop_missing)
        return resolve_missing(dataset.tags, vectors, missing, drop_missing=encoder.drop_missing)

    if shared_in is None:
        kept, vectors, dropped = compute()
    else:
        key = settings_key({"tag_encoder": OmegaConf.to_container(cfg.tag_encoder, resolve=True),
                            "tags": dataset.tags, "prepared_dir": str(dataset.root), "source": dataset.source,
                            "unseen": list(unseen)})
        kept, vectors, dropped = shared_tag_matrix(shared_in, key=key, compute=compute)
    if dropped:
        log.warning("dropped %d tag(s) without a word vector: %s", len(dropped), ", ".join(dropped))
    return dataset.select_tags(kept), vectors, encoder.trainable


def build_model(cfg: DictConfig, dataset: PreparedDataset, *, announced: str | None = None) -> TagRetrievalModel:
    """Instantiate ``cfg.model`` (``model=auto``: the model that fits the dataset; its choice is logged unless it
    is ``announced`` already); CF and feature dimensions come from the data (their one source of truth)."""
    name, node, extra = model_config(cfg, dataset_inputs(dataset), dataset=f"'{dataset.name}'",
                                     announce=announced is None)
    if announced is not None and name != announced:
        log.warning("model=auto: %s after all (the import holds %s)", name, describe(dataset_inputs(dataset)))
    model_class = get_class(node._target_)
    if model_class.uses_cf and dataset.cf is not None:
        extra["cf_dim"] = int(dataset.cf.shape[1])
    if model_class.uses_features and dataset.features is not None:
        extra["n_features"] = int(dataset.features.shape[1])
    return instantiate(node, **extra)


# --- model=auto and the check of model=: which model fits which data (tagretrieval.models.choice) ------------
AUTO_CHOICES = "choices"  # conf/model/auto.yaml: the candidate configs, by name
# measured on two dev sets (docs/pretrained.md, "Measured"): a tie on one, +0.013 ROC-AUC on the other, a fraction of
# the CPU time; not enough to switch model=auto, worth saying when the weights are there
PRETRAINED_HINT = ("; the musicnn weights are installed: model=features song_features=musicnn tied or beat it on "
                   "both dev sets (docs/pretrained.md)")


def model_config(cfg: DictConfig, inputs: frozenset[str], *, dataset: str,
                 announce: bool = True) -> tuple[str, DictConfig, dict]:
    """``(name, config node, keyword arguments)`` of the model to build for a dataset holding ``inputs``.

    ``model=auto``: the first model of ``AUTO_ORDER`` that fits, logged when ``announce``; its keyword arguments
    are the keys set on ``model`` itself (e.g. by ``experiment=smoke``). An explicit ``model=NAME`` that needs an
    input the data lacks is a ConfigError naming the models that fit.
    """
    node = cfg.model
    if AUTO_CHOICES in node:
        name = auto_model(inputs)
        if name is None:
            raise ConfigError(f"model=auto: dataset {dataset} holds {describe(inputs)}, which no model reads")
        if announce:
            log.info("model=auto chose %s: dataset %s holds %s; model=NAME chooses another%s", name, dataset,
                     describe(inputs), PRETRAINED_HINT if name == "acoustic" and weights_installed() else "")
        shared = {key: value for key, value in node.items() if key != AUTO_CHOICES and value is not None}
        return name, node[AUTO_CHOICES][name], shared
    name = model_name(node._target_)
    lacking = model_inputs(get_class(node._target_)) - inputs
    if lacking:
        fits = " or ".join(f"model={n}" for n in fitting_models(inputs)) or "none of our models (another dataset)"
        computed = (" or add song_features=handcrafted or song_features=musicnn (features from the audio),"
                    if lacking == {FEATURES} else "")
        raise ConfigError(f"model={name} needs {describe(lacking)}, but dataset {dataset} holds {describe(inputs)}: "
                          f"use {fits},{computed} or leave model= out (model=auto picks)")
    return name, node, {}


def planned_inputs(cfg: DictConfig) -> tuple[frozenset[str] | None, str]:
    """What the import of ``cfg.data`` will hold for the song branch, told by the importer from its settings
    (None when it cannot tell before importing), and how messages name the dataset."""
    importer = instantiate(cfg.data)
    label = f"'{getattr(importer, 'name', None) or type(importer).__name__.removesuffix('Importer').lower()}'"
    song_inputs = getattr(importer, "song_inputs", None)  # optional: without it the check waits for the import
    if song_inputs is None:
        return None, label
    inputs = frozenset(song_inputs())
    if cfg.song_features and AUDIO in inputs:  # song_features=handcrafted|musicnn: features from the audio
        inputs |= {FEATURES}
    return inputs, label


def data_settings(cfg: DictConfig) -> dict:
    """What a checkpoint keeps of its training data (:func:`tagretrieval.training.checkpoints.data_config`)."""
    return {"data": OmegaConf.to_container(cfg.data, resolve=True),
            "audio": OmegaConf.to_container(cfg.audio, resolve=True), "chunk_frames": int(cfg.chunk_frames),
            "song_features": OmegaConf.to_container(cfg.song_features, resolve=True)}


def chosen(overrides: Sequence[str], key: str) -> bool:
    """Whether a command-line override sets ``key`` or anything below it (``data=folder``, ``+data.x=1``, ...)."""
    names = (o.lstrip("~+").split("=", 1)[0] for o in overrides)
    return any(name == key or name.startswith((f"{key}.", f"{key}@", f"{key}/")) for name in names)


def _data_label(node) -> str:
    name = node.get("name") or str(node["_target_"]).rsplit(".", 1)[-1].removesuffix("Importer").lower()
    return f"'{name}' at {node.get('root')}"


def checkpoint_settings(cfg: DictConfig, overrides: Sequence[str] | None) -> DictConfig:
    """``cfg`` with the data, front end and chunk length that ``cfg.ckpt_path`` was trained on, for each of them
    the command line does not set (``data=...``, ``audio.*``, ``chunk_frames``); a different dataset given is
    logged as such. An explicit ``model=`` other than the checkpoint's is refused: a checkpoint brings its model.

    ``overrides``: the command line (Hydra's task overrides); None counts every setting as given (a config
    composed in code says what it wants).

    A checkpoint may come from anyone: unless ``trust_checkpoint_paths``, the data taken from it is only read where
    a current import of it already is (``data_read_only``: nothing imported, generated or written at its paths),
    and its ``num_workers`` are 0.
    """
    checkpoint = read_checkpoint(cfg.ckpt_path, trusted=cfg.trust_pickles)
    if overrides is not None and is_ours(checkpoint) and chosen(overrides, "model") and AUTO_CHOICES not in cfg.model:
        saved, given = checkpoint["hyper_parameters"]["model"]["_target_"], cfg.model._target_
        if saved != given:
            raise ConfigError(f"ckpt_path={cfg.ckpt_path} holds a model={model_name(saved)}, but model="
                              f"{model_name(given)} was given: leave model= out (a checkpoint brings its own model)")
    stored = data_config(checkpoint)
    if stored is None:
        return cfg
    given = {key for key in stored if overrides is None or chosen(overrides, key)}
    if "trust_pickles" in stored["data"]:  # the run's decision, never the file's
        stored["data"]["trust_pickles"] = bool(cfg.trust_pickles)
    read_only = "data" not in given and not cfg.get("trust_checkpoint_paths", False)
    if read_only:  # the file's paths are only read, and nothing it says starts processes
        for key in ("data", "song_features"):
            if isinstance(stored.get(key), dict) and "num_workers" in stored[key]:
                stored[key]["num_workers"] = 0
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in set(stored) - given:
            OmegaConf.update(cfg, key, stored[key], merge=False)
        if read_only:
            cfg.data_read_only = True
    if "data" not in given:
        log.info("data: %s, the checkpoint's training data%s", _data_label(stored["data"]),
                 " (read only: trust_checkpoint_paths=false)" if read_only else "")
    else:
        current = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "trust_pickles"}
        if current != {k: v for k, v in stored["data"].items() if k != "trust_pickles"}:
            log.info("data: %s as given (data=...); the checkpoint was trained on %s", _data_label(current),
                     _data_label(stored["data"]))
    return cfg


def check_resume(path: str, module: TagRetrievalModule, *, trusted: bool) -> None:
    """Refuse to resume training from a checkpoint of another model (kind or settings) than this run builds."""
    checkpoint = read_checkpoint(path, trusted=trusted)
    saved = (checkpoint.get("hyper_parameters") or {}).get("model")
    if not is_ours(checkpoint):
        raise DataError(f"ckpt_path={path} is not a tagretrieval checkpoint: mode=train resumes ours only "
                        "(mode=test evaluates a reference checkpoint)")
    built = module.hparams["model"]
    if saved["_target_"] != built["_target_"]:
        raise ConfigError(f"ckpt_path={path} holds a model={model_name(saved['_target_'])}, this run builds model="
                          f"{model_name(built['_target_'])}: resume with model={model_name(saved['_target_'])} "
                          "(and its other settings), or start a new run without ckpt_path")
    differ = sorted(key for key in set(saved) | set(built) if saved.get(key) != built.get(key))
    if differ:
        raise ConfigError(f"ckpt_path={path} was trained with other model settings (" + ", ".join(
            f"{key}={saved.get(key)!r}, now {built.get(key)!r}" for key in differ) + "): resume with the same "
            "settings, or start a new run without ckpt_path")


FINAL_CHECKPOINT = "checkpoints/final.ckpt"  # in the run folder: the weights mode=train tests without a best one


def tested_checkpoint(trainer: L.Trainer, output_dir: Path) -> str:
    """The checkpoint ``mode=train`` tests: the best by :data:`metric_keys.MONITOR`. Without one (no callback keeps
    it, e.g. ``~callbacks``, or validation never ran) the weights at the end of training, with a warning, saved to
    :data:`FINAL_CHECKPOINT` (rank 0's), so that what was tested is on disk (``mode=test ckpt_path=...`` repeats it)
    and every DDP rank loads that one copy. Under DDP the ranks' batch-norm statistics drift apart in training (each
    updates them with its own batches); Lightning 2.6 broadcasts rank 0's module state before an evaluation anyway
    (``DDPStrategy.setup``), and loading one file does not depend on it."""
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks
                 if c.monitor == metric_keys.MONITOR and c.best_model_path), None)
    if best is not None:
        return best
    final = output_dir / FINAL_CHECKPOINT
    log.warning("no best checkpoint (no callback keeps the best %s, or validation never ran): testing the "
                "weights at the end of training instead, saved to %s", metric_keys.MONITOR, final)
    trainer.save_checkpoint(final, weights_only=True)  # every rank calls it; rank 0 writes, then all wait for it
    return str(final)


def build_datamodule(cfg: DictConfig, prepared: Prepared, model: TagRetrievalModel,
                     dataset: PreparedDataset) -> TagRetrievalDataModule:
    mel_store = None
    if model.uses_audio:
        if not dataset.has_mels:
            fits = " or ".join(f"model={n}" for n in fitting_models(dataset_inputs(dataset)))
            raise ConfigError(f"model {type(model).__name__} needs audio, but dataset '{dataset.name}' at "
                              f"{dataset.root} was imported without mels: use {fits or 'another dataset'}")
        mel_store = model_mel_store(cfg, prepared, model, dataset)
    loader = cfg.loader
    return TagRetrievalDataModule(
        dataset=dataset, sampler=instantiate(cfg.sampler), mel_store=mel_store, use_cf=model.uses_cf,
        use_features=model.uses_features,
        # a model with its own front end (model=musicnn) brings its chunk length (musicnn's 3-s patch)
        chunk_frames=model.chunk_frames if hasattr(model, "mel_frontend") else cfg.chunk_frames,
        n_eval_chunks=cfg.n_eval_chunks, train_chunks=cfg.train_chunks,
        n_valid_chunks=cfg.validation.n_chunks, max_valid_songs=cfg.validation.max_songs,
        eval_batch_size=loader.eval_batch_size, seed=cfg.seed,
        num_workers=default_num_workers() if loader.num_workers is None else loader.num_workers,
        pin_memory=on_gpu(cfg) if loader.pin_memory is None else loader.pin_memory,
        prefetch_factor=loader.prefetch_factor, start_method=loader.start_method,
    )


def model_mel_store(cfg: DictConfig, prepared: Prepared, model: TagRetrievalModel,
                    dataset: PreparedDataset) -> MelStore:
    """The mels ``model`` reads: the prepared folder's (``mels/``, made by ``cfg.audio``), or, for a model with a
    front end of its own (``model=musicnn``: ``mel_frontend()``, ``mel_store_name``), a store of its own beside
    them, filled once from the tracks' audio under the import lock (resumable; later runs and the other DDP ranks
    find it filled)."""
    own = getattr(model, "mel_frontend", None)
    if own is None:
        return MelStore.open(prepared.prepared_dir / "mels", frontend=prepared.frontend)
    frontend, root = own(), prepared.prepared_dir / model.mel_store_name
    items = list(zip(dataset.tracks["track_id"], dataset.tracks["audio_path"]))
    with exclusive(lock_path_for(prepared.prepared_dir), purpose=f"mels of {root}"):
        store = open_for_prepare(root, frontend_params=cache_params(frontend))
        outcome = prepare_mels(store, items, frontend, num_workers=int(cfg.data.get("num_workers") or 0),
                               progress=cfg.progress)
    if outcome.skipped:
        shown = "; ".join(f"{t}: {reason}" for t, reason in list(outcome.skipped.items())[:3])
        raise DataError(f"{len(outcome.skipped)} of {len(items)} tracks of '{dataset.name}' gave no mels with the "
                        f"front end of {type(model).__name__} ({shown}): their audio changed since the import? "
                        "Re-import the dataset")
    log.info("%s reads its own mels: %s (%d computed, %d already there)", type(model).__name__, root,
             outcome.n_computed, len(outcome.done) - outcome.n_computed)
    return MelStore.open(root, frontend=frontend)


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


def _settings(node) -> str:
    """``Name(key=value, ...)`` of a config node with a ``_target_``; ``none`` for an empty one."""
    if not node:
        return "none"
    values = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    name = str(node.get("_target_", "")).rsplit(".", 1)[-1]
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in values.items()) + ")"


def apply_scale_plan(cfg: DictConfig, dataset: PreparedDataset, *, world_size: int, device: str) -> ScalePlan:
    """The scaling rules (:func:`tagretrieval.training.recipe.scale_plan`) written into ``cfg``: ``optimizer.lr``
    x the rule's factor, ``scheduler.warmup_steps`` in steps of the global batch, ``validation.max_songs`` from the
    validation budget where it is null (left null where the whole split fits). Call once per run."""
    scheduler = cfg.get("scheduler") or {}
    plan = scale_plan(
        world_size=world_size, n_train_songs=len(dataset.split_indices(metric_keys.TRAIN)),
        n_valid_songs=len(dataset.split_indices(metric_keys.VALID)), batch_size=int(cfg.sampler.batch_size),
        device=device, train_chunks=int(cfg.train_chunks), base_lr=float(cfg.optimizer.lr),
        base_warmup_steps=int(scheduler.get("warmup_steps", 0)), n_valid_chunks=int(cfg.validation.n_chunks),
        lr_rule=str(cfg.scaling.lr), valid_crop_fraction=float(cfg.scaling.valid_crop_fraction),
        pairs_per_epoch=int(cfg.sampler.pairs_per_epoch), max_valid_songs=cfg.validation.max_songs,
        validate_every_n_epochs=int(cfg.trainer.get("check_val_every_n_epoch") or 1))
    with open_dict(cfg):
        cfg.optimizer.lr = plan.lr
        if "warmup_steps" in scheduler:
            cfg.scheduler.warmup_steps = plan.warmup_steps
        cfg.validation.max_songs = None if plan.valid_whole else plan.valid_songs
    return plan


def resolve_recipe(cfg: DictConfig, dataset: PreparedDataset, *, model: str | None = None,
                   announce: bool = True) -> None:
    """Fill the recipe's automatic settings into ``cfg`` (``sampler.pairs_per_epoch: null``, ``cnn_channels: null``:
    :mod:`tagretrieval.training.recipe`) from the training split and the device, and log the recipe as one block (unless not
    ``announce``). ``model``: the model's name (``None``: a baseline, which is trained with the same budget)."""
    device = "gpu" if on_gpu(cfg) else "cpu"
    n_train = len(dataset.split_indices(metric_keys.TRAIN))
    processes = n_training_processes(cfg.trainer)
    auto: dict[str, str] = {}
    with open_dict(cfg):
        if cfg.sampler.get("pairs_per_epoch") is None:
            cfg.sampler.pairs_per_epoch = auto_pairs_per_epoch(
                n_train_songs=n_train, batch_size=int(cfg.sampler.batch_size), world_size=processes, device=device,
                train_chunks=int(cfg.train_chunks))
            auto["pairs"] = (f" (auto: {CROPS_PER_SONG} crops per training song / {cfg.train_chunks} per pair, "
                             f"whole batches)")
        if cfg.get("cnn_channels") is None:
            cfg.cnn_channels = auto_cnn_channels(device=device)
            auto["cnn"] = f" (auto: {device})"
        baseline = cfg.get("baseline")
        if model is None and baseline is not None and "crops_per_epoch" in baseline and baseline.crops_per_epoch is None:
            # bce_cnn: the crops of the retrieval model's epoch, so that both train on the same compute
            baseline.crops_per_epoch = int(cfg.sampler.pairs_per_epoch) * int(cfg.train_chunks)
            auto["crops"] = f" (auto: {cfg.sampler.pairs_per_epoch:,} pairs x {cfg.train_chunks} crops)"
    plan = None
    if model is not None:  # the retrieval model's training follows the world size (docs/scale-out.md)
        plan = apply_scale_plan(cfg, dataset, world_size=processes, device=device)
    if not announce:
        return
    stopping = (cfg.get("callbacks") or {}).get("early_stopping")
    rows = [("data", f"'{dataset.name}': {n_train:,} / {len(dataset.split_indices(metric_keys.VALID)):,} / "
                     f"{len(dataset.split_indices(metric_keys.TEST)):,} songs (train / valid / test), "
                     f"{len(dataset.tags)} tags"),
            ("device", f"{device} x {processes}, precision {cfg.trainer.get('precision')}")]
    network = cfg.get("model") if model is not None else cfg.get("baseline")
    if model is not None:
        backbone = (f", {network.pretrained} {network.layer} (backbone lr x{network.backbone_lr_scale:g}, frozen for "
                    f"{network.frozen_epochs} epoch(s))" if "pretrained" in network else "")
        rows += [("model", f"{model}{backbone}, pooling {cfg.chunk_pooling}"),
                 ("tag encoder", _settings(cfg.tag_encoder)), ("loss", _settings(cfg.loss))]
    else:
        rows.append(("baseline", _settings(cfg.baseline) + auto.get("crops", "")))
    train_rows = dataset.split_indices(metric_keys.TRAIN)
    n_untagged = int((~np.asarray(dataset.labels[train_rows]).any(axis=1)).sum())
    per_batch = untagged_per_batch(batch_size=int(cfg.sampler.batch_size), n_untagged=n_untagged, n_songs=n_train)
    if network is not None and "cnn_channels" in network:   # not for the features, CF and pretrained models
        rows.append(("CNN channels", f"{list(cfg.cnn_channels)}{auto.get('cnn', '')}"))
    rows += [("sampling", f"{str(cfg.sampler._target_).rsplit('.', 1)[-1]}, batch {cfg.sampler.batch_size}, "
                          f"{cfg.sampler.pairs_per_epoch:,} pairs per epoch{auto.get('pairs', '')}"
                          + (f"; {n_untagged:,} untagged training songs used as negatives"
                             + (f" (+{per_batch} per batch)" if per_batch else "") if model is not None else ""))]
    if model is not None:
        frames = network.get("chunk_frames", cfg.chunk_frames)
        own = "" if frames == cfg.chunk_frames else " (of the model's own front end)"
        rows += [("context", f"{cfg.train_chunks} crop(s) of {frames} frames{own} per training song; "
                             f"{cfg.n_eval_chunks} chunks per test song, {cfg.validation.n_chunks} per valid song"),
                 ("augment", _settings(cfg.augment)), ("optimizer", _settings(cfg.optimizer)),
                 ("schedule", _settings(cfg.scheduler))]
    if plan is not None:
        rows += plan.rows()
    threshold = stopping.get("stopping_threshold") if stopping else None
    rows.append(("stopping", (f"after {stopping.patience} validations without a better {metric_keys.MONITOR}"
                              + (f" or once it reaches {threshold:g}" if threshold is not None else "") + ", "
                              if stopping else "no early stopping, ")
                 + f"at most {cfg.trainer.max_epochs} epochs, validation every "
                   f"{cfg.trainer.get('check_val_every_n_epoch', 1)} epoch(s)"))
    log.info("%s", recipe_block(rows, title="recipe (docs/recipe.md; override any of it on the command line):"))


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


def build_augment(cfg: DictConfig, model: TagRetrievalModel):
    """``cfg.augment``, less its level transforms (``gain_db``, mixing: they work on dB mels) for a model whose
    own front end is not in dB (``model=musicnn``'s ``log10(1 + 10000 x)``), said at start."""
    if not cfg.augment:
        return None
    node = copy.deepcopy(cfg.augment)
    if hasattr(model, "mel_frontend"):
        off = [key for key in ("gain_db", "mix_probability") if node.get(key)]
        if off:
            log.warning("augment: %s off for %s: its mels are not in dB (the time and frequency masks stay)",
                        " and ".join(off), type(model).__name__)
            with open_dict(node):
                for key in off:
                    node[key] = 0.0
    return instantiate(node)


def train(cfg: DictConfig, output_dir: Path) -> RetrievalResults:
    planned, label = planned_inputs(cfg)
    announced = None
    if planned is not None:  # a model that cannot work on the data is refused before a long import
        announced, _, _ = model_config(cfg, planned, dataset=label)
    prepared = prepare_data(cfg, output_dir)
    held_out = OmegaConf.to_container(cfg.eval, resolve=True)["unseen_tags"]  # a ListConfig becomes a list
    unseen = choose_unseen_tags(held_out, tags=prepared.dataset.tags, categories=prepared.dataset.categories,
                                seed=cfg.eval.unseen_seed)
    everything, all_vectors, trainable = tag_vectors(cfg, prepared.dataset, shared_in=output_dir, unseen=unseen)
    dataset, vectors = everything, all_vectors
    if unseen:  # the zero-shot protocol: train and validate on the seen tags only
        unseen = [tag for tag in unseen if tag in set(everything.tags)]
        seen_rows = [j for j, tag in enumerate(everything.tags) if tag not in set(unseen)]
        dataset, vectors = everything.select_tags([everything.tags[j] for j in seen_rows]), all_vectors[seen_rows]
        log.info("eval.unseen_tags: %d tag(s) held out of training, evaluated apart: %s", len(unseen),
                 ", ".join(unseen))
    resolve_recipe(cfg, dataset, model=model_config(cfg, dataset_inputs(dataset), dataset=f"'{dataset.name}'",
                                                    announce=False)[0])
    model = build_model(cfg, dataset, announced=announced)
    module = TagRetrievalModule(
        model=model, loss=instantiate(cfg.loss), tags=dataset.tags, categories=dataset.categories,
        word_dim=vectors.shape[1], tag_vectors=vectors, train_tag_vectors=trainable,
        negatives=get_class(cfg.sampler._target_).negatives, optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
        augment=build_augment(cfg, model),
        seed=cfg.seed, k=cfg.top_k, tag_encoder=OmegaConf.to_container(cfg.tag_encoder, resolve=True),
        data_config=data_settings(cfg),
        channels_last=cfg.performance.channels_last, compile_cnn=cfg.performance.compile,
    )
    if cfg.ckpt_path:
        check_resume(cfg.ckpt_path, module, trusted=cfg.trust_pickles)
    datamodule = build_datamodule(cfg, prepared, model, dataset)
    trainer = build_trainer(cfg, output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if unseen:
        return test_unseen(cfg, trainer, module, prepared, everything, all_vectors, unseen, output_dir)
    trainer.test(module, datamodule=datamodule, ckpt_path=tested_checkpoint(trainer, output_dir), verbose=False)
    return finish(trainer, module, dataset, output_dir)


def test_unseen(cfg: DictConfig, trainer: L.Trainer, module: TagRetrievalModule, prepared: Prepared,
                dataset: PreparedDataset, vectors: np.ndarray, unseen: Sequence[str],
                output_dir: Path) -> RetrievalResults:
    """Test the best checkpoint (trained on the seen tags) on every tag, seen or not, with ``seen``/``unseen`` blocks.

    The tag branch embeds the held-out tags' vectors as it embeds any query: a module with the whole vocabulary
    (``dataset``'s tags, ``vectors [n_tags, word_dim]``) around the trained network is tested.
    """
    tested = tested_checkpoint(trainer, output_dir)
    module.load_state_dict(read_checkpoint(tested, trusted=cfg.trust_pickles)["state_dict"])
    everything = TagRetrievalModule(
        model=module.model, loss=module.loss, tags=dataset.tags, categories=dataset.categories,
        word_dim=vectors.shape[1], tag_vectors=vectors, seed=cfg.seed, k=cfg.top_k,
        tag_encoder=module.hparams["tag_encoder"], data_config=module.hparams["data_config"],
    )
    trainer.test(everything, datamodule=build_datamodule(cfg, prepared, module.model, dataset), verbose=False)
    scores, relevance = everything.scores[metric_keys.TEST]
    everything.results[metric_keys.TEST] = everything.results[metric_keys.TEST].with_blocks(
        scores=scores, relevance=relevance, tags=dataset.tags, categories=dataset.categories, unseen=unseen)
    return finish(trainer, everything, dataset, output_dir)


def test(cfg: DictConfig, output_dir: Path) -> RetrievalResults:
    if not cfg.ckpt_path:
        raise ConfigError("mode=test needs ckpt_path=PATH (one of our checkpoints or a reference one)")
    if cfg.eval.unseen_tags is not None:
        raise ConfigError("eval.unseen_tags holds tags out of training: it applies to mode=train (the run's own test "
                          "then has seen and unseen blocks), not to testing a trained checkpoint")
    checkpoint = read_checkpoint(cfg.ckpt_path, trusted=cfg.trust_pickles)
    module = module_from_checkpoint(checkpoint) if is_ours(checkpoint) else None  # a bad file fails before the import
    prepared = prepare_data(cfg, output_dir)
    if module is not None:
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
        raise DataError(f"the checkpoint was trained on tags that dataset '{dataset.name}' lacks: {missing}")
    return dataset.select_tags(tags)


def prepare(cfg: DictConfig, output_dir: Path) -> None:
    prepared = prepare_data(cfg, output_dir)
    print(f"prepared '{prepared.dataset.name}': {len(prepared.dataset.tracks)} tracks, "
          f"{len(prepared.dataset.tags)} tags at {prepared.prepared_dir}")


def run(cfg: DictConfig, *, output_dir: str | Path, overrides: Sequence[str] | None = None):
    """Entry point of ``main.py``: check, seed, then run ``cfg.mode`` (:data:`tagretrieval.runtime.preflight.MODES`).

    ``overrides``: the command line's settings (Hydra's task overrides), which tell a mode that uses ``ckpt_path``
    whether to take the checkpoint's data (:func:`checkpoint_settings`); None: every setting counts as chosen.
    """
    preflight.check(cfg)
    if cfg.mode in preflight.CHECKPOINT_MODES and cfg.ckpt_path:  # (mode=tag pretrained=NAME has none)
        cfg = checkpoint_settings(cfg, overrides)
    output_dir = Path(output_dir)
    configure_console()  # Lightning's lines once each, no advert (tagretrieval.runtime.console)
    L.seed_everything(cfg.seed, workers=True)
    module_name, function = preflight.MODES[cfg.mode].split(":")
    return getattr(importlib.import_module(module_name), function)(cfg, output_dir)
