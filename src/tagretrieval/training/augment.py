"""Augmentation of training log-mels (config group ``augment``), on the device, inside the training step.

Training crops arrive in the model's layout (``[B, n_mels, T]``, or ``[B, C, n_mels, T]`` with ``train_chunks``
crops per song) as ``10 log10`` power in dB; each transform is a few tensor operations on the whole batch, drawn from
a generator the training module seeds per step (a resumed run draws the same augmentations).

===================  ==========================================================  ==========================
transform            what                                                        changes the labels?
===================  ==========================================================  ==========================
``gain_db``          a level offset per song, uniform in ``[-gain_db, gain_db]``  no
``time_masks``       that many spans of up to ``time_mask_frames`` frames per     no
                     crop, set to the crop's mean (SpecAugment)
``freq_masks``       that many bands of up to ``freq_mask_bins`` mel bins         no
``mix_probability``  a song mixed (in the power domain) with another song of      the mix carries both songs'
                     the batch that shares none of its tags, the other at a       tags
                     level in ``mix_level_db``
``pitch_shift_bins`` a shift of the mel axis by up to that many bins (about a     pitch and key tags: off by
                     semitone per bin in the middle register)                    default, never for them
``time_stretch``     the time axis resampled by a factor in ``1 +- time_stretch`` tempo tags: off by default
===================  ==========================================================  ==========================

Pitch shifts move pitch-class tags (notes, keys) and time stretches move tempo classes: leave them at 0 for such
vocabularies (mode and meter survive both, but the dev set's tempo classes do not survive a stretch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MelAugment"]

_DB_TO_LOG = math.log(10.0) / 10.0  # dB of power -> natural log of power


class MelAugment:
    """Random transforms of a batch of training log-mels (module docstring); all off at 0."""

    def __init__(self, *, gain_db: float = 0.0, time_masks: int = 0, time_mask_frames: int = 0, freq_masks: int = 0,
                 freq_mask_bins: int = 0, mix_probability: float = 0.0, mix_level_db: Sequence[float] = (-12.0, 0.0),
                 pitch_shift_bins: int = 0, time_stretch: float = 0.0) -> None:
        if gain_db < 0 or time_masks < 0 or time_mask_frames < 0 or freq_masks < 0 or freq_mask_bins < 0:
            raise ValueError("gain_db, time_masks, time_mask_frames, freq_masks and freq_mask_bins must be >= 0")
        if not 0.0 <= mix_probability <= 1.0:
            raise ValueError(f"mix_probability must be in [0, 1], got {mix_probability}")
        low, high = (float(v) for v in mix_level_db)
        if low > high:
            raise ValueError(f"mix_level_db must be [low, high] with low <= high, got {list(mix_level_db)}")
        if pitch_shift_bins < 0 or not 0.0 <= time_stretch < 1.0:
            raise ValueError("pitch_shift_bins must be >= 0 and time_stretch in [0, 1)")
        self.gain_db, self.time_masks, self.time_mask_frames = float(gain_db), time_masks, time_mask_frames
        self.freq_masks, self.freq_mask_bins = freq_masks, freq_mask_bins
        self.mix_probability, self.mix_level_db = float(mix_probability), (low, high)
        self.pitch_shift_bins, self.time_stretch = pitch_shift_bins, float(time_stretch)

    @property
    def active(self) -> bool:
        return bool(self.gain_db or (self.time_masks and self.time_mask_frames)
                    or (self.freq_masks and self.freq_mask_bins) or self.mix_probability or self.pitch_shift_bins
                    or self.time_stretch)

    def describe(self) -> str:
        parts = []
        if self.gain_db:
            parts.append(f"gain +-{self.gain_db:g} dB")
        if self.time_masks and self.time_mask_frames:
            parts.append(f"{self.time_masks} time mask(s) <= {self.time_mask_frames} frames")
        if self.freq_masks and self.freq_mask_bins:
            parts.append(f"{self.freq_masks} frequency mask(s) <= {self.freq_mask_bins} bins")
        if self.mix_probability:
            parts.append(f"mix {self.mix_probability:.0%} of songs with a song of disjoint tags at "
                         f"{self.mix_level_db[0]:g}..{self.mix_level_db[1]:g} dB")
        if self.pitch_shift_bins:
            parts.append(f"pitch shift <= {self.pitch_shift_bins} mel bins")
        if self.time_stretch:
            parts.append(f"time stretch x(1 +- {self.time_stretch:g})")
        return ", ".join(parts) or "none"

    def __call__(self, mel: Tensor, labels: Tensor, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented ``(mel, labels)``.

        Args:
            mel: float log-mels ``Tensor[B, n_mels, T]`` or ``Tensor[B, C, n_mels, T]`` (C crops per song).
            labels: ``Tensor[B, n_tags]`` multi-hot float.
            generator: on ``mel``'s device.
        Returns:
            ``mel`` of the same shape, ``labels [B, n_tags]`` (a mixed song carries both songs' tags).
        """
        if mel.dim() not in (3, 4):
            raise ValueError(f"mel must be [B, n_mels, T] or [B, C, n_mels, T], got {list(mel.shape)}")
        shape = mel.shape
        x = mel.reshape(shape[0], -1, shape[-2], shape[-1]).float()  # [B, C, F, T]
        if self.mix_probability:
            x, labels = self._mix(x, labels, generator)
        if self.gain_db:
            x = x + self._uniform((x.shape[0], 1, 1, 1), -self.gain_db, self.gain_db, x, generator)
        if self.pitch_shift_bins or self.time_stretch:
            x = self._warp(x, generator)
        if self.time_masks and self.time_mask_frames:
            x = self._mask(x, axis=-1, count=self.time_masks, width=self.time_mask_frames, generator=generator)
        if self.freq_masks and self.freq_mask_bins:
            x = self._mask(x, axis=-2, count=self.freq_masks, width=self.freq_mask_bins, generator=generator)
        return x.reshape(shape).to(mel.dtype), labels

    @staticmethod
    def _uniform(size: tuple[int, ...], low: float, high: float, like: Tensor, generator: torch.Generator) -> Tensor:
        return low + (high - low) * torch.rand(size, generator=generator, device=like.device, dtype=like.dtype)

    def _mix(self, x: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Each song, with probability ``mix_probability``, plus its partner ``perm[b]`` (the batch rolled by a random
        shift, never the song itself) if their tags are disjoint: power ``P_b + g P_perm[b]`` (``g`` from
        ``mix_level_db``), labels the union."""
        batch = x.shape[0]
        if batch < 2:
            return x, labels
        shift = torch.randint(1, batch, (1,), generator=generator, device=x.device)
        perm = (torch.arange(batch, device=x.device) + shift) % batch
        disjoint = (labels * labels[perm]).sum(dim=1) == 0
        chosen = disjoint & (torch.rand(batch, generator=generator, device=x.device) < self.mix_probability)
        level = self._uniform((batch, 1, 1, 1), *self.mix_level_db, x, generator)
        mixed = torch.logaddexp(x * _DB_TO_LOG, (x[perm] + level) * _DB_TO_LOG) / _DB_TO_LOG
        x = torch.where(chosen[:, None, None, None], mixed, x)
        labels = torch.where(chosen[:, None], torch.maximum(labels, labels[perm]), labels)
        return x, labels

    def _warp(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Shift the mel axis by an integer number of bins and/or resample the time axis, per crop (bilinear; the
        edges are repeated)."""
        batch, n_chunks, n_mels, n_frames = x.shape
        flat = x.reshape(batch * n_chunks, 1, n_mels, n_frames)
        n = flat.shape[0]
        shift = torch.zeros(n, device=x.device, dtype=x.dtype)
        if self.pitch_shift_bins:
            shift = torch.randint(-self.pitch_shift_bins, self.pitch_shift_bins + 1, (n,), generator=generator,
                                  device=x.device).to(x.dtype)
        rate = torch.ones(n, device=x.device, dtype=x.dtype)
        if self.time_stretch:
            rate = self._uniform((n,), 1.0 - self.time_stretch, 1.0 + self.time_stretch, x, generator)
        # grid_sample's normalised coordinates: -1 is the first frame/bin, +1 the last (align_corners=True)
        frames = torch.linspace(-1.0, 1.0, n_frames, device=x.device, dtype=x.dtype)
        bins = torch.linspace(-1.0, 1.0, n_mels, device=x.device, dtype=x.dtype)
        time = (frames[None, :] + 1.0) * rate[:, None] - 1.0                          # [n, T]: read faster or slower
        freq = bins[None, :] - shift[:, None] * 2.0 / max(n_mels - 1, 1)              # [n, F]: shift up or down
        grid = torch.stack([time[:, None, :].expand(n, n_mels, n_frames),
                            freq[:, :, None].expand(n, n_mels, n_frames)], dim=-1)     # [n, F, T, 2] (x=time, y=freq)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape(batch, n_chunks, n_mels, n_frames)

    def _mask(self, x: Tensor, *, axis: int, count: int, width: int, generator: torch.Generator) -> Tensor:
        """``count`` spans of ``0..width`` positions along ``axis`` per crop, set to the crop's mean."""
        batch, n_chunks = x.shape[:2]
        size = x.shape[axis]
        positions = torch.arange(size, device=x.device)
        masked = torch.zeros(batch, n_chunks, size, dtype=torch.bool, device=x.device)
        for _ in range(count):
            span = torch.randint(0, min(width, size) + 1, (batch, n_chunks, 1), generator=generator, device=x.device)
            start = (torch.rand((batch, n_chunks, 1), generator=generator, device=x.device) * (size - span + 1)).long()
            masked |= (positions >= start) & (positions < start + span)
        fill = x.mean(dim=(-2, -1), keepdim=True)
        mask = masked[:, :, None, :] if axis == -1 else masked[:, :, :, None]
        return torch.where(mask, fill, x)
