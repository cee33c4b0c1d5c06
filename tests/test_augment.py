"""Training-mel augmentation: each transform against values derived by hand, labels of mixed songs, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from tagretrieval.training.augment import MelAugment


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nothing_changes_when_every_transform_is_off():
    mel, labels = torch.randn(4, 16, 40), torch.eye(4)
    augment = MelAugment()
    assert not augment.active and augment.describe() == "none"
    out, out_labels = augment(mel, labels, generator=generator())
    assert torch.equal(out, mel) and torch.equal(out_labels, labels)


def test_gain_is_one_offset_per_song_within_bounds_and_for_all_its_crops():
    mel = torch.randn(8, 3, 16, 40)  # 3 crops per song
    out, _ = MelAugment(gain_db=6.0)(mel, torch.eye(8), generator=generator())
    offset = out - mel
    per_song = offset[:, :1, :1, :1]
    assert torch.allclose(offset, per_song.expand_as(offset), atol=1e-5)  # the same dB offset everywhere in a song
    assert float(per_song.abs().max()) <= 6.0 and float(per_song.std()) > 0.5


def test_masks_set_spans_of_bounded_width_to_the_crop_mean():
    mel = torch.randn(16, 32, 60)
    out, _ = MelAugment(time_masks=1, time_mask_frames=10)(mel, torch.eye(16), generator=generator(1))
    for crop, original in zip(out, mel):
        changed = (crop != original).any(dim=0)               # frames touched
        assert int(changed.sum()) <= 10
        if changed.any():
            frames = changed.nonzero().flatten()
            assert int(frames.max() - frames.min()) + 1 == int(changed.sum())  # one contiguous span
            assert torch.allclose(crop[:, changed], original.mean().expand(32, int(changed.sum())))
    out, _ = MelAugment(freq_masks=2, freq_mask_bins=5)(mel, torch.eye(16), generator=generator(2))
    bands = (out != mel).any(dim=-1)                           # [16, 32] bins touched per crop
    assert int(bands.sum(dim=1).max()) <= 10 and bool(bands.any())


def test_mixing_adds_powers_of_songs_with_disjoint_tags_and_unites_their_labels():
    a_db, b_db = -20.0, -26.0
    mel = torch.stack([torch.full((8, 20), a_db), torch.full((8, 20), b_db)])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    out, out_labels = MelAugment(mix_probability=1.0, mix_level_db=[0.0, 0.0])(mel, labels, generator=generator())
    expected = 10 * math.log10(10 ** (a_db / 10) + 10 ** (b_db / 10))  # the sum of the two powers, in dB
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-4)
    assert torch.equal(out_labels, torch.ones(2, 3))
    # songs that share a tag are never mixed
    shared = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    out, out_labels = MelAugment(mix_probability=1.0)(mel, shared, generator=generator())
    assert torch.equal(out, mel) and torch.equal(out_labels, shared)


def test_pitch_shift_moves_the_mel_axis_by_whole_bins_and_stretch_rate_one_is_identity():
    mel = torch.arange(12.0)[None, :, None].expand(64, 12, 30).contiguous()  # bin i holds the value i
    out, _ = MelAugment(pitch_shift_bins=2)(mel, torch.eye(64), generator=generator())
    shifts = (out[:, 5, 0] - 5.0).round()                                   # away from the edges: value i - k
    assert set(shifts.tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0} and len(set(shifts.tolist())) > 1
    assert torch.allclose(out[:, 3:9, :], mel[:, 3:9, :] + shifts[:, None, None], atol=1e-4)
    ramp = torch.arange(30.0)[None, None, :].expand(64, 12, 30).contiguous()  # frame j holds the value j
    stretched, _ = MelAugment(time_stretch=0.2)(ramp, torch.eye(64), generator=generator())
    rate = stretched[:, 0, 10] / 10.0                                        # frame 10 reads frame 10 * rate
    assert float(rate.min()) >= 0.8 - 1e-4 and float(rate.max()) <= 1.2 + 1e-4 and float(rate.std()) > 0.01
    assert torch.allclose(stretched[:, :, :20], ramp[:, :, :20] * rate[:, None, None], atol=1e-3)


def test_same_generator_seed_same_augmentation_and_bad_settings_are_refused():
    augment = MelAugment(gain_db=3.0, time_masks=2, time_mask_frames=8, freq_masks=1, freq_mask_bins=4,
                         mix_probability=0.5, pitch_shift_bins=1, time_stretch=0.05)
    mel, labels = torch.randn(6, 2, 16, 40), torch.eye(6)
    first, second = augment(mel, labels, generator=generator(5)), augment(mel, labels, generator=generator(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], augment(mel, labels, generator=generator(6))[0])
    with pytest.raises(ValueError, match="mix_probability"):
        MelAugment(mix_probability=1.5)
    with pytest.raises(ValueError, match="time_stretch"):
        MelAugment(time_stretch=1.0)
