"""Callbacks (config group ``callbacks``)."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint

from tagretrieval.evaluation import metric_keys
from tagretrieval.runtime.errors import UserError
from tagretrieval.runtime.files import atomic_write

log = logging.getLogger(__name__)
BEST_NAME = "best.ckpt"  # the file BestCheckpoint writes (filename="best")


def not_a_best_checkpoint(path: Path, old_dirpath: Path) -> str | None:
    """Why ``path`` (a resumed checkpoint's ``best_model_path``) is not the best checkpoint of that old run, or None
    when it is: a regular file (not a link) named :data:`BEST_NAME` in the old run's ``dirpath``, holding one of our
    checkpoints (read weights-only). Both paths come from the file being resumed, which may come from anyone."""
    from tagretrieval.training.checkpoints import is_ours, read_checkpoint  # checkpoints imports the models

    if path.name != BEST_NAME:
        return f"not named {BEST_NAME}"
    if path.parent != old_dirpath:
        return f"not in the old run's checkpoint folder {old_dirpath}"
    if path.is_symlink() or not path.is_file():
        return "not a regular file"
    try:
        if not is_ours(read_checkpoint(path)):
            return "not a tagretrieval checkpoint"
    except UserError as error:
        return str(error)
    return None


class BestCheckpoint(ModelCheckpoint):
    """``dirpath/best.ckpt``: the highest validation PR-AUC (:data:`metric_keys.MONITOR`).

    Resuming into another run folder (``ckpt_path=OLD/checkpoints/last.ckpt``, the usual case: every run gets its
    own folder) keeps the best model so far: Lightning would only remember the old best's path, forget its score and
    then take the next validation as the best, however bad. Here the old best is copied into this run's
    ``checkpoints/`` and its score kept, so a resumed run selects the same checkpoint as an uninterrupted one.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the best so far; the old best is copied only if it is that run's own best checkpoint
        (:func:`not_a_best_checkpoint`), else skipped with a warning. No path of the file outside this run's folder
        is kept: Lightning would later load the best path (test) and delete the k-th best one."""
        old_dirpath = state_dict.get("dirpath")
        super().load_state_dict(state_dict)
        self._forget_paths_outside(None if self.dirpath is None else Path(self.dirpath))
        old_best, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        if old_dirpath is None or self.dirpath is None or Path(old_dirpath) == Path(self.dirpath):
            return
        if not old_best or score is None or not Path(old_best).exists():
            return
        why = not_a_best_checkpoint(Path(old_best), Path(old_dirpath))
        if why is not None:
            log.warning("resuming: the checkpoint names %s as its best checkpoint, which is not copied (%s); the best "
                        "is chosen again from this run's validations", old_best, why)
            return
        target = Path(self.dirpath) / Path(old_best).name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda f: f.write(Path(old_best).read_bytes()))
        self.best_model_path = self.kth_best_model_path = str(target)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(target): score}

    def _forget_paths_outside(self, folder: Path | None) -> None:
        """Drop every restored path that is not in ``folder`` (this run's checkpoints)."""
        def inside(path) -> bool:
            return bool(path) and folder is not None and Path(path).parent == folder

        self.best_k_models = {p: v for p, v in self.best_k_models.items() if inside(p)}
        for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if not inside(getattr(self, name)):
                setattr(self, name, "")
        if not self.best_model_path:
            self.best_model_score = None

    def __init__(self, *, dirpath: str) -> None:
        super().__init__(
            dirpath=dirpath, filename="best", monitor=metric_keys.MONITOR, mode=metric_keys.MONITOR_MODE,
            save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
        )


class LastCheckpoint(ModelCheckpoint):
    """``dirpath/last.ckpt``: the end of the latest epoch, to resume from.

    A separate callback because Lightning 2.6's ``save_last`` only writes when another checkpoint was written.
    """

    def __init__(self, *, dirpath: str) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)


class EarlyStopping(LightningEarlyStopping):
    """Stop when validation PR-AUC (:data:`metric_keys.MONITOR`) has not improved for ``patience`` validations, or
    as soon as it reaches ``stopping_threshold`` (nothing is left to learn: the synthetic data's easy tags reach it,
    real music does not; ``null``: never).

    Its state (best score, validations since) is in every checkpoint, so a run resumed from ``last.ckpt`` into
    another run folder stops where an uninterrupted run would. ``patience`` counts validations, not epochs (with
    ``trainer.check_val_every_n_epoch`` > 1 a validation is several epochs).
    """

    def __init__(self, *, patience: int, min_delta: float = 0.0, stopping_threshold: float | None = None) -> None:
        if patience < 1:
            raise ValueError(f"early stopping patience must be >= 1 validation, got {patience}")
        if stopping_threshold is not None and not 0.0 < stopping_threshold <= 1.0:
            raise ValueError(f"stopping_threshold must be in (0, 1] (a PR-AUC) or null, got {stopping_threshold}")
        super().__init__(monitor=metric_keys.MONITOR, mode=metric_keys.MONITOR_MODE, patience=patience,
                         min_delta=min_delta, stopping_threshold=stopping_threshold,
                         check_on_train_epoch_end=False, verbose=False)
