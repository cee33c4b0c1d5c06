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

Tracks whose audio yields no features (undecodable, shorter than one STFT window, NaN/inf values) are left out of
the run and listed, with the reason, in ``<run>/song_features_report.json``; more than ``max_skipped_fraction`` of the
tracks is an error. They are examined again on the next run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from tagretrieval.data.feature_cache import handcrafted_features
from tagretrieval.audio.handcrafted import LEVELS, HandcraftedExtractor
from tagretrieval.data.prepared import PreparedDataset
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

    def attach(self, dataset: PreparedDataset, *, report_dir: str | Path | None = None,
               progress: bool = False) -> PreparedDataset:
        """``dataset`` with ``features`` = these features (float32 ``[n_kept, n_features]``), without the tracks that
        have none; the skipped tracks are written to ``report_dir / REPORT_FILE`` (when given) and logged.

        Raises:
            DataError: the dataset has no audio paths, or more than ``max_skipped_fraction`` of its tracks have no
                features (the report is written first).
            FeatureCacheMismatchError: the cache was made with other analysis parameters.
        """
        cache_path = dataset.root / self.cache_file
        if not (dataset.tracks["audio_path"] != "").any():
            raise DataError(f"song_features=handcrafted computes features from the audio, but dataset "
                            f"'{dataset.name}' ({dataset.root}) was imported without audio files (no audio_path in "
                            "tracks.csv): leave song_features out, or import its audio")
        matrix = handcrafted_features(dataset, self.extractor, level=self.level, cache_path=cache_path,
                                      num_workers=self.num_workers, save_every=self.save_every, progress=progress)
        n_tracks = len(dataset.tracks)
        skipped = {str(t): r for t, r in matrix.skipped.items()}
        report = {"source": "handcrafted", "level": self.level, "cache": str(cache_path),
                  "params": self.extractor.params(), "n_features": len(matrix.names), "n_tracks": n_tracks,
                  "n_skipped": len(skipped), "skipped": skipped}
        if report_dir is not None:
            Path(report_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_json(Path(report_dir) / REPORT_FILE, report)
        if n_tracks and len(skipped) / n_tracks > self.max_skipped_fraction:
            raise DataError(f"song_features=handcrafted: {len(skipped)} of {n_tracks} tracks have no features, more "
                            f"than song_features.max_skipped_fraction={self.max_skipped_fraction} (reasons in "
                            f"{Path(report_dir) / REPORT_FILE if report_dir is not None else 'the log'})")
        if dataset.features is not None:
            log.info("song_features=handcrafted: the dataset's own %d features are replaced by %d hand-crafted ones",
                     dataset.features.shape[1], len(matrix.names))
        log.info("song features: %d hand-crafted values (level %s) for %d of %d tracks (%s)", len(matrix.names),
                 self.level, int(matrix.valid.sum()), n_tracks, cache_path)
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
