"""A song branch for precomputed feature vectors (``model=features``): features -> standardisation -> MLP.

For songs given as fixed-size vectors: FMA's 518 librosa statistics (``data=fma data.input=features``),
mini-MusicNet's log-magnitude spectra of 93 ms clips (``data=minimusicnet``), or the hand-crafted librosa features
that ``song_features=handcrafted`` computes from the audio of any dataset (:mod:`tagretrieval.data.song_features`).
``n_features`` comes from the data (``dataset.features``), as ``cf_dim`` does. :mod:`tagretrieval.models.fused`
fuses this branch with the CNN.

Standardisation is a ``BatchNorm1d`` without affine parameters at the input, not statistics computed
from the training split and stored in the model: feature scales differ by orders of magnitude (FMA's
kurtosis statistics reach the hundreds, its chroma means stay in [0, 1]), the running mean and variance
converge to the training statistics on their own, they are saved in the state dict (so a checkpoint
reloads without the data), and no extra plumbing has to hand data statistics to the constructor. The cost
is batch statistics during training (noisy for tiny batches; fine at the usual 128).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from tagretrieval.models.retrieval import TagRetrievalModel

__all__ = ["FeaturesModel"]


class FeaturesModel(TagRetrievalModel, spec_target="tagretrieval.models.features.FeaturesModel"):
    """Song embedding from a precomputed feature vector: ``features [B, n_features]`` -> ``[B, embedding_dim]``.

    ``input_norm`` (``BatchNorm1d(n_features, affine=False)``, or identity when ``standardize=False``) then
    ``feature_branch`` (``MLPBranch``: ``n_features -> hidden_dim -> embedding_dim``). Songs have no chunks:
    training and evaluation embed the same vector, and ``mel``/``cf`` are ignored.

    Args:
        n_features: size of the feature vectors (from the prepared dataset's ``features.npy``).
        standardize: standardise each feature with running batch statistics (module docstring).
    """

    uses_audio: ClassVar[bool] = False
    uses_cf: ClassVar[bool] = False
    uses_features: ClassVar[bool] = True

    def __init__(
        self,
        *,
        word_dim: int = 300,
        embedding_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.5,
        n_features: int = 518,
        standardize: bool = True,
    ) -> None:
        super().__init__(word_dim=word_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim, dropout=dropout)
        self._init_features(n_features=n_features, standardize=standardize, hidden_dim=hidden_dim, dropout=dropout)

    def embed_songs(self, mel: Tensor | None = None, cf: Tensor | None = None,
                    features: Tensor | None = None) -> Tensor:
        """``features [B, n_features]`` -> song embeddings ``Tensor[B, embedding_dim]`` (un-normalised)."""
        return self._embed_features(features)

    def embed_song_chunks(self, mel_chunks: Tensor | None = None, cf: Tensor | None = None,
                          features: Tensor | None = None) -> Tensor:
        """Evaluation entry point: same as :meth:`embed_songs` (a feature vector has no chunks)."""
        return self._embed_features(features)

    def forward(self, *, word_vectors: Tensor, mel: Tensor | None = None, cf: Tensor | None = None,
                features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(embed_tags(word_vectors), embed_songs(features=features))``, both ``Tensor[B, embedding_dim]``."""
        return self.embed_tags(word_vectors), self.embed_songs(features=features)
