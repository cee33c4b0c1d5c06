"""A test-only Lightning callback, added to real runs by a Hydra override: records what training actually saw.

``+callbacks.recorder._target_=batch_recorder.BatchRecorder +callbacks.recorder.path=FILE`` appends one JSON line
per training batch: epoch, global step, the rows of the batch's songs (its pairs', then its untagged songs'), the
pairs' anchor tags (indices and names), how many tag columns its labels have and how many tags each row carries,
and a checksum of its mel crops.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class BatchRecorder(L.Callback):
    def __init__(self, *, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "rank": trainer.global_rank,
                  "rows": batch["row"].tolist(), "tags": batch["tag"].tolist(),
                  "tag_names": [pl_module.tags[i] for i in batch["tag"].tolist()],
                  "label_columns": int(batch["labels"].shape[1]),
                  "labels_per_row": batch["labels"].sum(dim=1).tolist()}
        if "mel" in batch:
            mel = batch["mel"].double()
            record["mel_sum"] = float(mel.sum())
            record["mel_weighted"] = float((mel * (1 + mel.flatten(1).argsort(dim=1).reshape(mel.shape) % 7)).sum())
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]
