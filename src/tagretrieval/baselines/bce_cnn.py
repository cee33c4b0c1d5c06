"""``mode=baseline +baseline=bce_cnn``: the short-chunk CNN as a multi-label classifier (sigmoid + BCE).

The strongest peer approach on a fixed vocabulary (Won et al. 2020, "Evaluation of CNN-based automatic music
tagging models"): the same :class:`~tagretrieval.models.ShortChunkCNN` as the retrieval models, then
``fc -> BatchNorm -> ReLU -> dropout -> fc`` to one logit per tag, trained with binary cross-entropy on random
``chunk_frames`` crops of the train songs' cached log-mels. Evaluation cuts each song into ``n_eval_chunks``
chunks exactly as the retrieval models' evaluation does (``song_loader``), averages the chunks' sigmoid
probabilities, and ranks the songs of each tag by that probability: the same ``RetrievalResults`` as a trained
retrieval model. The checkpoint callback keeps the best valid macro PR-AUC (:data:`metric_keys.MONITOR`),
which is then evaluated on the test split.

By default (``conf/baseline/bce_cnn.yaml``) an epoch is as many crops as the retrieval model's epoch
(``sampler.pairs_per_epoch x train_chunks``, filled in by the task layer) in batches of ``sampler.batch_size``, with
the retrieval model's CNN, epochs, early stopping and optimizer settings: the same number of CNN forward passes per
epoch as the retrieval model's training.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from tagretrieval.evaluation import metric_keys
from tagretrieval.audio import MelStore
from tagretrieval.baselines.context import BaselineContext, evaluate_scores, write_split
from tagretrieval.baselines.taggers import restrict_categories
from tagretrieval.data.datamodule import SongInputs, default_num_workers, song_loader, to_model_layout, worker_options
from tagretrieval.evaluation import RetrievalResults
from tagretrieval.models import MLPBranch, ShortChunkCNN


class CropDataset(Dataset):
    """Item ``i``: one crop ``mel [n_mels, chunk_frames]`` of song ``rows[i]`` at a uniformly random position,
    with its ``labels [n_tags]`` (and ``row``). Positions come from torch's global generator (seeded per run
    and per loader worker by Lightning)."""

    def __init__(self, inputs: SongInputs, rows: np.ndarray) -> None:
        self.inputs, self.rows = inputs, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.inputs.item(int(self.rows[i]), crop_position=float(torch.rand(())))


class BCETagger(L.LightningModule):
    """Short-chunk CNN + MLP head with one sigmoid output per tag; reloads with ``load_from_checkpoint``.

    Args:
        tags, categories: the vocabulary ``[n_tags]`` (output ``j`` is ``tags[j]``) and each tag's category.
        n_mels: mel bands; cnn_channels: the CNN's widths (``conf: cnn_channels``).
        cnn_out_dim: output of the CNN's final 1x1 conv; hidden_dim: the head's hidden layer.
        dropout: before the last layer; lr, weight_decay: Adam's.
        k: the ``k`` of P@k.
    """

    def __init__(self, *, tags: Sequence[str], categories: Sequence[str], n_mels: int, cnn_channels: Sequence[int],
                 cnn_out_dim: int, hidden_dim: int, dropout: float, lr: float, weight_decay: float, k: int) -> None:
        super().__init__()
        if len(tags) != len(categories) or not tags:
            raise ValueError(f"need one category per tag and at least one tag, got {len(tags)} and {len(categories)}")
        self.save_hyperparameters({"tags": list(tags), "categories": list(categories), "n_mels": n_mels,
                                   "cnn_channels": [int(c) for c in cnn_channels], "cnn_out_dim": cnn_out_dim,
                                   "hidden_dim": hidden_dim, "dropout": dropout, "lr": lr,
                                   "weight_decay": weight_decay, "k": k})
        self.cnn = ShortChunkCNN(n_mels=n_mels, channels=cnn_channels, out_dim=cnn_out_dim)
        self.head = MLPBranch(in_dim=cnn_out_dim, hidden_dim=hidden_dim, out_dim=len(tags), dropout=dropout)
        self.loss = nn.BCEWithLogitsLoss()
        self.results: dict[str, RetrievalResults] = {}
        # split -> (probabilities [n_songs, n_tags], labels [n_songs, n_tags], rows [n_songs]) of the last evaluation
        self.outputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._eval: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, mel: Tensor) -> Tensor:
        """``mel [B, n_mels, T]`` -> logits ``Tensor[B, n_tags]``."""
        return self.head(self.cnn(mel))

    def song_probabilities(self, mel_chunks: Tensor) -> Tensor:
        """``mel_chunks [B, n_chunks, n_mels, chunk_frames]`` -> mean chunk probability float32 ``Tensor[B, n_tags]``."""
        batch, n_chunks, n_mels, n_frames = mel_chunks.shape
        logits = self(mel_chunks.reshape(batch * n_chunks, n_mels, n_frames))
        probabilities = torch.sigmoid(logits.float())  # float32 under mixed precision: half precision ties scores
        return probabilities.reshape(batch, n_chunks, -1).mean(dim=1)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        batch["mel"] = to_model_layout(batch["mel"])  # the store's layout and dtype -> float32 [..., n_mels, T]
        return batch

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss(self(batch["mel"]), batch["labels"])
        self.log(metric_keys.key(metric_keys.TRAIN, metric_keys.LOSS), loss, prog_bar=True, on_step=True,
                 on_epoch=True, batch_size=len(batch["mel"]))
        return loss

    def _eval_step(self, batch: dict) -> None:
        self._eval.append((batch["row"], self.song_probabilities(batch["mel"]).detach(), batch["labels"]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def _eval_epoch_end(self, split: str) -> None:
        rows, probabilities, labels = (torch.cat(parts).cpu().numpy() for parts in zip(*self._eval))
        self._eval.clear()
        order = np.argsort(rows)
        rows, probabilities, labels = rows[order], probabilities[order], labels[order].astype(np.uint8)
        results = evaluate_scores(scores=probabilities, labels=labels, tags=self.hparams["tags"],
                                  categories=self.hparams["categories"], split=split, k=self.hparams["k"])
        self.results[split], self.outputs[split] = results, (probabilities, labels, rows)
        headline = metric_keys.key(split, metric_keys.PR_AUC)
        flat = results.flat()
        self.log(headline, flat.pop(headline), prog_bar=True)
        self.log_dict(flat)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(metric_keys.VALID)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(metric_keys.TEST)


class BCECNNBaseline:
    """Trains and tests a :class:`BCETagger` on the prepared dataset's mel cache (module doc).

    Args:
        cnn_channels, cnn_out_dim, hidden_dim, dropout: the network (:class:`BCETagger`).
        n_mels: mel bands of the cache (``conf: audio.n_mels``).
        chunk_frames: training crop and evaluation chunk, in frames; n_eval_chunks: chunks averaged per song.
        batch_size: crops per training step; crops_per_epoch: crops per epoch (songs drawn without replacement,
            reshuffled after every pass over the train split).
        lr, weight_decay: Adam's.
        eval_batch_size: songs per evaluation step; num_workers: data-loader workers (None: ``min(8, cores)``),
            started by ``start_method`` (:func:`~tagretrieval.data.datamodule.worker_context`).
        categories: only the tags of these categories; None: every tag.

    Writes ``metrics/test.json`` (+ per-tag CSV and score matrix) of the best checkpoint, and the trainer's
    checkpoints and logs (``conf: callbacks, logger``).
    """

    def __init__(self, *, cnn_channels: Sequence[int], cnn_out_dim: int, hidden_dim: int, dropout: float, n_mels: int,
                 chunk_frames: int, n_eval_chunks: int, batch_size: int, crops_per_epoch: int, lr: float,
                 weight_decay: float, eval_batch_size: int, num_workers: int | None, categories: Sequence[str] | None,
                 start_method: str | None = None) -> None:
        if min(chunk_frames, n_eval_chunks, batch_size, crops_per_epoch, eval_batch_size) < 1:
            raise ValueError("chunk_frames, n_eval_chunks, batch_size, crops_per_epoch and eval_batch_size "
                             "must be >= 1")
        self.network = {"n_mels": n_mels, "cnn_channels": list(cnn_channels), "cnn_out_dim": cnn_out_dim,
                        "hidden_dim": hidden_dim, "dropout": dropout, "lr": lr, "weight_decay": weight_decay}
        self.chunk_frames, self.n_eval_chunks = chunk_frames, n_eval_chunks
        self.batch_size, self.crops_per_epoch = batch_size, crops_per_epoch
        self.eval_batch_size = eval_batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.start_method = start_method
        self.categories = None if categories is None else list(categories)

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, **worker_options(self.num_workers, start_method=self.start_method), **kwargs)

    def run(self, context: BaselineContext) -> RetrievalResults:
        if context.make_trainer is None or context.frontend is None:
            raise ValueError("bce_cnn needs a trainer factory and the mel front end in its BaselineContext")
        dataset = restrict_categories(context.dataset, self.categories)
        mel_store = MelStore.open(dataset.mel_dir, frontend=context.frontend)
        inputs = SongInputs(dataset, mel_store=mel_store, use_cf=False, use_features=False,
                            chunk_frames=self.chunk_frames)
        train = CropDataset(inputs, dataset.split_indices(metric_keys.TRAIN))
        train_loader = self._loader(train, batch_size=self.batch_size, drop_last=False,
                                    sampler=RandomSampler(train, num_samples=self.crops_per_epoch))
        valid_loader, test_loader = (
            song_loader(inputs, dataset.split_indices(split), n_chunks=self.n_eval_chunks,
                        batch_size=self.eval_batch_size, num_workers=self.num_workers,
                        start_method=self.start_method)
            for split in (metric_keys.VALID, metric_keys.TEST))
        module = BCETagger(tags=dataset.tags, categories=dataset.categories, k=context.top_k, **self.network)
        trainer = context.make_trainer()
        if trainer.world_size > 1:
            raise ValueError("bce_cnn evaluates on one device: use trainer=cpu or trainer=gpu, not ddp")
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=valid_loader)
        callback = trainer.checkpoint_callback
        best = "best" if callback is not None and callback.best_model_path else None
        trainer.test(module, dataloaders=test_loader, ckpt_path=best, verbose=False)
        results = module.results[metric_keys.TEST]
        probabilities, labels, rows = module.outputs[metric_keys.TEST]
        ids = dataset.track_ids
        write_split(results, scores=probabilities, labels=labels, track_ids=[ids[i] for i in rows], tags=dataset.tags,
                    categories=dataset.categories, output_dir=context.output_dir)
        return results
