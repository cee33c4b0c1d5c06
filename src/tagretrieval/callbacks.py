"""Callbacks (config group ``callbacks``)."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

from tagretrieval import metric_keys


class BestAndLastCheckpoint(ModelCheckpoint):
    """``dirpath/best.ckpt`` (highest validation PR-AUC, :data:`metric_keys.MONITOR`) and ``dirpath/last.ckpt``."""

    CHECKPOINT_NAME_LAST = "last"

    def __init__(self, *, dirpath: str) -> None:
        super().__init__(
            dirpath=dirpath, filename="best", monitor=metric_keys.MONITOR, mode=metric_keys.MONITOR_MODE,
            save_top_k=1, save_last=True, auto_insert_metric_name=False, enable_version_counter=False,
        )
