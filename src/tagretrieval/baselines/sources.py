"""Where a baseline's song vectors come from (config group ``baseline/source``).

Every source has ``matrix(dataset, *, frontend, progress) -> FeatureMatrix``: one row per track of the
prepared dataset, with the tracks that have no vector marked invalid (and the reason).

=====================  ====================================================================  ===============
class                  vectors                                                               config
=====================  ====================================================================  ===============
HandcraftedSource      librosa descriptors of the audio, cached in the prepared folder       ``handcrafted``
CFSource               the dataset's collaborative-filtering vectors (``cf.npy``)            ``cf``
PreparedFeaturesSource the dataset's precomputed features (``features.npy``, e.g. FMA's 518)  ``features``
CheckpointSource       a trained model's song embeddings (L2-normalised, as retrieval sees)  ``checkpoint``
MusicnnSource          a pretrained musicnn network's frozen embeddings, cached (prepared)   ``musicnn``
=====================  ====================================================================  ===============
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagretrieval.audio import MelFrontend
from tagretrieval.data.feature_cache import FeatureMatrix, handcrafted_features
from tagretrieval.audio.handcrafted import HandcraftedExtractor
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.pretrained_features import cache_path, pretrained_features
from tagretrieval.pretrained.embedder import MusicnnEmbedder, check_layer, pretrained_model


def _all_valid(values: np.ndarray, prefix: str, description: str) -> FeatureMatrix:
    values = np.asarray(values, dtype=np.float32)
    return FeatureMatrix(values=values, names=[f"{prefix}{j:03d}" for j in range(values.shape[1])],
                         valid=np.ones(len(values), dtype=bool), description=description)


class HandcraftedSource:
    """Hand-crafted librosa features (:mod:`tagretrieval.audio.handcrafted`) of the tracks' audio files.

    Args:
        level: ``"song"``, ``"beat"`` or ``"both"``.
        sample_rate, n_fft, hop_length, n_mels: the analysis (``conf: audio``; the values, not the mel cache,
            are used: the features are computed from the audio files).
        n_mfcc: MFCCs kept.
        cache_file: file name of the cache inside the prepared folder.
        num_workers: worker processes (0: in this process).
        save_every: rewrite the cache after this many new tracks (resumable).
    """

    def __init__(self, *, level: str, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, n_mfcc: int,
                 cache_file: str, num_workers: int, save_every: int) -> None:
        self.extractor = HandcraftedExtractor(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                              n_mels=n_mels, n_mfcc=n_mfcc)
        self.level, self.cache_file = level, cache_file
        self.num_workers, self.save_every = num_workers, save_every

    def matrix(self, dataset: PreparedDataset, *, frontend: MelFrontend | None = None,
               progress: bool = False) -> FeatureMatrix:
        return handcrafted_features(dataset, self.extractor, level=self.level,
                                    cache_path=dataset.root / self.cache_file, num_workers=self.num_workers,
                                    save_every=self.save_every, progress=progress)


class CFSource:
    """The dataset's collaborative-filtering item vectors ``cf.npy`` ``[n_tracks, cf_dim]``."""

    def matrix(self, dataset: PreparedDataset, *, frontend: MelFrontend | None = None,
               progress: bool = False) -> FeatureMatrix:
        if dataset.cf is None:
            raise ValueError(f"dataset '{dataset.name}' ({dataset.root}) has no CF vectors (cf.npy)")
        return _all_valid(dataset.cf, "cf", f"CF vectors of '{dataset.name}'")


class PreparedFeaturesSource:
    """The dataset's precomputed song features ``features.npy`` ``[n_tracks, n_features]``."""

    def matrix(self, dataset: PreparedDataset, *, frontend: MelFrontend | None = None,
               progress: bool = False) -> FeatureMatrix:
        if dataset.features is None:
            raise ValueError(f"dataset '{dataset.name}' ({dataset.root}) has no precomputed features (features.npy)")
        return _all_valid(dataset.features, "feature", f"features of '{dataset.name}'")


class CheckpointSource:
    """Song embeddings ``[n_tracks, D]`` of a trained model (ours or a reference checkpoint), L2-normalised.

    Args:
        ckpt_path: the checkpoint (``conf: ckpt_path``).
        trusted: allow pickled objects in it (``conf: checkpoint_trusted``).
        batch_size: songs per forward pass; device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, *, ckpt_path: str | None, trusted: bool, batch_size: int, device: str) -> None:
        if not ckpt_path:
            raise ValueError("baseline/source=checkpoint needs ckpt_path=PATH (a checkpoint of ours or a "
                             "reference one)")
        self.ckpt_path, self.trusted, self.batch_size, self.device = Path(ckpt_path), trusted, batch_size, device

    def matrix(self, dataset: PreparedDataset, *, frontend: MelFrontend | None = None,
               progress: bool = False) -> FeatureMatrix:
        from tagretrieval.training.checkpoints import load_model
        from tagretrieval.inference.search import Searcher

        model = load_model(self.ckpt_path, trusted=self.trusted)
        # only the song branch is used: no tag vocabulary needed
        searcher = Searcher(model=model, tags=[], categories=[], tag_vectors=np.zeros((0, model.word_dim)),
                            device=self.device)
        values = searcher.embed_dataset(dataset, frontend=frontend, batch_size=self.batch_size, progress=progress)
        return _all_valid(values, "embedding", f"song embeddings of {self.ckpt_path}")


class MusicnnSource:
    """A pretrained musicnn network's ``layer`` output of each track's audio, the mean over its 3-s patches, cached in
    ``PREPARED/cache_dir/<model>.<layer>.npz`` (the cache of ``song_features=musicnn``: either fills it for the other).

    Args:
        weights: ``"MTT"`` or ``"MSD"``; architecture: ``"musicnn"`` or ``"vgg"``; layer: one of
            :data:`tagretrieval.pretrained.embedder.LAYERS` of the architecture.
        batch_size: patches per forward pass; device: ``"cpu"`` or ``"cuda"``.
        cache_dir: the caches' folder inside the prepared folder; save_every: rewrite it after this many new tracks.
        also_layers: other layers whose caches the same pass over the audio fills.
    """

    def __init__(self, *, weights: str, architecture: str, layer: str, batch_size: int, device: str, cache_dir: str,
                 save_every: int, also_layers: Sequence[str] = ()) -> None:
        self.embedder = MusicnnEmbedder(model=pretrained_model(weights=weights, architecture=architecture),
                                        layer=layer, batch_size=batch_size, device=device)
        self.cache_dir, self.save_every = cache_dir, save_every
        self.also_layers = [str(layer) for layer in also_layers]
        for other in self.also_layers:
            check_layer(self.embedder.model, other)

    def matrix(self, dataset: PreparedDataset, *, frontend: MelFrontend | None = None,
               progress: bool = False) -> FeatureMatrix:
        return pretrained_features(dataset, self.embedder, path=cache_path(dataset, self.embedder,
                                                                           cache_dir=self.cache_dir),
                                   save_every=self.save_every, progress=progress, also_layers=self.also_layers)
