"""musicnn's own front end, in torch: waveform at 16 kHz -> ``log10(1 + 10000 mel)`` -> 3-s (187-frame) patches.

``musicnn/extractor.py`` (``batch_data``) computes, with librosa,

    S = librosa.feature.melspectrogram(y=y, sr=16000, hop_length=256, n_fft=512, n_mels=96)   # power, Slaney mel
    S = np.log10(10000 * S.astype(np.float16) + 1)

and cuts ``S`` into non-overlapping patches of ``n_frames = 187`` frames (``librosa.time_to_frames(3) + 1``),
dropping the last incomplete one. The STFT and the filterbank here are ``audio.frontend.MelFrontend``'s (periodic
Hann window, ``center=True``, librosa 0.11's zero padding, ``librosa.filters.mel``).

The float16 cast: musicnn computes ``10000 * S`` and the log in float16, so every value is rounded to 11 bits and a
mel power above 6.55 (the top bands of most music at normal level) overflows to ``inf``. What the TF network then
makes of ``inf`` depends on TF's kernels. We compute in float32 by default (``float16_log=False``); the tests check
that against musicnn's code with that cast removed, and check ``float16_log=True`` against musicnn as shipped on
clips that do not overflow (docs/pretrained.md gives the sizes of the differences).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tagretrieval.audio.frontend import MelFrontend

__all__ = ["MUSICNN_FRONTEND", "MusicnnFrontend", "patches"]

MUSICNN_FRONTEND = {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 96, "patch_frames": 187}
"""musicnn's front-end parameters (musicnn/configuration.py; ``patch_frames`` is 3 s)."""


class MusicnnFrontend(torch.nn.Module):
    """Waveform ``[batch, n_samples]`` (or ``[n_samples]``) at 16 kHz -> musicnn's log-mel ``[batch, 96, n_frames]``.

    Args:
        float16_log: round as musicnn does (mel power, ``10000 x``, ``+ 1`` and the log each to float16), so that
            loud input overflows to ``inf`` like musicnn's; the default computes in float32.
    """

    def __init__(self, *, float16_log: bool = False):
        super().__init__()
        self.float16_log = bool(float16_log)
        self.sample_rate = MUSICNN_FRONTEND["sample_rate"]
        self.mel = MelFrontend(sample_rate=self.sample_rate, n_fft=MUSICNN_FRONTEND["n_fft"],
                               hop_length=MUSICNN_FRONTEND["hop_length"], n_mels=MUSICNN_FRONTEND["n_mels"])
        self.n_mels = self.mel.n_mels

    def power(self, y: Tensor) -> Tensor:
        """The mel power spectrogram ``[batch, 96, n_frames]`` (librosa's ``melspectrogram``), float32."""
        mel = self.mel
        with torch.autocast(device_type=y.device.type, enabled=False):
            spec = torch.stft(y.to(mel.window.dtype), n_fft=mel.n_fft, hop_length=mel.hop_length,
                              win_length=mel.n_fft, window=mel.window, center=True, pad_mode="constant",
                              return_complex=True)
            return torch.matmul(mel.mel_basis, spec.real.square() + spec.imag.square())

    def forward(self, y: Tensor) -> Tensor:
        """See the class docstring; ``n_frames = 1 + n_samples // 256``."""
        if y.ndim not in (1, 2) or y.shape[-1] == 0:
            raise ValueError(f"expected a waveform [n_samples] or [batch, n_samples], got shape {tuple(y.shape)}")
        S = self.power(y)
        with torch.autocast(device_type=y.device.type, enabled=False):
            if not self.float16_log:
                return torch.log10(10000.0 * S + 1.0)

            def r(x: Tensor) -> Tensor:  # numpy's float16 ufuncs compute in float32 and round each result
                return x.half().float()
            return r(torch.log10(r(r(10000.0 * r(S)) + 1.0)))

    def params(self) -> dict:
        """Every parameter that determines the output (JSON), for caches of what this front end makes."""
        return {**MUSICNN_FRONTEND, "log": "log10(1+10000x)", "float16_log": self.float16_log,
                "mel": self.mel.params()}


def patches(log_mel: Tensor, *, patch_frames: int = MUSICNN_FRONTEND["patch_frames"],
            pad_short: bool = True) -> Tensor:
    """Cut ``log_mel [n_mels, n_frames]`` into musicnn's patches ``[n_patches, n_mels, patch_frames]``.

    Non-overlapping, from frame 0, the last incomplete patch dropped (musicnn's ``batch_data`` with its default
    ``input_overlap=False``). A clip shorter than one patch (musicnn fails on it) is repeated to one patch when
    ``pad_short`` (musicnn's training set's ``repeat-pad``), else refused.
    """
    if log_mel.ndim != 2:
        raise ValueError(f"expected a log-mel [n_mels, n_frames], got shape {tuple(log_mel.shape)}")
    n_frames = log_mel.shape[1]
    if n_frames < patch_frames:
        if not pad_short or n_frames == 0:
            raise ValueError(f"a clip of {n_frames} frames is shorter than one {patch_frames}-frame patch")
        log_mel = log_mel.repeat(1, -(-patch_frames // n_frames))[:, :patch_frames]
        n_frames = patch_frames
    n_patches = n_frames // patch_frames
    return log_mel[:, :n_patches * patch_frames].reshape(log_mel.shape[0], n_patches, patch_frames).transpose(0, 1)
