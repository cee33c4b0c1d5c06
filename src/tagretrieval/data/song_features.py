"""Song features computed from the audio of any dataset (config group ``song_features``), for ``model=features``
and ``model=fused``.

``song_features=handcrafted`` computes the librosa statistics of the hand-crafted baselines
(:mod:`tagretrieval.audio.handcrafted`: MFCC, chroma, spectral shape, contrast, zero-crossing rate, RMS, summarised
over the clip and over its beats, plus tempo) for every track with an audio file, once, into the prepared folder
(``handcrafted_features.npz``, the cache ``mode=baseline +baseline=handcrafted_logreg`` reads and writes too: either
fills it for the other). The cache is rewritten every ``save_every`` new tracks, so an interrupted run resumes; one
made with other analysis parameters is refused. The features become ``dataset.features`` of the run (in memory; the
import itself is not changed), replacing a dataset's own precomputed ones (FMA's, which are read as they are when
``song_features`` is not set).

``song_features=musicnn`` takes a pretrained musicnn network's frozen embeddings instead (the musicnn 0.1.0 wheel's
MTT or MSD weights, musicnn or VGG architecture, one layer: :class:`MusicnnSongFeatures`); each track's vector is the
mean over the 3-s patches of its audio resampled to 16 kHz, cached in ``PREPARED/musicnn_features/`` (one file per
network and layer, shared with ``+baseline=musicnn_probe``: :mod:`tagretrieval.data.pretrained_features`).

Tracks whose audio yields no features (undecodable, shorter than one STFT window, NaN/inf values) are left out of
the run and listed, with the reason, in ``<run>/song_features_report.json``; more than ``max_skipped_fraction`` of the
tracks is an error. They are examined again on the next run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagretrieval.data.feature_cache import FeatureMatrix, handcrafted_features
from tagretrieval.data.pretrained_features import cache_path as musicnn_cache_path, pretrained_features
from tagretrieval.audio.handcrafted import LEVELS, HandcraftedExtractor
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.pretrained.embedder import MusicnnEmbedder, check_layer, pretrained_model
from tagretrieval.runtime.errors import ConfigError, DataError
from tagretrieval.runtime.files import atomic_write_json

log = logging.getLogger(__name__)

REPORT_FILE = "song_features_report.json"


class HandcraftedSongFeatures:
    """Hand-crafted librosa features of each track's audio as its song features (module docstring).

    Args:
        level: ``"song"`` (89 values with 20 MFCCs: mean and std over frames, tempo), ``"beat"`` (135: beat-synchronous
            statistics and rhythm) or ``"both"`` (223).
        sample_rate, n_fft, hop_length, n_mels: the analysis (conf: ``audio``); features are computed from the audio
            files, not from the mel store.
        n_mfcc: MFCCs kept.
        cache_file: the cache's file name inside the prepared folder.
        num_workers: worker processes computing features (0: this process).
        save_every: rewrite the cache after this many new tracks.
        max_skipped_fraction: more tracks without features than this fraction of the dataset is an error.
    """

    def __init__(self, *, level: str, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, n_mfcc: int,
                 cache_file: str, num_workers: int, save_every: int, max_skipped_fraction: float) -> None:
        if level not in LEVELS:
            raise ConfigError(f"song_features.level must be one of {', '.join(LEVELS)}, got {level!r}")
        if not 0.0 <= max_skipped_fraction <= 1.0:
            raise ConfigError(f"song_features.max_skipped_fraction must be in [0, 1], got {max_skipped_fraction}")
        self.extractor = HandcraftedExtractor(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                              n_mels=n_mels, n_mfcc=n_mfcc)
        self.level, self.cache_file = level, cache_file
        self.num_workers, self.save_every = num_workers, save_every
        self.max_skipped_fraction = max_skipped_fraction

    def has_cache(self, dataset: PreparedDataset) -> bool:
        """Whether ``dataset`` holds this cache (a plain file name inside its prepared folder) for
        ``attach(read_only=True)``, a checkpoint's data that is only read."""
        return _has_cache(self.cache_file, dataset.root / self.cache_file)

    def attach(self, dataset: PreparedDataset, *, report_dir: str | Path | None = None, progress: bool = False,
               read_only: bool = False) -> PreparedDataset:
        """``dataset`` with ``features`` = these features (float32 ``[n_kept, n_features]``), without the tracks that
        have none; the skipped tracks are written to ``report_dir / REPORT_FILE`` (when given) and logged.
        ``read_only``: the cache is only read, tracks it lacks are skipped (nothing computed or written at the data).

        Raises:
            DataError: the dataset has no audio paths, or more than ``max_skipped_fraction`` of its tracks have no
                features (the report is written first).
            FeatureCacheMismatchError: the cache was made with other analysis parameters.
        """
        cache_path = dataset.root / self.cache_file
        _check_audio(dataset, "handcrafted")
        matrix = handcrafted_features(dataset, self.extractor, level=self.level, cache_path=cache_path,
                                      num_workers=self.num_workers, save_every=self.save_every, progress=progress,
                                      compute=not read_only)
        return attach_matrix(dataset, matrix, source="handcrafted", what=f"hand-crafted values (level {self.level})",
                             details={"level": self.level, "params": self.extractor.params()}, cache=cache_path,
                             max_skipped_fraction=self.max_skipped_fraction, report_dir=report_dir)


class MusicnnSongFeatures:
    """A pretrained musicnn network's frozen embeddings of each track's audio as its song features.

    Each track's vector is the network's ``layer`` output averaged over the 3-s patches of its audio, resampled to
    16 kHz (:mod:`tagretrieval.pretrained.embedder`), computed once into
    ``PREPARED/cache_dir/<model>.<layer>.npz`` (:mod:`tagretrieval.data.pretrained_features`, shared with
    ``+baseline=musicnn_probe``).

    Args:
        weights: ``"MTT"`` (trained on MagnaTagATune) or ``"MSD"`` (the Million Song Dataset).
        architecture: ``"musicnn"`` or ``"vgg"``.
        layer: the output used (:data:`tagretrieval.pretrained.embedder.LAYERS`): musicnn ``penultimate`` (200
            values), ``pooled`` (1506), ``max_pool``/``mean_pool`` (753), ``taggram`` (50); VGG ``pooled`` (256) or
            ``taggram``.
        batch_size: patches per forward pass; device: ``"cpu"`` or ``"cuda"``.
        cache_dir: the caches' folder inside the prepared folder.
        save_every: rewrite the cache after this many new tracks.
        max_skipped_fraction: more tracks without a vector than this fraction of the dataset is an error.
        also_layers: other layers whose caches the same pass over the audio fills (cheap later runs on them).
    """

    def __init__(self, *, weights: str, architecture: str, layer: str, batch_size: int, device: str, cache_dir: str,
                 save_every: int, max_skipped_fraction: float, also_layers: Sequence[str] = ()) -> None:
        if not 0.0 <= max_skipped_fraction <= 1.0:
            raise ConfigError(f"song_features.max_skipped_fraction must be in [0, 1], got {max_skipped_fraction}")
        self.embedder = MusicnnEmbedder(model=pretrained_model(weights=weights, architecture=architecture),
                                        layer=layer, batch_size=batch_size, device=device)
        self.cache_dir, self.save_every, self.max_skipped_fraction = cache_dir, save_every, max_skipped_fraction
        self.also_layers = [str(layer) for layer in also_layers]
        for other in self.also_layers:
            check_layer(self.embedder.model, other)

    def has_cache(self, dataset: PreparedDataset) -> bool:
        """As :meth:`HandcraftedSongFeatures.has_cache`, for the network's cache."""
        return _has_cache(self.cache_dir, musicnn_cache_path(dataset, self.embedder, cache_dir=self.cache_dir))

    def attach(self, dataset: PreparedDataset, *, report_dir: str | Path | None = None, progress: bool = False,
               read_only: bool = False) -> PreparedDataset:
        """As :meth:`HandcraftedSongFeatures.attach`, with the network's embeddings."""
        _check_audio(dataset, "musicnn")
        path = musicnn_cache_path(dataset, self.embedder, cache_dir=self.cache_dir)
        matrix = pretrained_features(dataset, self.embedder, path=path, save_every=self.save_every, progress=progress,
                                     compute=not read_only, also_layers=self.also_layers)
        embedder = self.embedder
        return attach_matrix(dataset, matrix, source="musicnn", what=f"{embedder.model} {embedder.layer} values",
                             details={"model": embedder.model, "layer": embedder.layer, "params": embedder.params()},
                             cache=path, max_skipped_fraction=self.max_skipped_fraction, report_dir=report_dir)


def _has_cache(name: str, path: Path) -> bool:
    return Path(name).name == name and name not in ("", ".", "..") and path.is_file()


def _check_audio(dataset: PreparedDataset, option: str) -> None:
    if not (dataset.tracks["audio_path"] != "").any():
        raise DataError(f"song_features={option} computes features from the audio, but dataset "
                        f"'{dataset.name}' ({dataset.root}) was imported without audio files (no audio_path in "
                        "tracks.csv): leave song_features out, or import its audio")


def attach_matrix(dataset: PreparedDataset, matrix: FeatureMatrix, *, source: str, what: str, details: dict,
                  cache: Path, max_skipped_fraction: float, report_dir: str | Path | None) -> PreparedDataset:
    """``dataset`` with ``matrix``'s values as its features, without the tracks that have none; the report (``source``,
    ``details``, what was skipped and why) is written to ``report_dir / REPORT_FILE`` first (when given).

    Raises:
        DataError: more than ``max_skipped_fraction`` of the tracks have no features.
    """
    n_tracks = len(dataset.tracks)
    skipped = {str(t): r for t, r in matrix.skipped.items()}
    report = {"source": source, **details, "cache": str(cache), "n_features": len(matrix.names),
              "n_tracks": n_tracks, "n_skipped": len(skipped), "skipped": skipped}
    if report_dir is not None:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(report_dir) / REPORT_FILE, report)
    if n_tracks and len(skipped) / n_tracks > max_skipped_fraction:
        raise DataError(f"song_features={source}: {len(skipped)} of {n_tracks} tracks have no features, more "
                        f"than song_features.max_skipped_fraction={max_skipped_fraction} (reasons in "
                        f"{Path(report_dir) / REPORT_FILE if report_dir is not None else 'the log'})")
    if dataset.features is not None:
        log.info("song_features=%s: the dataset's own %d features are replaced by %d computed ones", source,
                 dataset.features.shape[1], len(matrix.names))
    log.info("song features: %d %s for %d of %d tracks (%s)", len(matrix.names), what, int(matrix.valid.sum()),
             n_tracks, cache)
    return keep_tracks(dataset, matrix.valid, features=matrix.values)


def keep_tracks(dataset: PreparedDataset, keep: np.ndarray, *, features: np.ndarray) -> PreparedDataset:
    """The dataset restricted (in memory) to the rows ``keep`` (bool ``[n_tracks]``), with ``features [n_tracks, d]``
    (float32) as its song features, cut the same way."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (len(dataset.tracks),) or len(features) != len(keep):
        raise ValueError(f"keep {keep.shape} and features {np.shape(features)} must have one row per track "
                         f"({len(dataset.tracks)})")
    subset = dataclasses.replace(
        dataset, tracks=dataset.tracks[keep].reset_index(drop=True), labels=dataset.labels[keep],
        cf=None if dataset.cf is None else dataset.cf[keep],
        features=np.ascontiguousarray(np.asarray(features, dtype=np.float32)[keep]),
    )
    subset.validate()
    return subset
