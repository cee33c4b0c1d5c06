"""A fine-tunable song branch initialised from musicnn's pretrained networks (``model=musicnn``).

The song branch is one of musicnn 0.1.0's four networks (:mod:`tagretrieval.pretrained`: MTT or MSD weights,
musicnn or its VGG baseline) up to a chosen layer, then an MLP head into ``embedding_dim``, per 3-s chunk, pooled
over a song's chunks as ``model=acoustic`` pools its CNN chunks:

    musicnn log-mel chunk [96, 187] -> backbone (pretrained) -> layer -> head MLP -> embedding; pooled over chunks

- The input is musicnn's own front end (16 kHz, ``log10(1 + 10000 mel)``,
  :class:`~tagretrieval.pretrained.MusicnnFrontend`), not ours: :meth:`MusicnnModel.mel_frontend` names it, and the
  prepared folder keeps these mels in a store of their own beside ours (``mels-musicnn/``).
- The weights are read from the musicnn wheel when training starts (:meth:`load_pretrained_weights`, called by
  :class:`~tagretrieval.training.module.TagRetrievalModule` before a resume is restored), not in the constructor:
  a checkpoint of a fine-tuned model rebuilds and evaluates without the wheel.
- Fine-tuning: :meth:`parameter_groups` gives the backbone its own learning-rate factor (``backbone_lr_scale``),
  and :attr:`frozen_epochs` epochs train the head alone first (the backbone's rate is 0 and its batch-norm
  statistics stay the pretrained ones), so a randomly initialised head does not push large gradients into the
  pretrained layers.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from tagretrieval.models.branches import ChunkPooling, MLPBranch
from tagretrieval.models.retrieval import TagRetrievalModel, _check_positive
from tagretrieval.pretrained import MUSICNN_FRONTEND, MusicnnFrontend, build_network, load_pretrained
from tagretrieval.pretrained.embedder import LAYERS as EMBEDDER_LAYERS, check_layer

__all__ = ["LAYERS", "MusicnnModel"]

LAYERS: dict[str, tuple[str, ...]] = {
    architecture: tuple(layer for layer in layers if layer != "taggram") for architecture, layers in EMBEDDER_LAYERS.items()
}
"""The backbone outputs a head may read, per architecture: those of ``song_features=musicnn`` but the taggram."""
AFTER_LAYER: dict[str, dict[str, tuple[str, ...]]] = {
    "musicnn": {"penultimate": ("output",), **dict.fromkeys(("pooled", "max_pool", "mean_pool"),
                                                            ("bn_pool", "dense", "bn_dense", "output"))},
    "vgg": {"pooled": ("output",)},
}
"""The backbone's submodules a layer of :data:`LAYERS` does not depend on (tests/test_musicnn_model.py checks them
against autograd)."""


class MusicnnModel(TagRetrievalModel, spec_target="tagretrieval.models.musicnn.MusicnnModel"):
    """Song embedding from a pretrained musicnn network, fine-tuned (module docstring).

    Args:
        pretrained: which network initialises the backbone: ``MTT_musicnn``, ``MSD_musicnn``, ``MTT_vgg`` or
            ``MSD_vgg`` (:data:`tagretrieval.pretrained.MODELS`).
        layer: the backbone output the head reads (:data:`LAYERS`; musicnn: ``penultimate``, its 200-unit dense
            layer, or ``pooled``, ``max_pool``, ``mean_pool``: the mid end's features over time; VGG: ``pooled``).
        chunk_frames: frames per chunk; musicnn was trained on 187 (3 s).
        n_eval_chunks: evenly spaced chunks per song in evaluation.
        pooling: how a song's chunk embeddings become one (:class:`~tagretrieval.models.branches.ChunkPooling`).
        backbone_lr_scale: the backbone's learning rate as a fraction of the run's (``optimizer.lr``); the head
            and the tag branch train at the full rate.
        frozen_epochs: epochs at the start of training in which the backbone does not change.
    """

    uses_audio: ClassVar[bool] = True
    uses_cf: ClassVar[bool] = False
    mel_store_name: ClassVar[str] = "mels-musicnn"

    def __init__(
        self,
        *,
        word_dim: int = 300,
        embedding_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.5,
        pretrained: str = "MTT_musicnn",
        layer: str = "penultimate",
        chunk_frames: int = MUSICNN_FRONTEND["patch_frames"],
        n_eval_chunks: int = 8,
        pooling: str = "mean",
        backbone_lr_scale: float = 0.1,
        frozen_epochs: int = 1,
    ) -> None:
        super().__init__(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim, dropout=dropout)
        architecture = check_layer(pretrained, layer, LAYERS)
        _check_positive(chunk_frames=chunk_frames, n_eval_chunks=n_eval_chunks)
        if not isinstance(frozen_epochs, int) or frozen_epochs < 0:
            raise ValueError(f"frozen_epochs must be an int >= 0, got {frozen_epochs!r}")
        if not 0.0 <= backbone_lr_scale <= 1.0:
            raise ValueError(f"backbone_lr_scale must be in [0, 1], got {backbone_lr_scale}")
        self.pretrained, self.layer = pretrained, layer
        self.backbone_lr_scale, self.frozen_epochs = float(backbone_lr_scale), int(frozen_epochs)
        self.chunk_frames, self.n_eval_chunks, self.n_mels = chunk_frames, n_eval_chunks, MUSICNN_FRONTEND["n_mels"]
        self.backbone = build_network(architecture)
        with torch.no_grad():  # the layer's size: one silent patch (eval mode: batch norm of a batch of 1)
            size = self.backbone.eval()(torch.zeros(1, self.n_mels, chunk_frames))[layer].shape[1]
        self.backbone.train()
        # the parts after the layer are not trained (DDP refuses parameters without a gradient); their shipped
        # values stay in the state dict as they are
        for name in AFTER_LAYER[architecture][layer]:
            getattr(self.backbone, name).requires_grad_(False)
        self.head = MLPBranch(in_dim=int(size), hidden_dim=hidden_dim, out_dim=embedding_dim, dropout=dropout)
        self.chunk_pooling = ChunkPooling(mode=pooling, dim=embedding_dim)
        self.backbone_frozen = False

    # -- what training asks of this model --------------------------------------------------------------
    @staticmethod
    def mel_frontend() -> MusicnnFrontend:
        """The front end of this model's input (musicnn's), whose mels the prepared folder keeps in ``mels-musicnn``."""
        return MusicnnFrontend()

    def load_pretrained_weights(self) -> None:
        """Copy the shipped weights of ``pretrained`` into the backbone (raises MusicnnMissingError, one line,
        when the musicnn wheel is not installed)."""
        self.backbone.load_state_dict(load_pretrained(self.pretrained).state_dict())

    def parameter_groups(self) -> list[dict]:
        """``[{"params": backbone, "lr_scale": backbone_lr_scale, "frozen_epochs": ...}, {"params": the rest}]``."""
        backbone = set(map(id, self.backbone.parameters()))
        trained = [p for p in self.backbone.parameters() if p.requires_grad]
        return [{"params": trained, "lr_scale": self.backbone_lr_scale,
                 "frozen_epochs": self.frozen_epochs},
                {"params": [p for p in self.parameters() if id(p) not in backbone]}]

    def freeze_backbone(self, frozen: bool) -> None:
        """While ``frozen``, the backbone's batch-norm layers keep their statistics (eval mode) in training."""
        self.backbone_frozen = bool(frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> MusicnnModel:
        super().train(mode)
        if mode and self.backbone_frozen:
            self.backbone.eval()
        return self

    # -- embedding ------------------------------------------------------------------------------------
    def _embed_chunk(self, mel: Tensor) -> Tensor:
        """``mel [N, 96, chunk_frames]`` (musicnn's log-mel) -> ``Tensor[N, embedding_dim]``."""
        return self.head(self.backbone(mel.float())[self.layer])

    def embed_song_chunks(self, mel_chunks: Tensor | None, cf: Tensor | None = None) -> Tensor:
        """``mel_chunks [B, C, 96, chunk_frames]`` -> pooled ``Tensor[B, embedding_dim]``; ``cf`` ignored."""
        self._check_inputs(mel_chunks, cf)
        assert mel_chunks is not None
        return self._pool_chunks(mel_chunks, self._embed_chunk)

