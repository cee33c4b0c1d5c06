"""What ``main.py`` does before torch and Lightning are imported: cheap checks of the composed config, and the
one-line report of a user's mistake.

Part of the task layer (it reads the config). :func:`check` catches the commonest mistakes in well under a second
(an unknown ``mode``, a required value left unset, a missing ``ckpt_path`` or a file that does not exist);
:func:`user_error` decides which exceptions ``main.py`` prints as one ``error: ...`` line with exit status 2: the
:class:`~tagretrieval.runtime.errors.UserError` s, also when Hydra's ``instantiate`` wrapped them. Everything else keeps its
traceback, and so does everything with ``HYDRA_FULL_ERROR=1`` or a ``debug=`` option (:func:`show_traceback`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tagretrieval.runtime.errors import ConfigError, MissingFileError, UserError
from tagretrieval.runtime.processes import resolve_start_method

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
# modes that use a trained model: they need ckpt_path, and use the checkpoint's data unless data= is given
CHECKPOINT_MODES: tuple[str, ...] = ("test", "retrieve", "tag", "export")
_MISSING = "???"
_WHAT = {"data.root": "the dataset folder", "tag_encoder.path": "the word-vector file"}


def check(cfg: DictConfig) -> None:
    """Refuse a config that cannot run, before anything heavy is imported.

    Raises:
        ConfigError: unknown mode, a required value (``???``) left unset, a mode without what it needs, a loader
            start method this platform lacks.
        MissingFileError: ``ckpt_path`` or ``run_dir`` does not exist.
    """
    if cfg.mode not in MODES:
        raise ConfigError(f"unknown mode={cfg.mode!r}; valid modes: {', '.join(MODES)}")
    missing = missing_values(OmegaConf.to_container(cfg, resolve=False))
    if missing:
        raise ConfigError("required setting(s) not given: " + ", ".join(
            f"{key}=..." + (f" ({_WHAT[key]})" if key in _WHAT else "") for key in missing))
    pretrained_tags = cfg.mode == "tag" and bool(cfg.get("pretrained"))  # tags of a musicnn network: no checkpoint
    needs = {"retrieve": "query", "tag": "tracks", "report": "run_dir"}
    if pretrained_tags:
        needs.pop("tag")  # without tracks: the tracks of inference.split of the dataset
        if cfg.ckpt_path:
            raise ConfigError(f"mode=tag: give ckpt_path=PATH (a trained model) or pretrained={cfg.pretrained} (a "
                              "musicnn network), not both")
    if cfg.mode in needs and cfg.get(needs[cfg.mode]) is None:
        key = needs[cfg.mode]
        if key == "run_dir":
            raise ConfigError("mode=report needs run_dir=DIR, a finished run folder (e.g. outputs/DATE/TIME)")
        raise ConfigError(f"mode={cfg.mode}: give {key}=VALUE or '{key}=[VALUE,VALUE]'")
    if cfg.mode in CHECKPOINT_MODES and not cfg.ckpt_path and not pretrained_tags:
        raise ConfigError(f"mode={cfg.mode} needs ckpt_path=PATH (one of our checkpoints or a reference one)")
    if cfg.ckpt_path and cfg.mode in (*CHECKPOINT_MODES, "train") and not Path(cfg.ckpt_path).is_file():
        raise MissingFileError(f"checkpoint not found: ckpt_path={cfg.ckpt_path}")
    if cfg.mode == "report" and not Path(cfg.run_dir).is_dir():
        raise MissingFileError(f"run folder not found: run_dir={cfg.run_dir}")
    resolve_start_method(cfg.get("loader", {}).get("start_method"))


def missing_values(node, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???`` (required, not given) in an unresolved config container."""
    if isinstance(node, Mapping):
        return [key for name, value in node.items() for key in missing_values(value, f"{prefix}{name}.")]
    if isinstance(node, list):
        return [key for i, value in enumerate(node) for key in missing_values(value, f"{prefix}{i}.")]
    return [prefix[:-1]] if node == _MISSING else []


def user_error(error: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``error`` (unwrapping Hydra's ``InstantiationException``), or None."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, UserError) else None


def show_traceback(choices: Mapping) -> bool:
    """Whether user errors keep their traceback: ``HYDRA_FULL_ERROR=1`` or a ``debug=`` option chosen."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or choices.get("debug") is not None


def one_line(error: BaseException) -> str:
    """``error: <message>`` on one line (a message's own line breaks become ``; ``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "error: " + ("; ".join(lines) or type(error).__name__)
