"""Test-only Lightning callbacks that steer or record real runs (added by a Hydra override, as batch_recorder's)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class PlateauEveryEpoch(L.Callback):
    """Make every validation a plateau (the decay's best is unbeatable, so ``patience=0`` cuts the rate after each),
    and append ``{"step", "lr"}`` to ``path`` for every optimizer step: the rate that step used."""

    def __init__(self, *, path: str) -> None:
        self.path = Path(path)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for config in trainer.lr_scheduler_configs:
            config.scheduler.best = float("inf")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with self.path.open("a") as f:
            f.write(json.dumps({"step": trainer.global_step - 1, "lr": lr}) + "\n")


class NoValidTripletOnRankZero(L.Callback):
    """Rank 0 ends every training epoch as if none of its batches had a valid triplet (the other ranks had some).
    Runs before the module's own ``on_train_epoch_end`` (Lightning calls the callbacks' hook first)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.global_rank == 0:
            pl_module._valid_triplets = torch.zeros((), dtype=torch.long, device=pl_module.device)
