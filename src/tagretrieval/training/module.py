"""The LightningModule: metric-learning training (triplet, InfoNCE or multi-label) and per-tag retrieval
evaluation, DDP-correct.

A checkpoint rebuilds without the Hydra config tree: the model and the loss are saved as specs
(``{"_target_": "tagretrieval....", **kwargs}``), the tag vectors as a buffer (or parameter) of the state dict.
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from tagretrieval.evaluation import metric_keys
from tagretrieval.training.augment import MelAugment
from tagretrieval.data.datamodule import to_model_layout
from tagretrieval.evaluation import RetrievalResults
from tagretrieval.models import TagRetrievalModel, build_from_spec
from tagretrieval.data.samplers import NEGATIVE_MODES, choose_negatives
from tagretrieval.training.schedules import WarmupPlateau, apply_warmup


def scores_matrix(tag_embeddings: torch.Tensor, song_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarities float32 ``[n_tags, n_songs]`` from ``tag_embeddings [n_tags, D]``, ``song_embeddings
    [n_songs, D]`` (any float dtypes: under mixed precision the embeddings may come out in half precision; the
    scores, and so the metrics, are always computed in float32)."""
    with torch.autocast(device_type=song_embeddings.device.type, enabled=False):
        return F.normalize(tag_embeddings.float(), dim=-1) @ F.normalize(song_embeddings.float(), dim=-1).T


def song_inputs(batch: dict) -> dict[str, torch.Tensor]:
    """The song-branch inputs present in a batch: ``mel``, ``cf``, ``features``."""
    return {name: batch[name] for name in ("mel", "cf", "features") if name in batch}


class TagRetrievalModule(L.LightningModule):
    """Trains a :class:`TagRetrievalModel` on (tag, song) pairs; evaluates retrieval of every tag over a split.

    Args:
        model: the network, or its spec (when reloaded from a checkpoint).
        loss: ``TripletLoss``/``InfoNCELoss``/``MultiLabelLoss``, or its spec.
        tags, categories: the tag vocabulary ``[n_tags]`` in label-column order, and each tag's category.
        tag_vectors: word vectors ``[n_tags, word_dim]`` fed to the tag branch (zeros when reloading: the
            state dict restores them).
        train_tag_vectors: make the tag vectors trainable (``tag_encoder=learned``).
        negatives: ``"uniform"`` or ``"weighted"`` in-batch negative choice (from the sampler).
        optimizer: ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_``); not needed to evaluate. It gets two
            parameter groups: weights, and the parameters weight decay should not shrink (biases, normalisation
            scales, the loss's scale and bias: every tensor of fewer than 2 dimensions), with ``weight_decay=0``.
        scheduler: the learning-rate schedule (:class:`~tagretrieval.training.schedules.WarmupPlateau`), or None.
        augment: training-mel augmentation (:class:`~tagretrieval.training.augment.MelAugment`), or None.
        tag_encoder: the tag encoder's settings, kept so that queries can be embedded later.
        data_config: the data it is trained on, ``{"data": importer config, "audio": front-end config,
            "chunk_frames": int}`` (plain values), kept so that ``ckpt_path=`` modes use the same data by default.
        channels_last: run the CNN in the channels-last memory layout (faster convolutions on recent GPUs).
        compile_cnn: ``torch.compile`` the CNN when training or evaluating starts (``nn.Module.compile``: the
            state dict keeps its keys). Neither is saved in the checkpoint: they are how to run, not what was learnt.

    Training is reproducible across a resume: the pair stream is a function of the epoch (the sampler), the negatives
    and the augmentations of the step (:meth:`_step_generator`), and the global random state that dropout draws from is reseeded at
    every step from (seed, step, rank) (:meth:`on_train_batch_start`), so nothing depends on what else consumed
    random numbers before (e.g. DataLoader iterators drawing their base seeds, which differ after a resume).
    """

    def __init__(
        self,
        *,
        model: TagRetrievalModel | Mapping,
        loss: torch.nn.Module | Mapping,
        tags: Sequence[str],
        categories: Sequence[str],
        word_dim: int,
        tag_vectors: np.ndarray | torch.Tensor | None = None,
        train_tag_vectors: bool = False,
        negatives: str = "uniform",
        optimizer: Callable | None = None,
        scheduler: WarmupPlateau | None = None,
        augment: MelAugment | None = None,
        seed: int = 0,
        k: int = 10,
        tag_encoder: Mapping | None = None,
        data_config: Mapping | None = None,
        channels_last: bool = False,
        compile_cnn: bool = False,
    ) -> None:
        super().__init__()
        model = build_from_spec(model) if isinstance(model, Mapping) else model
        loss = build_from_spec(loss) if isinstance(loss, Mapping) else loss
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
        if len(tags) != len(categories):
            raise ValueError(f"{len(tags)} tags but {len(categories)} categories")
        # set directly: save_hyperparameters(dict) compares the dict with every init argument (arrays included)
        self._set_hparams({
            "model": model.spec(), "loss": loss.spec(), "tags": list(tags), "categories": list(categories),
            "word_dim": word_dim, "train_tag_vectors": train_tag_vectors, "negatives": negatives, "seed": seed,
            "k": k, "tag_encoder": dict(tag_encoder) if tag_encoder is not None else None,
            "data_config": dict(data_config) if data_config is not None else None,
        })
        self._hparams_initial = copy.deepcopy(self._hparams)
        self.model = model
        self.loss = loss
        vectors = torch.zeros(len(tags), word_dim) if tag_vectors is None else torch.as_tensor(tag_vectors)
        vectors = vectors.float()
        if vectors.shape != (len(tags), word_dim):
            raise ValueError(f"tag_vectors {tuple(vectors.shape)} != (n_tags={len(tags)}, word_dim={word_dim})")
        if train_tag_vectors:
            self.tag_vectors = torch.nn.Parameter(vectors)
        else:
            self.register_buffer("tag_vectors", vectors)
        self.optimizer_factory = optimizer
        self.scheduler = scheduler
        self.augment = augment if augment is not None and augment.active else None
        self.channels_last = channels_last
        self.compile_cnn = compile_cnn
        self._valid_triplets = None  # device tensor: valid triplets of this epoch, checked once at its end
        self.results: dict[str, RetrievalResults] = {}
        # split -> (scores [n_tags, n_songs], relevance [n_tags, n_songs]) of the last evaluation, songs in row order
        self.scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._eval_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def tags(self) -> list[str]:
        return list(self.hparams["tags"])

    def tag_embeddings(self) -> torch.Tensor:
        """Embeddings ``[n_tags, D]`` of the whole vocabulary (before normalisation)."""
        return self.model.embed_tags(self.tag_vectors)

    def configure_model(self) -> None:
        """Apply the run-time options (once, before training or evaluation)."""
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        cnn = getattr(self.model, "cnn", None)
        if self.compile_cnn and cnn is not None and not getattr(cnn, "_compiled_by_tagretrieval", False):
            cnn.compile()
            cnn._compiled_by_tagretrieval = True

    def _parameter_groups(self) -> list[dict]:
        """The optimizer's groups: weight decay on weights (``dim >= 2``) only; a model with pretrained parts gives
        its own groups first (``parameter_groups()``: ``lr_scale``, ``frozen_epochs``), each split the same way."""
        model_groups = self.model.parameter_groups() if hasattr(self.model, "parameter_groups") else []
        owned = {id(p) for group in model_groups for p in group["params"]}
        model_groups += [{"params": [p for p in self.parameters() if id(p) not in owned]}]
        groups = []
        for group in model_groups:
            parameters = [p for p in group["params"] if p.requires_grad]
            options = {key: value for key, value in group.items() if key != "params"}
            groups += [{**options, "params": [p for p in parameters if p.dim() >= 2]},
                       {**options, "params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
        return [group for group in groups if group["params"]]

    def setup(self, stage: str) -> None:
        """Before training (and before a resumed run's checkpoint is restored): a pretrained backbone reads its
        shipped weights (:meth:`tagretrieval.models.musicnn.MusicnnModel.load_pretrained_weights`)."""
        if stage == "fit" and hasattr(self.model, "load_pretrained_weights"):
            self.model.load_pretrained_weights()

    def on_train_epoch_start(self) -> None:
        """A pretrained backbone stays as it is for its ``frozen_epochs`` (its rate is 0 in :meth:`optimizer_step`)."""
        if hasattr(self.model, "freeze_backbone"):
            self.model.freeze_backbone(self.current_epoch < getattr(self.model, "frozen_epochs", 0))

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer given: this module was loaded for evaluation only")
        optimizer = self.optimizer_factory(self._parameter_groups())
        for group in optimizer.param_groups:  # a pretrained backbone's own rate (models.musicnn)
            group["lr"] *= group.get("lr_scale", 1.0)
        if self.scheduler is None:
            return optimizer
        plateau = self.scheduler.plateau(optimizer, mode=metric_keys.MONITOR_MODE)
        every = self.trainer.check_val_every_n_epoch if self._trainer is not None else 1
        # strict=False: an epoch without validation (check_val_every_n_epoch > 1) leaves the rate as it is
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": metric_keys.MONITOR,
                                                         "interval": "epoch", "frequency": every or 1,
                                                         "strict": False}}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The warm-up (:func:`~tagretrieval.training.schedules.apply_warmup`): the first ``warmup_steps`` steps run at a
        fraction of each group's rate (a decay on plateau meanwhile is kept); the decay on plateau owns the rate
        afterwards. A pretrained backbone's groups in their ``frozen_epochs`` step at rate 0. After the step, the loss
        clamps what it learns into its range (``constrain_``)."""
        if self.scheduler is not None:
            apply_warmup(optimizer, self.global_step, warmup_steps=self.scheduler.warmup_steps)
        frozen = [group for group in optimizer.param_groups if group.get("frozen_epochs", 0) > self.current_epoch]
        rates = [group["lr"] for group in frozen]
        for group in frozen:  # no step (AdamW's decay is scaled by the rate too); the moments still see the gradients
            group["lr"] = 0.0
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        for group, rate in zip(frozen, rates):
            group["lr"] = rate
        self.loss.constrain_()

    def _step_seed(self, stream: int) -> int:
        """A seed for this step's random stream ``stream``: a function of (seed, global step, rank) only."""
        state = np.random.SeedSequence([self.hparams["seed"], self.global_step, self.global_rank, stream])
        return int(state.generate_state(1)[0])

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "mel" in batch:  # store layout and dtype -> the model's float32 [..., n_mels, chunk_frames], on the device
            batch["mel"] = to_model_layout(batch["mel"])
        return batch

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        torch.manual_seed(self._step_seed(1))  # dropout and modality dropout (CPU and every CUDA device)

    def _step_generator(self, stream: int) -> torch.Generator:
        """A generator on the device for this step's stream ``stream`` (0: negatives, 2: augmentation)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self._step_seed(stream))
        return generator

    def _embed_training_songs(self, batch: dict) -> torch.Tensor:
        """Song embeddings ``[B, D]`` of a training batch: one crop per song (``mel [B, n_mels, T]``) or several
        (``mel [B, C, n_mels, T]``, ``train_chunks``), pooled as the model pools evaluation chunks."""
        inputs = song_inputs(batch)
        mel = inputs.pop("mel", None)
        if mel is not None and mel.dim() == 3:
            mel = mel.unsqueeze(1)
        return self.model.embed_song_chunks(mel, **inputs)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        tag = batch["tag"]  # [P]: the pairs' anchors; the batch's songs [B >= P] end with its untagged songs
        if self.augment is not None and "mel" in batch:
            batch["mel"], batch["labels"] = self.augment(batch["mel"], batch["labels"],
                                                         generator=self._step_generator(2))
        songs = self._embed_training_songs(batch)
        # every song against every tag (the pair's tag only chose the song), or the pairs' anchor tags
        anchors = self.model.embed_tags(self.tag_vectors if self.loss.over_vocabulary else self.tag_vectors[tag])
        # the loss in float32 whatever the precision of the branches (bf16/fp16 cosines lose the margin's scale)
        with torch.autocast(device_type=self.device.type, enabled=False):
            anchors, songs = anchors.float(), songs.float()
            if self.loss.over_vocabulary:
                loss = self.loss(anchors, songs, batch["labels"].float())
            else:
                positive = batch["labels"][:, tag].T.bool()  # [anchor i, song j]: song j carries tag i
                if self.loss.needs_negatives:
                    index, valid = choose_negatives(
                        anchors=anchors.detach(), songs=songs.detach(), candidates=~positive,
                        mode=self.hparams["negatives"], generator=self._step_generator(0),
                    )
                    loss = self.loss(anchors, songs[:len(tag)], songs[index], valid)
                    count = valid.sum()
                    self._valid_triplets = count if self._valid_triplets is None else self._valid_triplets + count
                else:
                    loss = self.loss(anchors, songs, positive)  # [P, B]: the untagged songs are negatives
        # two keys, as Lightning names one logged on_step and on_epoch: the step value is this rank's (sync_dist on an
        # on_step value all-reduces it at every step), the epoch mean is averaged over all DDP ranks once, at the
        # epoch's end. No host sync per step either: the step value is not on the progress bar (reading it there
        # would wait for the GPU)
        name = metric_keys.key(metric_keys.TRAIN, metric_keys.LOSS)
        self.log(f"{name}_step", loss.detach(), on_step=True, on_epoch=False, sync_dist=False, batch_size=len(tag))
        self.log(f"{name}_epoch", loss.detach(), on_step=False, on_epoch=True, sync_dist=True, batch_size=len(tag))
        return loss

    def on_train_epoch_end(self) -> None:
        valid, self._valid_triplets = self._valid_triplets, None
        if not self.loss.needs_negatives:
            return
        # the valid triplets of the epoch, and the ranks that trained on any batch, summed over the DDP ranks: one
        # all-reduce and one host sync per epoch, and every rank takes the same decision (a rank raising alone
        # would leave the others waiting for it at their next collective)
        trained = valid is not None
        counts = torch.stack([valid.long() if trained else torch.zeros((), dtype=torch.long, device=self.device),
                              torch.tensor(int(trained), dtype=torch.long, device=self.device)])
        total_valid, ranks_trained = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        if ranks_trained and not total_valid:
            raise RuntimeError("no batch of this epoch had a valid triplet (every song of every batch carried the "
                               "anchor's tag): the loss was zero and nothing was learnt. Check the labels, or raise "
                               "sampler.batch_size")

    # evaluation: every rank embeds its shard of the songs, then all ranks gather the whole split
    def _eval_step(self, batch: dict) -> None:
        inputs = song_inputs(batch)
        embeddings = self.model.embed_song_chunks(inputs.pop("mel", None), **inputs)
        self._eval_outputs.append((batch["row"], embeddings.detach().float(), batch["labels"]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def _gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Song embeddings ``[n_songs, D]`` and labels ``[n_songs, n_tags]`` of the whole split, by row order.

        Every rank gets here with at least one batch (a rank without songs evaluates a padding song, row -1,
        :class:`~tagretrieval.data.datamodule.ShardBatchSampler`), and every rank makes the same collectives."""
        rows = torch.cat([o[0] for o in self._eval_outputs])
        embeddings = torch.cat([o[1] for o in self._eval_outputs])
        labels = torch.cat([o[2] for o in self._eval_outputs])
        self._eval_outputs.clear()
        if self.trainer.world_size > 1:
            counts = self.all_gather(torch.tensor(len(rows), device=self.device))
            pad = int(counts.max()) - len(rows)
            rows = F.pad(rows, (0, pad), value=-1)
            embeddings = F.pad(embeddings, (0, 0, 0, pad))
            labels = F.pad(labels, (0, 0, 0, pad))
            rows, embeddings, labels = (self.all_gather(x).flatten(0, 1) for x in (rows, embeddings, labels))
        keep = rows >= 0  # neither the gather's padding nor a padding song
        rows, embeddings, labels = rows[keep], embeddings[keep], labels[keep]
        if len(torch.unique(rows)) != len(rows):
            raise RuntimeError("a song was evaluated twice: evaluation loaders must shard without duplicates")
        order = torch.argsort(rows)
        return embeddings[order], labels[order]

    def _eval_epoch_end(self, split: str) -> None:
        songs, labels = self._gather()
        with torch.autocast(device_type=self.device.type, enabled=False):
            tags = self.model.embed_tags(self.tag_vectors.float())
        scores = scores_matrix(tags, songs).cpu().numpy()
        relevance = labels.T.cpu().numpy()
        results = RetrievalResults.compute(
            scores=scores, relevance=relevance, tags=self.tags, categories=self.hparams["categories"], split=split,
            k=self.hparams["k"],
        )
        self.results[split] = results
        self.scores[split] = (scores, relevance)
        # every rank holds the gathered split, so the values are identical across ranks: no sync needed
        headline = metric_keys.key(split, metric_keys.PR_AUC)
        flat = results.flat()
        self.log(headline, flat.pop(headline), prog_bar=True, sync_dist=False)
        self.log_dict(flat, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(metric_keys.VALID)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(metric_keys.TEST)
