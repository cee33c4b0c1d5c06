"""Test-only Lightning callbacks that inject faults into real runs (added by a Hydra override)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillDuringEpoch(L.Callback):
    """SIGKILL this process (no clean-up, as the OOM killer or a pre-empted job does) at batch ``batch`` of ``epoch``."""

    def __init__(self, *, epoch: int, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
