"""Hand-crafted song features with librosa: the classic MIR descriptors, summarised per song and per beat.

Frame-level descriptors (one column per STFT frame, ``hop_length`` samples apart)::

    mfcc00..mfcc{n_mfcc-1}        MFCCs of the log-mel spectrogram (``n_mels`` bands)
    chroma_C..chroma_B            12 chroma bins of the power spectrogram (A440 tuning assumed)
    centroid, bandwidth, rolloff  spectral centroid, bandwidth and 85 % roll-off, in Hz
    contrast0..contrast6          spectral contrast of 6 octave bands + the residual band, in dB
    zcr                           zero-crossing rate (fraction of sign changes in an ``n_fft`` window)
    rms                           root-mean-square amplitude of an ``n_fft`` window of ``y`` (no window function)

One call computes every value once (one decode, one STFT, one beat tracking); a ``level`` picks columns:

- ``"song"``: mean and standard deviation of every descriptor over all frames, plus the tempo (BPM):
  ``2 * (n_mfcc + 24) + 1`` values (89 with 20 MFCCs), the usual "bag of frames" baseline.
- ``"beat"``: the descriptors are first averaged between consecutive beats (beat-synchronous, librosa's
  ``util.sync``), then summarised over the beat segments by their mean, standard deviation and mean absolute
  change from one segment to the next; plus the tempo (BPM), the beat rate (beats per second) and the
  standard deviation of the inter-beat interval (s): ``3 * (n_mfcc + 24) + 3`` values (135 with 20 MFCCs).
  A clip without any beat is one segment (standard deviation and change 0); fewer than 3 beats give an
  interval standard deviation of 0.
- ``"both"``: the union, ``5 * (n_mfcc + 24) + 3`` values (223 with 20 MFCCs).

librosa compiles some of these functions with numba on their first call (seconds; a minute on a busy
machine the very first time, after which numba's on-disk cache makes it seconds): call
:meth:`HandcraftedExtractor.warm_up` once per process, before a loop, never per track.
"""

from __future__ import annotations

import librosa
import numpy as np

LEVELS: tuple[str, ...] = ("song", "beat", "both")
FEATURES_VERSION = 1
"""Bumped whenever the computation changes: caches made by another version are refused."""
CHROMA_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
N_CONTRAST_BANDS = 6  # librosa's default: 6 octave bands (+ 1 residual row)
ROLL_PERCENT = 0.85
RHYTHM_NAMES: tuple[str, ...] = ("tempo_bpm", "beats_per_second", "beat_interval_std_s")


def descriptor_names(*, n_mfcc: int) -> list[str]:
    """Names of the frame-level descriptors, rows of :meth:`HandcraftedExtractor.frame_descriptors`."""
    return ([f"mfcc{i:02d}" for i in range(n_mfcc)] + [f"chroma_{c}" for c in CHROMA_NAMES]
            + ["centroid", "bandwidth", "rolloff"] + [f"contrast{i}" for i in range(N_CONTRAST_BANDS + 1)]
            + ["zcr", "rms"])


def all_feature_names(*, n_mfcc: int) -> list[str]:
    """Names of every value :meth:`HandcraftedExtractor.__call__` returns, in order."""
    names = descriptor_names(n_mfcc=n_mfcc)
    return ([f"{n}_{stat}" for stat in ("mean", "std") for n in names]
            + [f"{n}_beat_{stat}" for stat in ("mean", "std", "delta") for n in names] + list(RHYTHM_NAMES))


def feature_names(*, level: str, n_mfcc: int) -> list[str]:
    """Names of the features of ``level`` (module doc), in order: a subset of :func:`all_feature_names`."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    names = all_feature_names(n_mfcc=n_mfcc)
    n_song = 2 * len(descriptor_names(n_mfcc=n_mfcc))
    if level == "song":
        return names[:n_song] + ["tempo_bpm"]
    if level == "beat":
        return names[n_song:]
    return names


class HandcraftedExtractor:
    """Computes every feature of one clip (module doc); the mel filterbank is built once, here.

    Args:
        sample_rate: Hz of the clips given to ``__call__``.
        n_fft, hop_length: STFT window and hop, in samples.
        n_mels: mel bands under the MFCCs and the onset envelope; n_mfcc: MFCCs kept.

    Chroma assumes A440 tuning: estimating each clip's tuning would triple its cost.
    """

    def __init__(self, *, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, n_mfcc: int) -> None:
        if min(sample_rate, n_fft, hop_length, n_mels, n_mfcc) < 1:
            raise ValueError("sample_rate, n_fft, hop_length, n_mels and n_mfcc must be positive, got "
                             f"{sample_rate}, {n_fft}, {hop_length}, {n_mels}, {n_mfcc}")
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} > n_mels={n_mels}")
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mels, self.n_mfcc = n_mels, n_mfcc
        self.mel_basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)  # [n_mels, 1 + n_fft // 2]

    def params(self) -> dict:
        """Everything the values depend on (a cache made with other params is refused)."""
        return {"features_version": FEATURES_VERSION, "sample_rate": self.sample_rate, "n_fft": self.n_fft,
                "hop_length": self.hop_length, "n_mels": self.n_mels, "n_mfcc": self.n_mfcc}

    @property
    def names(self) -> list[str]:
        """Names of the ``n_features`` values of ``__call__``."""
        return all_feature_names(n_mfcc=self.n_mfcc)

    def frame_descriptors(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame-level descriptors and the onset envelope of a clip ``y`` float32 ``[n_samples]``.

        Returns:
            ``(D, onset_envelope)``: ``D`` float64 ``[n_mfcc + 24, n_frames]`` (rows named by
            :func:`descriptor_names`), ``onset_envelope`` ``[n_frames]`` (spectral flux of the log-mel).
        """
        sr, n_fft, hop_length = self.sample_rate, self.n_fft, self.hop_length
        S = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length))             # [1 + n_fft // 2, n_frames]
        power = S**2
        mel_db = librosa.power_to_db(self.mel_basis @ power)                           # [n_mels, n_frames]
        rows = [
            librosa.feature.mfcc(S=mel_db, n_mfcc=self.n_mfcc),
            librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft, tuning=0.0),
            librosa.feature.spectral_centroid(S=S, sr=sr, n_fft=n_fft),
            librosa.feature.spectral_bandwidth(S=S, sr=sr, n_fft=n_fft),
            librosa.feature.spectral_rolloff(S=S, sr=sr, n_fft=n_fft, roll_percent=ROLL_PERCENT),
            librosa.feature.spectral_contrast(S=S, sr=sr, n_fft=n_fft, n_bands=N_CONTRAST_BANDS),
            librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop_length),
            librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop_length),
        ]
        n_frames = S.shape[1]
        descriptors = np.concatenate([r[:, :n_frames] for r in rows], axis=0).astype(np.float64)
        return descriptors, librosa.onset.onset_strength(S=mel_db, sr=sr)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Every feature of one clip ``y`` float32 ``[n_samples >= n_fft]``: float32 ``[n_features]`` (``names``)."""
        if y.ndim != 1 or y.shape[0] < self.n_fft:
            raise ValueError(f"expected a mono clip y [n_samples >= n_fft={self.n_fft}], got shape {y.shape}")
        D, onset_envelope = self.frame_descriptors(y)
        tempo, beats = librosa.beat.beat_track(onset_envelope=onset_envelope, sr=self.sample_rate,
                                               hop_length=self.hop_length)
        segments = librosa.util.sync(D, beats, aggregate=np.mean)                 # [n_descriptors, n_segments]
        if segments.shape[1] == 0:
            segments = D.mean(axis=1, keepdims=True)
        delta = np.abs(np.diff(segments, axis=1)).mean(axis=1) if segments.shape[1] > 1 else np.zeros(len(D))
        beat_times = librosa.frames_to_time(beats, sr=self.sample_rate, hop_length=self.hop_length)
        rhythm = [float(np.atleast_1d(tempo)[0]), len(beats) * self.sample_rate / y.shape[0],
                  float(np.diff(beat_times).std()) if len(beats) > 2 else 0.0]
        return np.concatenate([D.mean(axis=1), D.std(axis=1), segments.mean(axis=1), segments.std(axis=1), delta,
                               rhythm]).astype(np.float32)

    def warm_up(self) -> None:
        """Run once on 2 s of seeded noise, so that numba compiles librosa's kernels now, not in a loop."""
        self(np.random.default_rng(0).standard_normal(2 * self.sample_rate).astype(np.float32) * 0.1)
