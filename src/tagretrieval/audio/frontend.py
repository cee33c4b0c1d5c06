"""Log-mel front end: waveform -> log-power mel spectrogram, in torch, matching librosa.

The filterbank comes from ``librosa.filters.mel`` (Slaney scale and norm, librosa's defaults); only the
STFT and the log are written here, in torch, so the same module runs batched on a GPU inside a model
and on the CPU when filling the mel cache. It reproduces, for librosa 0.11,

    librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=n_fft,
                        hop_length=hop_length, n_mels=n_mels, fmin=fmin_hz, fmax=fmax_hz, power=2.0),
                        ref=1.0, amin=amin, top_db=None)

i.e. periodic Hann window of ``n_fft`` samples, ``center=True`` with zero padding (librosa 0.11's
default ``pad_mode='constant'``), power 2, then ``10 * log10(max(S, amin))``. Parity is tested in
``tests/test_audio_frontend.py``.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import torch
from torch import Tensor

from tagretrieval.audio.io import load_audio

FRONTEND_VERSION: int = 1
"""Bump when the computation changes without a parameter changing: old mel caches are then refused."""


class MelFrontend(torch.nn.Module):
    """Waveform ``[batch, n_samples]`` -> log-mel ``[batch, n_mels, n_frames]`` in dB (re 1.0 power).

    Args:
        sample_rate: rate of the input waveform in Hz.
        n_fft: FFT size and Hann window length, in samples.
        hop_length: frame step in samples.
        n_mels: number of mel bands.
        fmin_hz, fmax_hz: band edges of the filterbank in Hz; ``fmax_hz=None`` means ``sample_rate / 2``.
        amin: power floor before the log (the output is at least ``10 * log10(amin)`` dB).

    The filterbank and window are non-persistent buffers: they follow ``.to(device)`` but are not written
    to checkpoints, since they are a pure function of the constructor arguments.
    """

    def __init__(self, *, sample_rate: int = 22050, n_fft: int = 1024, hop_length: int = 512,
                 n_mels: int = 128, fmin_hz: float = 0.0, fmax_hz: float | None = None,
                 amin: float = 1e-10):
        super().__init__()
        nyquist_hz = sample_rate / 2
        fmax_hz = nyquist_hz if fmax_hz is None else float(fmax_hz)
        if min(sample_rate, n_fft, hop_length, n_mels) <= 0:
            raise ValueError("sample_rate, n_fft, hop_length and n_mels must be positive, got "
                             f"{sample_rate}, {n_fft}, {hop_length}, {n_mels}")
        if not 0.0 <= fmin_hz < fmax_hz <= nyquist_hz:
            raise ValueError(f"need 0 <= fmin_hz < fmax_hz <= sample_rate / 2 = {nyquist_hz}, "
                             f"got fmin_hz={fmin_hz}, fmax_hz={fmax_hz}")
        if amin <= 0:
            raise ValueError(f"amin must be positive, got {amin}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.fmin_hz = float(fmin_hz)
        self.fmax_hz = fmax_hz
        self.amin = float(amin)
        mel_basis = librosa.filters.mel(sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels,
                                        fmin=self.fmin_hz, fmax=self.fmax_hz, dtype=np.float32)
        self.register_buffer("mel_basis", torch.from_numpy(mel_basis), persistent=False)  # [n_mels, 1 + n_fft // 2]
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)  # [n_fft]

    def forward(self, y: Tensor) -> Tensor:
        """``y [batch, n_samples]`` or ``[n_samples]`` -> ``[batch, n_mels, n_frames]`` or ``[n_mels, n_frames]``.

        Computed in the buffers' dtype (float32 unless the module was cast) with autocast off: a log-mel in
        half precision loses the quiet bands. ``n_frames == self.n_frames(n_samples)``.
        """
        if y.ndim not in (1, 2) or y.shape[-1] == 0:
            raise ValueError(f"expected a waveform [n_samples] or [batch, n_samples], got shape {tuple(y.shape)}")
        with torch.autocast(device_type=y.device.type, enabled=False):
            spec = torch.stft(y.to(self.window.dtype), n_fft=self.n_fft, hop_length=self.hop_length,
                              win_length=self.n_fft, window=self.window, center=True, pad_mode="constant",
                              return_complex=True)  # [(batch,) 1 + n_fft // 2, n_frames]
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_basis, power)  # [(batch,) n_mels, n_frames]
            return 10.0 * torch.log10(torch.clamp(mel, min=self.amin))

    def params(self) -> dict:
        """Every parameter that determines the output, JSON-serialisable; the mel cache's manifest.

        ``fmax_hz`` is stored resolved (``None`` -> ``sample_rate / 2``) so equal filterbanks give equal dicts.
        """
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "fmin_hz": self.fmin_hz,
            "fmax_hz": self.fmax_hz,
            "amin": self.amin,
            "log": "power_to_db",
            "version": FRONTEND_VERSION,
        }

    def n_frames(self, n_samples: int) -> int:
        """Number of frames for ``n_samples`` input samples (``center=True``): ``1 + n_samples // hop_length``."""
        return 1 + n_samples // self.hop_length

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params().items())


def mel_from_file(path: str | Path, frontend: MelFrontend) -> np.ndarray:
    """Log-mel of an audio file: float32 ``[n_mels, n_frames]`` in dB.

    Decodes with :func:`load_audio` at ``frontend.sample_rate`` (raises its ``AudioDecodeError``), runs the
    front end on its device without autograd and returns the result on the CPU.
    """
    y = load_audio(path, sample_rate=frontend.sample_rate)
    with torch.no_grad():
        mel = frontend(torch.from_numpy(y).to(next(frontend.buffers()).device))
    return mel.cpu().numpy().astype(np.float32, copy=False)
