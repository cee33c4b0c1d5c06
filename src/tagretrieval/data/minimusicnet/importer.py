"""Import mini-MusicNet (``data=minimusicnet``): 93 ms clips tagged with the MIDI notes sounding at their centre.

Expected layout of ``root`` (the ``minimusic/`` folder)::

    audio-train.npy  audio-valid.npy  audio-test.npy     [N, 4096] clips at 44.1 kHz, peak-normalised to [-1, 1]
    labels-train.npy labels-valid.npy labels-test.npy    [N, 128] multi-hot: column k = MIDI note k

N is 62,500 / 10,000 / 10,000 in the release. Liberal in what it accepts (the dtypes were not confirmed
from the data): audio float32 or float64, labels of any numeric or bool dtype holding only 0 and 1.

What is imported:

- tracks: one per clip, ``train-000123`` (split and row); split: the given one; artist: the recording,
  ``train-rec0000`` for rows 0-249 (rows come ``clips_per_recording`` = 250 per recording, in time order),
  so that anything grouping by artist never mixes recordings;
- tags: ``C-1`` .. ``G9`` (column k = MIDI note k, ``C4`` = 60, sharps ``C#4``), category ``octave N``
  (``octave 4`` = C4..B4); notes that never sound in the training split cannot be learned and are dropped
  (reported as ``tag: never in train``). Clips where no note sounds are kept: they are negatives for every
  note, as in the seed's metric;
- song input, ``features.npy``: the log-magnitude spectrum ``log(1 + |rfft(hann * y)|)`` of each clip,
  bins 0 Hz .. ``fmax_hz`` (744 bins at 8 kHz). Why this and not a log-mel: a 4,096-sample clip is one
  analysis frame, whose 10.8 Hz bins already resolve semitones above ~C4 (15.6 Hz apart there); a mel
  filterbank would merge exactly the neighbouring bins that tell notes apart at high pitch and leave empty
  bands at low pitch. The Hann window keeps a loud partial from leaking over its neighbours; ``log1p``
  compresses the peaks while keeping the noise floor near 0. 8 kHz covers the fundamental of every
  piano note (C8 = 4,186 Hz) and the lower harmonics that carry pitch, at a third of the 2,049 bins
  (features.npy: 245 MB for the 82,500 clips instead of 676 MB).

Clips with NaN/inf samples are skipped and reported. The seed's metric (micro-averaged average precision over
all (clip, note) pairs) is :func:`micro_average_precision`; ``scripts/minimusicnet_baselines.py`` computes the
seed's ridge baselines and scores our checkpoints with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tagretrieval.audio import MelFrontend
from tagretrieval.data.inputs import FEATURES
from tagretrieval.data.importer import Imported, Importer
from tagretrieval.data.prepared import SPLITS
from tagretrieval.data.report import PrepareReport
from tagretrieval.runtime.errors import MissingFileError
from tagretrieval.tags.pitch import N_MIDI_NOTES, midi_octave, midi_to_name

"""Bump when the import (or the feature computation) changes: older prepared folders are imported again."""
FEATURE_NAME = "log1p_abs_rfft_hann"
_BLOCK_CLIPS = 1024  # clips per block when computing features (bounds memory for any N)


def clip_spectrum(y: np.ndarray, *, sample_rate: int, fmax_hz: float) -> np.ndarray:
    """Log-magnitude spectra of clips: ``y [n_clips, n_samples]`` -> float32 ``[n_clips, n_bins]``.

    ``log(1 + |rfft(hann(n_samples) * y)|)`` for the bins at 0 .. ``fmax_hz`` Hz (bin ``k`` is at
    ``k * sample_rate / n_samples`` Hz), so ``n_bins = floor(fmax_hz * n_samples / sample_rate) + 1``.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"expected clips [n_clips, n_samples], got shape {y.shape}")
    n_samples = y.shape[1]
    n_bins = n_spectrum_bins(n_samples=n_samples, sample_rate=sample_rate, fmax_hz=fmax_hz)
    window = np.hanning(n_samples + 1)[:-1]  # periodic Hann
    spectrum = np.abs(np.fft.rfft(y * window, axis=1))[:, :n_bins]
    return np.log1p(spectrum).astype(np.float32)


def n_spectrum_bins(*, n_samples: int, sample_rate: int, fmax_hz: float) -> int:
    """Number of rfft bins from 0 Hz up to ``fmax_hz`` (inclusive) for clips of ``n_samples``."""
    if not 0 < fmax_hz <= sample_rate / 2:
        raise ValueError(f"fmax_hz must be in (0, sample_rate / 2 = {sample_rate / 2}], got {fmax_hz}")
    return int(np.floor(fmax_hz * n_samples / sample_rate)) + 1


def micro_average_precision(scores: np.ndarray, relevance: np.ndarray) -> float:
    """Average precision of all (clip, note) pairs ranked together: the seed's mini-MusicNet metric.

    Equals ``sklearn.metrics.average_precision_score(relevance.ravel(), scores.ravel())``, ties included
    (tied scores form one threshold): ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds.
    One sort of the flattened matrix, no Python loop.

    Args:
        scores: float ``[n_clips, n_notes]`` (or any shape; flattened), finite.
        relevance: {0, 1} (bool or numeric) of the same shape.

    Raises:
        ValueError: shapes differ, non-finite scores, relevance not in {0, 1}, or no positive pair.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    relevance = np.asarray(relevance).ravel()
    if scores.shape != relevance.shape:
        raise ValueError(f"scores and relevance differ in size: {scores.size} vs {relevance.size}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    if not np.isin(relevance, (0, 1)).all():
        raise ValueError("relevance must hold only 0 and 1")
    relevance = relevance.astype(bool)
    n_positives = int(relevance.sum())
    if n_positives == 0:
        raise ValueError("no positive pair: average precision is undefined")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], relevance[order]
    # last index of each group of tied scores: one threshold per distinct score
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), scores.size - 1]
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    recall_step = np.diff(np.r_[0, true_positives]) / n_positives
    return float(np.sum(recall_step * precision))


def note_tags() -> tuple[list[str], list[str]]:
    """Tag and category of each of the 128 label columns: ``("C-1", "octave -1")`` .. ``("G9", "octave 9")``."""
    return ([midi_to_name(k) for k in range(N_MIDI_NOTES)],
            [f"octave {midi_octave(k)}" for k in range(N_MIDI_NOTES)])


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``audio-<split>.npy`` (memory-mapped, [N, n_samples]) and ``labels-<split>.npy`` as bool [N, 128].

    Raises:
        FileNotFoundError, or ValueError naming the file for a bad shape, dtype or value.
    """
    audio_path, labels_path = root / f"audio-{split}.npy", root / f"labels-{split}.npy"
    for path in (audio_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(f"mini-MusicNet file not found: {path} (data.root must be the minimusic/ folder)")
    audio = np.load(audio_path, mmap_mode="r", allow_pickle=False)
    if audio.ndim != 2 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{audio_path}: expected float clips [N, n_samples], got {audio.dtype} {audio.shape}")
    labels = np.load(labels_path, allow_pickle=False)
    if labels.shape != (audio.shape[0], N_MIDI_NOTES):
        raise ValueError(f"{labels_path}: expected [{audio.shape[0]}, {N_MIDI_NOTES}] (one row per clip of "
                         f"{audio_path.name}), got {labels.shape}")
    if not (labels.dtype == bool or np.issubdtype(labels.dtype, np.number)) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{labels_path}: labels must be 0/1 (any numeric or bool dtype), got {labels.dtype} "
                         f"values {np.unique(labels)[:10]}")
    return audio, labels.astype(bool)


class MiniMusicNetImporter(Importer):
    """Imports ``root`` (layout and rules in the module docstring) into the prepared format at ``prepared_dir``.

    Args:
        sample_rate: rate of the clips in Hz (44,100 in the release).
        fmax_hz: highest frequency kept in the spectrum features.
        clips_per_recording: consecutive rows that come from one recording (the artist).
        min_train_clips: notes sounding in fewer training clips are dropped (reported).
        max_skipped_fraction: fail (after writing the report) if more clips are skipped.
    """

    IMPORT_VERSION = 1

    def __init__(
        self,
        *,
        root: str,
        prepared_dir: str,
        name: str = "minimusicnet",
        sample_rate: int = 44100,
        fmax_hz: float = 8000.0,
        clips_per_recording: int = 250,
        min_train_clips: int = 1,
        max_skipped_fraction: float = 0.01,
    ) -> None:
        if clips_per_recording < 1 or min_train_clips < 1:
            raise ValueError("clips_per_recording and min_train_clips must be >= 1, got "
                             f"{clips_per_recording} and {min_train_clips}")
        n_spectrum_bins(n_samples=2, sample_rate=sample_rate, fmax_hz=fmax_hz)  # validates fmax_hz
        super().__init__(root=root, prepared_dir=prepared_dir, name=name, max_skipped_fraction=max_skipped_fraction)
        self.sample_rate = sample_rate
        self.fmax_hz = fmax_hz
        self.clips_per_recording = clips_per_recording
        self.min_train_clips = min_train_clips

    def song_inputs(self) -> frozenset[str]:
        """What the import holds for the song branch (:mod:`tagretrieval.data.inputs`): each clip's spectrum."""
        return frozenset({FEATURES})

    def settings(self) -> dict:
        return {
            "features": FEATURE_NAME, "sample_rate": self.sample_rate, "fmax_hz": self.fmax_hz,
            "clips_per_recording": self.clips_per_recording, "min_train_clips": self.min_train_clips,
        }

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise MissingFileError(f"data.root is not a folder: {self.root.resolve()}")

    def read(self, report: PrepareReport, *, frontend: MelFrontend | None, progress: bool) -> Imported:
        """``frontend`` is unused: the clips are too short for the mel front end (module docstring)."""
        tracks, labels, features = [], [], []
        n_samples = None
        for split in SPLITS:
            audio, split_labels = read_split(self.root, split)
            if n_samples is not None and audio.shape[1] != n_samples:
                raise ValueError(f"audio-{split}.npy has clips of {audio.shape[1]} samples, the other splits "
                                 f"{n_samples}: the spectra would not line up")
            n_samples = audio.shape[1]
            report.n_candidates += audio.shape[0]
            split_features, finite = self._spectra(audio, split=split, progress=progress)
            ids = [f"{split}-{i:06d}" for i in range(audio.shape[0])]
            for i in np.flatnonzero(~finite):
                report.skip("non-finite audio", ids[i], f"row {i} of audio-{split}.npy holds NaN/inf")
            tracks.append(pd.DataFrame({
                "track_id": ids,
                "artist": [f"{split}-rec{i // self.clips_per_recording:04d}" for i in range(audio.shape[0])],
                "split": split, "audio_path": "",
            })[finite])
            labels.append(split_labels[finite])
            features.append(split_features[finite])
        table = pd.concat(tracks, ignore_index=True)
        labels_all, features_all = np.concatenate(labels), np.concatenate(features)
        return self._labels(table, labels_all, features_all, report)

    def _spectra(self, audio: np.ndarray, *, split: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """Features ``float32 [N, n_bins]`` (zero rows for non-finite clips) and the finite-clip mask ``[N]``."""
        n_bins = n_spectrum_bins(n_samples=audio.shape[1], sample_rate=self.sample_rate, fmax_hz=self.fmax_hz)
        out = np.zeros((audio.shape[0], n_bins), dtype=np.float32)
        finite = np.ones(audio.shape[0], dtype=bool)
        starts = range(0, audio.shape[0], _BLOCK_CLIPS)
        for start in tqdm(starts, desc=f"spectra {split}", unit="block", disable=not progress):
            block = np.asarray(audio[start:start + _BLOCK_CLIPS], dtype=np.float64)
            ok = np.isfinite(block).all(axis=1)
            finite[start:start + len(block)] = ok
            out[start:start + len(block)][ok] = clip_spectrum(block[ok], sample_rate=self.sample_rate,
                                                              fmax_hz=self.fmax_hz)
        return out, finite

    def _labels(self, table: pd.DataFrame, labels: np.ndarray, features: np.ndarray,
                report: PrepareReport) -> Imported:
        tags, categories = note_tags()
        train = (table["split"] == "train").to_numpy()
        train_counts = labels[train].sum(axis=0)
        keep = train_counts >= self.min_train_clips
        for k in np.flatnonzero(~keep):
            report.skip("tag: never in train", tags[k], f"{int(train_counts[k])} training clip(s) < "
                        f"data.min_train_clips={self.min_train_clips}; {int(labels[~train, k].sum())} "
                        "valid/test clip(s)")
        labels = labels[:, keep]
        silent = int((~labels.any(axis=1)).sum())
        if silent:
            report.note(f"{silent} clip(s) have no (kept) note sounding; kept as negatives for every note")
        return Imported(tracks=table, tags=[t for t, k in zip(tags, keep) if k],
                        categories=[c for c, k in zip(categories, keep) if k], labels=labels, features=features)
