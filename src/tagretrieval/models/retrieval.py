"""Tag/song embedding networks: the paper's three variants plus our gated hybrid.

All models share the tag branch (word vector -> MLP -> ``embedding_dim``) and differ in the song
branch. Songs and tags are compared by cosine similarity, so embeddings are returned un-normalised.

==============  ==============================================  =========================
class           song branch                                     reference (Won et al.)
==============  ==============================================  =========================
AcousticModel   short-chunk CNN -> ``embedding_dim``            ``AudioModel``
CulturalModel   CF vector -> MLP                                ``CFModel``
ConcatModel     [CNN (200) ; raw CF (200)] -> MLP               ``HybridModel`` ("Concat")
HybridModel     CNN -> MLP and CF -> MLP, gated fusion          ours (project default)
==============  ==============================================  =========================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagretrieval.models.branches import PAPER_CNN_CHANNELS, ChunkPooling, GatedFusion, MLPBranch, ShortChunkCNN
from tagretrieval.models.spec import SpecMixin

__all__ = [
    "TagRetrievalModel",
    "AcousticModel",
    "CulturalModel",
    "ConcatModel",
    "HybridModel",
    "cut_eval_chunks",
]


def cut_eval_chunks(mel: Tensor, *, chunk_frames: int, n_chunks: int) -> Tensor:
    """Cut a song into evaluation chunks as the reference loader does.

    ``T == chunk_frames``: one chunk. ``T < chunk_frames``: zero-padded on the right to one chunk.
    ``T > chunk_frames``: ``n_chunks`` chunks starting at ``i * hop``, ``hop = (T - chunk_frames) // n_chunks``
    (when ``hop == 0`` all of them would be the first chunk, so one chunk is returned: same mean).

    Args:
        mel: ``Tensor[batch, n_mels, n_frames]``.
    Returns:
        ``Tensor[batch, n_out_chunks, n_mels, chunk_frames]``, ``n_out_chunks`` in ``{1, n_chunks}``.
    """
    if mel.dim() != 3:
        raise ValueError(f"mel must be [batch, n_mels, n_frames], got {list(mel.shape)}")
    n_frames = mel.shape[-1]
    if n_frames <= chunk_frames:
        return F.pad(mel, (0, chunk_frames - n_frames)).unsqueeze(1)
    hop = (n_frames - chunk_frames) // n_chunks
    if hop == 0:
        return mel[:, None, :, :chunk_frames]
    return torch.stack([mel[:, :, i * hop : i * hop + chunk_frames] for i in range(n_chunks)], dim=1)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class TagRetrievalModel(SpecMixin, nn.Module):
    """Base class: a tag branch plus a variant-specific song branch, both into ``embedding_dim``.

    Subclasses set ``uses_audio``/``uses_cf`` and implement ``embed_song_chunks``. Audio variants
    also set ``self.chunk_frames``, ``self.n_eval_chunks`` and ``self.n_mels``.
    """

    uses_audio: ClassVar[bool]
    uses_cf: ClassVar[bool]
    uses_features: ClassVar[bool] = False   # precomputed song features (models/features.py)
    chunk_frames: int
    n_eval_chunks: int
    n_mels: int
    cf_dim: int

    def __init__(self, *, word_dim: int, embedding_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        _check_positive(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim)
        self.word_dim = word_dim
        self.embedding_dim = embedding_dim
        self.tag_branch = MLPBranch(in_dim=word_dim, hidden_dim=hidden_dim, out_dim=embedding_dim, dropout=dropout)

    def _init_audio(self, *, n_mels: int, chunk_frames: int, n_eval_chunks: int, cnn_channels: Sequence[int],
                    cnn_out_dim: int, cnn_output_batchnorm: bool = True) -> None:
        """The audio part every audio variant shares: ``self.cnn`` (:class:`ShortChunkCNN`, ``n_mels`` bands ->
        ``cnn_out_dim``) and the chunk settings, refusing a chunk shorter than the frames the CNN pools away."""
        self.cnn = ShortChunkCNN(n_mels=n_mels, channels=cnn_channels, out_dim=cnn_out_dim,
                                 output_batchnorm=cnn_output_batchnorm)
        _check_positive(chunk_frames=chunk_frames, n_eval_chunks=n_eval_chunks, n_mels=n_mels)
        if chunk_frames < self.cnn.min_frames:
            raise ValueError(
                f"chunk_frames={chunk_frames} is shorter than the {self.cnn.min_frames} frames the "
                f"{len(self.cnn.channels)}-layer CNN pools away"
            )
        self.chunk_frames, self.n_eval_chunks, self.n_mels = chunk_frames, n_eval_chunks, n_mels

    def _init_features(self, *, n_features: int, standardize: bool, hidden_dim: int, dropout: float) -> None:
        """The feature-vector part of ``model=features`` and ``model=fused``: ``input_norm`` (``BatchNorm1d``
        without affine parameters, or identity; :mod:`tagretrieval.models.features`) then ``feature_branch``
        (``n_features -> hidden_dim -> embedding_dim``)."""
        _check_positive(n_features=n_features)
        self.n_features = n_features
        self.input_norm = nn.BatchNorm1d(n_features, affine=False) if standardize else nn.Identity()
        self.feature_branch = MLPBranch(in_dim=n_features, hidden_dim=hidden_dim, out_dim=self.embedding_dim,
                                        dropout=dropout)

    def embed_tags(self, word_vectors: Tensor) -> Tensor:
        """``word_vectors [B, word_dim]`` -> tag embeddings ``Tensor[B, embedding_dim]`` (un-normalised)."""
        if word_vectors.dim() != 2 or word_vectors.shape[1] != self.word_dim:
            raise ValueError(f"word_vectors must be [batch, {self.word_dim}], got {list(word_vectors.shape)}")
        return self.tag_branch(word_vectors)

    def embed_songs(self, mel: Tensor | None = None, cf: Tensor | None = None) -> Tensor:
        """Song embeddings ``Tensor[B, embedding_dim]`` (un-normalised) from whole songs.

        Args:
            mel: ``Tensor[B, n_mels, T]`` log-mel; ``T == chunk_frames`` is one chunk, longer songs are
                cut into ``n_eval_chunks`` evenly spaced chunks (``cut_eval_chunks``) and averaged,
                shorter ones zero-padded. Ignored by models that do not use audio.
            cf: ``Tensor[B, cf_dim]`` collaborative-filtering item factors. Ignored by models that do not
                use listening data.
        Raises:
            ValueError: an input the model needs is missing or mis-shaped.
        """
        return self.embed_song_chunks(self._song_chunks(mel) if self.uses_audio else None, cf)

    def embed_song_chunks(self, mel_chunks: Tensor | None, cf: Tensor | None = None) -> Tensor:
        """``mel_chunks [B, n_chunks, n_mels, chunk_frames]``, ``cf [B, cf_dim]`` -> ``Tensor[B, embedding_dim]``."""
        raise NotImplementedError

    def forward(self, *, word_vectors: Tensor, mel: Tensor | None = None, cf: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(embed_tags(word_vectors), embed_songs(mel, cf))``, both ``Tensor[B, embedding_dim]``."""
        return self.embed_tags(word_vectors), self.embed_songs(mel=mel, cf=cf)

    # -- helpers for subclasses -------------------------------------------------------------------
    def _require(self, **inputs: Tensor | None) -> None:
        missing = [name for name, value in inputs.items() if value is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {' and '.join(missing)} to embed songs, got None")

    def _song_chunks(self, mel: Tensor | None) -> Tensor:
        """Whole songs ``mel [B, n_mels, T]`` -> evaluation chunks ``Tensor[B, C, n_mels, chunk_frames]``
        (:func:`cut_eval_chunks`), refusing a missing or mis-shaped input."""
        self._require(mel=mel)
        assert mel is not None
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"mel must be [batch, {self.n_mels}, n_frames], got {list(mel.shape)}")
        return cut_eval_chunks(mel, chunk_frames=self.chunk_frames, n_chunks=self.n_eval_chunks)

    def _embed_features(self, features: Tensor | None) -> Tensor:
        """``features [B, n_features]`` -> ``feature_branch(input_norm(features))``, ``Tensor[B, embedding_dim]``."""
        self._require(features=features)
        assert features is not None
        if features.dim() != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"features must be [batch, {self.n_features}], got {list(features.shape)}")
        return self.feature_branch(self.input_norm(features.float()))

    def _check_inputs(self, mel_chunks: Tensor | None, cf: Tensor | None) -> None:
        """Validate what this variant needs: shapes and a common batch size."""
        needed = {}
        if self.uses_audio:
            needed["mel_chunks"] = mel_chunks
        if self.uses_cf:
            needed["cf"] = cf
        self._require(**needed)
        if self.uses_audio:
            assert mel_chunks is not None
            expected = [self.n_mels, self.chunk_frames]
            if mel_chunks.dim() != 4 or list(mel_chunks.shape[2:]) != expected or mel_chunks.shape[1] < 1:
                raise ValueError(
                    f"mel_chunks must be [batch, n_chunks, {self.n_mels}, {self.chunk_frames}], "
                    f"got {list(mel_chunks.shape)}"
                )
        if self.uses_cf:
            assert cf is not None
            if cf.dim() != 2 or cf.shape[1] != self.cf_dim:
                raise ValueError(f"cf must be [batch, {self.cf_dim}], got {list(cf.shape)}")
        if self.uses_audio and self.uses_cf and mel_chunks.shape[0] != cf.shape[0]:  # type: ignore[union-attr]
            raise ValueError(f"mel batch {mel_chunks.shape[0]} != cf batch {cf.shape[0]}")  # type: ignore[union-attr]

    def _pool_chunks(self, mel_chunks: Tensor, embed: Callable[[Tensor], Tensor]) -> Tensor:
        """Run ``embed`` on all chunks as one batch and pool them with ``self.chunk_pooling``
        (:class:`~tagretrieval.models.branches.ChunkPooling`): ``[B, C, F, T] -> [B, C, D] -> [B, D]``. Training
        (several chunks per song, ``train_chunks``) and evaluation (``n_eval_chunks``) pool the same way."""
        batch, n_chunks, n_mels, n_frames = mel_chunks.shape
        out = embed(mel_chunks.reshape(batch * n_chunks, n_mels, n_frames))
        return self.chunk_pooling(out.reshape(batch, n_chunks, -1))


class AcousticModel(TagRetrievalModel, spec_target="tagretrieval.models.AcousticModel"):
    """Audio-only model (reference ``AudioModel``): the CNN output (``embedding_dim``) is the song embedding.

    Evaluation averages the chunk embeddings, as the reference does (``pooling="mean"``).

    Args:
        cnn_output_batchnorm: BatchNorm after the final 1x1 conv (``layer8.bn``); the earlier reference
            revision has it, the later one does not.
        pooling: how a song's chunk embeddings become one, in training (``train_chunks`` > 1) and evaluation:
            ``mean``, ``attention`` or ``transformer`` (:class:`~tagretrieval.models.branches.ChunkPooling`).
    """

    uses_audio = True
    uses_cf = False

    def __init__(
        self,
        *,
        word_dim: int = 300,
        embedding_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.5,
        chunk_frames: int = 173,
        n_eval_chunks: int = 8,
        n_mels: int = 128,
        cnn_channels: Sequence[int] = PAPER_CNN_CHANNELS,
        cnn_output_batchnorm: bool = True,
        pooling: str = "mean",
    ) -> None:
        super().__init__(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim, dropout=dropout)
        self._init_audio(n_mels=n_mels, chunk_frames=chunk_frames, n_eval_chunks=n_eval_chunks,
                         cnn_channels=cnn_channels, cnn_out_dim=embedding_dim, cnn_output_batchnorm=cnn_output_batchnorm)
        self.chunk_pooling = ChunkPooling(mode=pooling, dim=embedding_dim)

    def embed_song_chunks(self, mel_chunks: Tensor | None, cf: Tensor | None = None) -> Tensor:
        """``mel_chunks [B, C, n_mels, chunk_frames]`` -> pooled CNN embedding ``Tensor[B, embedding_dim]``; ``cf``
        ignored."""
        self._check_inputs(mel_chunks, cf)
        assert mel_chunks is not None
        return self._pool_chunks(mel_chunks, self.cnn)


class CulturalModel(TagRetrievalModel, spec_target="tagretrieval.models.CulturalModel"):
    """Listening-data-only model (reference ``CFModel``): CF vector -> MLP (``cf_branch``)."""

    uses_audio = False
    uses_cf = True

    def __init__(
        self,
        *,
        word_dim: int = 300,
        embedding_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.5,
        cf_dim: int = 200,
    ) -> None:
        super().__init__(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim, dropout=dropout)
        _check_positive(cf_dim=cf_dim)
        self.cf_dim = cf_dim
        self.cf_branch = MLPBranch(in_dim=cf_dim, hidden_dim=hidden_dim, out_dim=embedding_dim, dropout=dropout)

    def embed_song_chunks(self, mel_chunks: Tensor | None, cf: Tensor | None = None) -> Tensor:
        """``cf [B, cf_dim]`` -> ``Tensor[B, embedding_dim]``; ``mel_chunks`` ignored."""
        self._check_inputs(mel_chunks, cf)
        assert cf is not None
        return self.cf_branch(cf)


class ConcatModel(TagRetrievalModel, spec_target="tagretrieval.models.ConcatModel"):
    """The reference's hybrid ("Concat"): ``[CNN(mel) (cnn_out_dim) ; raw cf (cf_dim)] -> MLP (cat_branch)``.

    As in the reference evaluation, the CNN outputs (not the final embeddings) are averaged over the
    chunks (``pooling="mean"``; or ``attention``, ``transformer``) before concatenation with the song's CF vector.
    """

    uses_audio = True
    uses_cf = True

    def __init__(
        self,
        *,
        word_dim: int = 300,
        embedding_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.5,
        chunk_frames: int = 173,
        n_eval_chunks: int = 8,
        n_mels: int = 128,
        cnn_channels: Sequence[int] = PAPER_CNN_CHANNELS,
        cnn_out_dim: int = 200,
        cnn_output_batchnorm: bool = True,
        cf_dim: int = 200,
        pooling: str = "mean",
    ) -> None:
        super().__init__(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim, dropout=dropout)
        _check_positive(cf_dim=cf_dim, cnn_out_dim=cnn_out_dim)
        self.cf_dim = cf_dim
        self._init_audio(n_mels=n_mels, chunk_frames=chunk_frames, n_eval_chunks=n_eval_chunks,
                         cnn_channels=cnn_channels, cnn_out_dim=cnn_out_dim, cnn_output_batchnorm=cnn_output_batchnorm)
        self.cat_branch = MLPBranch(
            in_dim=cnn_out_dim + cf_dim, hidden_dim=hidden_dim, out_dim=embedding_dim, dropout=dropout
        )
        self.chunk_pooling = ChunkPooling(mode=pooling, dim=cnn_out_dim)

    def embed_song_chunks(self, mel_chunks: Tensor | None, cf: Tensor | None = None) -> Tensor:
        """``mel_chunks [B, C, n_mels, chunk_frames]``, ``cf [B, cf_dim]`` -> ``Tensor[B, embedding_dim]``."""
        self._check_inputs(mel_chunks, cf)
        assert mel_chunks is not None and cf is not None
        audio = self._pool_chunks(mel_chunks, self.cnn)
        return self.cat_branch(torch.cat([audio, cf], dim=-1))


class HybridModel(TagRetrievalModel, spec_target="tagretrieval.models.HybridModel"):
    """Ours (project default): both modalities embedded separately, then a learned gate fuses them.

    Why not Concat: concatenating a CNN output with a raw CF vector lets the MLP lean on whichever
    input is easier early in training and ignore the other, and in the paper it did not beat the
    single-modality models. Here:

    1. audio: ``cnn`` (``cnn_out_dim``) -> ``audio_head`` MLP -> ``embedding_dim``, per chunk, pooled over
       the chunks (``pooling``: the mean by default; the head sees single chunks, in training as in evaluation);
    2. listening data: ``cf_branch`` MLP (``cf_dim`` -> ``embedding_dim``);
    3. ``fusion`` (``GatedFusion``): both L2-normalised, ``fused = g * audio + (1 - g) * cf`` with a
       per-dimension gate ``g = sigmoid(W [audio; cf] + b)`` computed from both embeddings, so audible
       tags (instrument/tempo/mood) can rely on audio-fed dimensions and inaudible ones (location/era) on
       CF-fed dimensions of the same fused embedding;
    4. modality dropout (training only, probability ``modality_dropout`` per sample): one modality is
       dropped and the other used alone, so each branch is a usable embedding by itself.

    ``fusion_weights`` exposes the gate (``[B, 2, D]``, audio then CF, summing to 1) for analysis.
    """

    uses_audio = True
    uses_cf = True

    def __init__(
        self,
        *,
        word_dim: int = 300,
        embedding_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.5,
        chunk_frames: int = 173,
        n_eval_chunks: int = 8,
        n_mels: int = 128,
        cnn_channels: Sequence[int] = PAPER_CNN_CHANNELS,
        cnn_out_dim: int = 256,
        cf_dim: int = 200,
        modality_dropout: float = 0.25,
        pooling: str = "mean",
    ) -> None:
        super().__init__(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim, dropout=dropout)
        _check_positive(cf_dim=cf_dim, cnn_out_dim=cnn_out_dim)
        self.cf_dim = cf_dim
        self._init_audio(n_mels=n_mels, chunk_frames=chunk_frames, n_eval_chunks=n_eval_chunks,
                         cnn_channels=cnn_channels, cnn_out_dim=cnn_out_dim)
        self.audio_head = MLPBranch(in_dim=cnn_out_dim, hidden_dim=hidden_dim, out_dim=embedding_dim, dropout=dropout)
        self.cf_branch = MLPBranch(in_dim=cf_dim, hidden_dim=hidden_dim, out_dim=embedding_dim, dropout=dropout)
        self.fusion = GatedFusion(embedding_dim=embedding_dim, modality_dropout=modality_dropout)
        self.chunk_pooling = ChunkPooling(mode=pooling, dim=embedding_dim)

    def _branch_embeddings(self, mel_chunks: Tensor | None, cf: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check_inputs(mel_chunks, cf)
        assert mel_chunks is not None and cf is not None
        audio = self._pool_chunks(mel_chunks, lambda x: self.audio_head(self.cnn(x)))
        return audio, self.cf_branch(cf)

    def embed_song_chunks(self, mel_chunks: Tensor | None, cf: Tensor | None = None) -> Tensor:
        """``mel_chunks [B, C, n_mels, chunk_frames]``, ``cf [B, cf_dim]`` -> fused ``Tensor[B, embedding_dim]``."""
        return self.fusion(*self._branch_embeddings(mel_chunks, cf))

    def fusion_weights(self, mel: Tensor, cf: Tensor) -> Tensor:
        """Gate weights for whole songs (no modality dropout): ``Tensor[B, 2, embedding_dim]``, sum 1 over axis 1."""
        return self.fusion.weights(*self._branch_embeddings(self._song_chunks(mel), cf))
