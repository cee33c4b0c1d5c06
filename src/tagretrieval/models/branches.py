"""Building blocks of the two-branch metric-learning networks (Won et al., ICASSP 2021).

Attribute names mirror the reference implementation (``spec_bn``, ``layer1.conv``, ``layer1.bn``, ...,
``fc1``, ``bn1``, ``fc2``) so that importing a reference checkpoint is a prefix rename
(see ``tagretrieval.models.reference``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBlock", "EmbeddingConv", "ShortChunkCNN", "MLPBranch", "GatedFusion", "ChunkPooling", "POOLINGS",
           "PAPER_CNN_CHANNELS"]

PAPER_CNN_CHANNELS: tuple[int, ...] = (128, 128, 256, 256, 256, 256, 512)
POOLINGS: tuple[str, ...] = ("mean", "attention", "transformer")
"""How :class:`ChunkPooling` turns the embeddings of a song's chunks into one."""


class ConvBlock(nn.Module):
    """3x3 conv (padding 1) -> BatchNorm2d -> ReLU -> MaxPool2d(2): ``[B, C_in, F, T] -> [B, C_out, F//2, T//2]``."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.mp(self.relu(self.bn(self.conv(x))))


class EmbeddingConv(nn.Module):
    """1x1 conv -> BatchNorm2d (optional) -> ReLU: ``[B, C_in, 1, T] -> [B, C_out, 1, T]``.

    ``batchnorm=False`` reproduces the later reference revision whose ``Conv_emb`` had no BatchNorm
    (its checkpoints have no ``layer8.bn.*`` keys).
    """

    def __init__(self, *, in_channels: int, out_channels: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class ShortChunkCNN(nn.Module):
    """Short-chunk CNN (Won et al. 2020): ``mel [B, n_mels, T] -> [B, out_dim]``.

    ``spec_bn`` (BatchNorm2d over the single input channel), then ``layer1..layerL`` (``ConvBlock``,
    L = ``len(channels)``), then ``layer{L+1}`` (``EmbeddingConv`` to ``out_dim``), then the frequency
    axis (pooled to exactly 1) is squeezed and the time axis max-pooled, so any ``T >= 2**L`` works.

    Args:
        n_mels: mel bands of the input; must pool to exactly 1 after L halvings
            (``2**L <= n_mels < 2**(L+1)``; 128 bands need 7 layers).
        channels: output channels of ``layer1..layerL`` (paper: 128,128,256,256,256,256,512).
        out_dim: channels of the final 1x1 conv (the CNN's output size).
        output_batchnorm: BatchNorm2d after the final 1x1 conv.
    """

    def __init__(self, *, n_mels: int, channels: Sequence[int], out_dim: int, output_batchnorm: bool = True) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 1 or any(c < 1 for c in channels):
            raise ValueError(f"cnn_channels must be a non-empty list of positive ints, got {list(channels)}")
        if out_dim < 1:
            raise ValueError(f"CNN out_dim must be positive, got {out_dim}")
        n_layers = len(channels)
        pooled_mels = n_mels >> n_layers
        if pooled_mels != 1:
            lowest, highest = 2**n_layers, 2 ** (n_layers + 1) - 1
            raise ValueError(
                f"cnn_channels has {n_layers} entries, so the {n_mels} mel bands pool to {pooled_mels} "
                f"after {n_layers} halvings; the frequency axis must reach exactly 1. Use n_mels in "
                f"[{lowest}, {highest}] or {max(n_mels.bit_length() - 1, 1)} conv layers"
            )
        self.n_mels = n_mels
        self.channels = channels
        self.out_dim = out_dim
        self.spec_bn = nn.BatchNorm2d(1)
        in_channels = 1
        for index, out_channels in enumerate(channels, start=1):
            self.add_module(f"layer{index}", ConvBlock(in_channels=in_channels, out_channels=out_channels))
            in_channels = out_channels
        self.add_module(
            f"layer{n_layers + 1}",
            EmbeddingConv(in_channels=in_channels, out_channels=out_dim, batchnorm=output_batchnorm),
        )
        self._layer_names = [f"layer{index}" for index in range(1, n_layers + 2)]

    @property
    def min_frames(self) -> int:
        """Shortest input (frames) that survives the time pooling."""
        return 2 ** len(self.channels)

    def forward(self, mel: Tensor) -> Tensor:
        """``mel [B, n_mels, T]`` (T >= ``min_frames``) -> ``Tensor[B, out_dim]``."""
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"ShortChunkCNN expects mel [batch, {self.n_mels}, n_frames], got {list(mel.shape)}")
        if mel.shape[2] < self.min_frames:
            raise ValueError(
                f"ShortChunkCNN needs at least {self.min_frames} frames for {len(self.channels)} poolings, "
                f"got {mel.shape[2]}"
            )
        out = self.spec_bn(mel.unsqueeze(1))
        for name in self._layer_names:
            out = getattr(self, name)(out)
        return out.squeeze(2).amax(dim=-1)


class MLPBranch(nn.Module):
    """``fc1`` -> ``bn1`` (BatchNorm1d) -> ReLU -> Dropout -> ``fc2``: ``[B, in_dim] -> [B, out_dim]``.

    The reference's tag branch (300->512->256), CF branch (200->512->256) and concat head (400->512->256).
    """

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"MLPBranch sizes must be positive, got {in_dim}->{hidden_dim}->{out_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_dim]`` -> ``Tensor[B, out_dim]``."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected input [batch, {self.in_dim}], got {list(x.shape)}")
        return self.fc2(self.dropout(self.relu(self.bn1(self.fc1(x)))))


class GatedFusion(nn.Module):
    """Per-dimension convex gate between an audio and a CF embedding, with modality dropout.

    Both inputs are L2-normalised first (so neither modality wins by scale), then
    ``g = sigmoid(gate([a; c]))`` in ``(0, 1)^D`` and ``fused = g * a + (1 - g) * c``. The weights
    ``(g, 1 - g)`` sum to 1 in every dimension, so different subspaces of the shared space can draw on
    different modalities: audible tags (instrument, tempo, mood) can align with dimensions fed by
    audio, inaudible ones (location, era) with dimensions fed by listening data.

    Modality dropout (training only): each sample, with probability ``modality_dropout``, loses one
    modality (audio or CF, 50/50); its weight becomes 0 and the other's 1, so ``fused`` is that single
    normalised embedding. Each branch must therefore place songs correctly on its own, which keeps
    the gate from collapsing onto the stronger modality and makes single-modality embeddings live in
    the same space as fused ones.
    """

    def __init__(self, *, embedding_dim: int, modality_dropout: float) -> None:
        super().__init__()
        if not 0.0 <= modality_dropout <= 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1], got {modality_dropout}")
        self.modality_dropout = modality_dropout
        self.gate = nn.Linear(2 * embedding_dim, embedding_dim)

    def _audio_gate(self, audio: Tensor, cf: Tensor) -> Tensor:
        """Normalised ``audio [B, D]``, ``cf [B, D]`` -> audio weight ``g`` ``Tensor[B, D]`` in (0, 1)."""
        return torch.sigmoid(self.gate(torch.cat([audio, cf], dim=-1)))

    def weights(self, audio: Tensor, cf: Tensor) -> Tensor:
        """Gate weights without modality dropout: ``Tensor[B, 2, D]``, ``[:, 0]`` audio, ``[:, 1]`` CF; sum 1."""
        gate = self._audio_gate(F.normalize(audio, dim=-1), F.normalize(cf, dim=-1))
        return torch.stack([gate, 1.0 - gate], dim=1)

    def forward(self, audio: Tensor, cf: Tensor) -> Tensor:
        """``audio [B, D]``, ``cf [B, D]`` -> fused ``Tensor[B, D]`` (not unit-norm)."""
        if audio.dim() != 2 or audio.shape != cf.shape:
            raise ValueError(f"audio {list(audio.shape)} and cf {list(cf.shape)} must both be [batch, dim]")
        audio, cf = F.normalize(audio, dim=-1), F.normalize(cf, dim=-1)
        gate = self._audio_gate(audio, cf)
        if self.training and self.modality_dropout > 0.0:
            batch = audio.shape[0]
            dropped = torch.rand(batch, device=audio.device) < self.modality_dropout
            audio_only = dropped & (torch.rand(batch, device=audio.device) < 0.5)
            cf_only = dropped & ~audio_only
            gate = torch.where(audio_only[:, None], 1.0, torch.where(cf_only[:, None], 0.0, gate))
        return gate * audio + (1.0 - gate) * cf


class ChunkPooling(nn.Module):
    """One embedding per song from the embeddings of its chunks: ``[B, C, D] -> [B, D]``, for any ``C >= 1``.

    - ``mean``: the average (the reference's evaluation; no parameters).
    - ``attention``: a weighted average, ``w = softmax_c(v . tanh(W x_c))`` (Ilse et al. 2018's attention pooling):
      chunks that carry the evidence (a solo, the brass entry) can outweigh the others.
    - ``transformer``: one pre-norm self-attention block over the chunks (they exchange context: a chunk's
      embedding can depend on what the song does elsewhere), then the mean. No position encoding: training and
      evaluation place their chunks differently (a few stratified crops vs ``n_eval_chunks`` evenly spaced), so the
      block sees a set of chunks, not a sequence.

    The learnt variants start as the mean: the attention scores start at 0 (uniform weights) and the block's
    output projections at 0 (identity), so switching them on never starts from a worse model.
    """

    def __init__(self, *, mode: str, dim: int, hidden_dim: int = 128, n_heads: int = 4) -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        if dim < 1 or hidden_dim < 1:
            raise ValueError(f"pooling sizes must be positive, got dim={dim}, hidden_dim={hidden_dim}")
        self.mode = mode
        if mode == "attention":
            self.score = nn.Sequential(nn.Linear(dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))
            nn.init.zeros_(self.score[2].weight)
            nn.init.zeros_(self.score[2].bias)
        elif mode == "transformer":
            heads = n_heads if dim % n_heads == 0 else 1
            self.block = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=2 * dim, dropout=0.0,
                                                    batch_first=True, norm_first=True)
            for projection in (self.block.self_attn.out_proj, self.block.linear2):
                nn.init.zeros_(projection.weight)
                nn.init.zeros_(projection.bias)

    def forward(self, chunks: Tensor) -> Tensor:
        """``chunks [B, C, D]`` -> ``Tensor[B, D]``."""
        if chunks.dim() != 3:
            raise ValueError(f"chunk embeddings must be [batch, n_chunks, dim], got {list(chunks.shape)}")
        if self.mode == "attention":
            weights = torch.softmax(self.score(chunks).float(), dim=1).to(chunks.dtype)  # [B, C, 1]
            return (weights * chunks).sum(dim=1)
        if self.mode == "transformer":
            chunks = self.block(chunks)
        return chunks.mean(dim=1)
