"""Callbacks (config group ``callbacks``)."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

from tagretrieval import metric_keys


class BestCheckpoint(ModelCheckpoint):
    """``dirpath/best.ckpt``: the highest validation PR-AUC (:data:`metric_keys.MONITOR`)."""

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
