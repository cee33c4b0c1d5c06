"""Audio and song features in one song embedding (``model=fused``): the short-chunk CNN and a feature-vector MLP,
fused by the gated fusion of ``model=hybrid``.

The features are any fixed-size vector per song: the hand-crafted librosa statistics of ``song_features=handcrafted``
(computed from the audio of any dataset, :mod:`tagretrieval.data.song_features`) or a dataset's own (FMA's 518). They
carry what one 4-s crop through a small CNN misses: statistics over the whole clip (tempo, beat regularity, chroma
over every bar), while the CNN carries the timbre and texture that the summaries blur.

Song branch, whose two parts are the song branches of ``model=acoustic`` and ``model=features``:

1. audio: ``cnn`` -> ``embedding_dim`` per chunk, pooled over a song's chunks by ``chunk_pooling`` (``mean`` by
   default; :class:`~tagretrieval.models.AcousticModel`'s branch);
2. features: ``input_norm`` (``BatchNorm1d`` without affine parameters: standardisation by running statistics, see
   :mod:`tagretrieval.models.features`) -> ``feature_branch`` MLP -> ``embedding_dim``
   (:class:`~tagretrieval.models.features.FeaturesModel`'s branch);
3. ``fusion`` (:class:`~tagretrieval.models.branches.GatedFusion`): both L2-normalised, a per-dimension gate,
   and modality dropout in training (each sample loses one of the two with probability ``modality_dropout``),
   so that each branch places songs on its own and the gate cannot collapse onto the one that learns faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from tagretrieval.models.branches import PAPER_CNN_CHANNELS, ChunkPooling, GatedFusion
from tagretrieval.models.retrieval import TagRetrievalModel

__all__ = ["FusedModel"]


class FusedModel(TagRetrievalModel, spec_target="tagretrieval.models.fused.FusedModel"):
    """Song embedding from log-mel chunks and a feature vector, gated (module docstring).

    Args:
        n_features: size of the feature vectors (from the data: ``dataset.features``).
        standardize: standardise each feature with running batch statistics (``BatchNorm1d``, no affine).
        modality_dropout: probability, per training sample, that one modality (audio or features, 50/50) is
            dropped and the other used alone.
        initial_audio_weight: the gate's audio weight at initialisation, in (0, 1) (its bias is set to the logit):
            below 0.5 the features, which a small MLP learns in a few epochs, carry the fused embedding while the CNN
            is still learning; the gate then moves each dimension to whichever modality serves it.
        pooling: how a song's CNN chunk embeddings become one, as in ``model=acoustic``: ``mean``, ``attention`` or
            ``transformer`` (:class:`~tagretrieval.models.branches.ChunkPooling`).
    """

    uses_audio: ClassVar[bool] = True
    uses_cf: ClassVar[bool] = False
    uses_features: ClassVar[bool] = True

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
        n_features: int = 223,
        standardize: bool = True,
        modality_dropout: float = 0.25,
        initial_audio_weight: float = 0.5,
        pooling: str = "mean",
    ) -> None:
        super().__init__(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim, dropout=dropout)
        self._init_audio(n_mels=n_mels, chunk_frames=chunk_frames, n_eval_chunks=n_eval_chunks,
                         cnn_channels=cnn_channels, cnn_out_dim=embedding_dim)
        self.chunk_pooling = ChunkPooling(mode=pooling, dim=embedding_dim)
        self._init_features(n_features=n_features, standardize=standardize, hidden_dim=hidden_dim, dropout=dropout)
        if not 0.0 < initial_audio_weight < 1.0:
            raise ValueError(f"initial_audio_weight must be in (0, 1), got {initial_audio_weight}")
        self.fusion = GatedFusion(embedding_dim=embedding_dim, modality_dropout=modality_dropout)
        nn.init.constant_(self.fusion.gate.bias, math.log(initial_audio_weight / (1.0 - initial_audio_weight)))

    def _branch_embeddings(self, mel_chunks: Tensor | None, features: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(audio [B, D], features [B, D])``, both un-normalised."""
        self._check_inputs(mel_chunks, None)
        song_features = self._embed_features(features)
        assert mel_chunks is not None
        if song_features.shape[0] != mel_chunks.shape[0]:
            raise ValueError(f"mel batch {mel_chunks.shape[0]} != features batch {song_features.shape[0]}")
        return self._pool_chunks(mel_chunks, self.cnn), song_features

    def embed_songs(self, mel: Tensor | None = None, cf: Tensor | None = None,
                    features: Tensor | None = None) -> Tensor:
        """``mel [B, n_mels, T]`` (one training crop, or a whole song cut into evaluation chunks) and
        ``features [B, n_features]`` -> fused ``Tensor[B, embedding_dim]``; ``cf`` ignored."""
        return self.embed_song_chunks(self._song_chunks(mel), features=features)

    def embed_song_chunks(self, mel_chunks: Tensor | None, cf: Tensor | None = None,
                          features: Tensor | None = None) -> Tensor:
        """``mel_chunks [B, C, n_mels, chunk_frames]``, ``features [B, n_features]`` -> fused ``Tensor[B, D]``."""
        return self.fusion(*self._branch_embeddings(mel_chunks, features))

    def forward(self, *, word_vectors: Tensor, mel: Tensor | None = None, cf: Tensor | None = None,
                features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(embed_tags(word_vectors), embed_songs(mel, features=features))``, both ``Tensor[B, embedding_dim]``."""
        return self.embed_tags(word_vectors), self.embed_songs(mel=mel, features=features)

    def fusion_weights(self, mel: Tensor, features: Tensor) -> Tensor:
        """Gate weights of whole songs (no modality dropout): ``Tensor[B, 2, D]``, audio then features, sum 1."""
        return self.fusion.weights(*self._branch_embeddings(self._song_chunks(mel), features))
