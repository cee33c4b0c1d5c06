"""musicnn's MTT/MSD networks in torch against musicnn's own TensorFlow code, and the checkpoint reader's errors.

The expected outputs in ``tests/data/musicnn/`` were written once by ``scripts/make_musicnn_reference.py`` (musicnn
0.1.0 on TensorFlow 2.21 with ``TF_USE_LEGACY_KERAS=1``); no TensorFlow is needed here. Skipped, with the reason,
when the ``musicnn`` package (the weights) is not installed, unless ``TAGRETRIEVAL_REQUIRE_PRETRAINED=1`` (CI
installs it with ``pip install --no-deps musicnn==0.1.0`` and sets it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tagretrieval.pretrained import (INSTALL_HINT, MODELS, CheckpointError, MusicnnFrontend, MusicnnMissingError,
                                     checkpoint_prefix, load_pretrained, patches, read_checkpoint)
from tagretrieval.pretrained.checkpoint import crc32c

DATA = Path(__file__).parent / "data" / "musicnn"
CLIPS = ("tone", "noise", "chord", "loud")
MISSING = importlib.util.find_spec("musicnn") is None
if MISSING and os.environ.get("TAGRETRIEVAL_REQUIRE_PRETRAINED") == "1":
    raise RuntimeError(f"TAGRETRIEVAL_REQUIRE_PRETRAINED=1 but the musicnn weights are not installed: {INSTALL_HINT}")
needs_weights = pytest.mark.skipif(MISSING, reason=f"the musicnn weights are not installed: {INSTALL_HINT}")


def _outputs(model: str, *, float16_log: bool) -> dict[str, dict[str, np.ndarray]]:
    network = load_pretrained(model)
    frontend = MusicnnFrontend(float16_log=float16_log)
    out = {}
    for clip in CLIPS:
        y, sr = sf.read(DATA / "clips" / f"{clip}.flac", dtype="float32")
        assert sr == 16000
        with torch.no_grad():
            out[clip] = {k: v.numpy() for k, v in network(patches(frontend(torch.from_numpy(y)))).items()}
    return out


def test_crc32c_is_castagnoli():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    data = np.random.default_rng(0).integers(0, 256, 3 * 4096 + 17, dtype=np.uint8).tobytes()
    assert crc32c(data) == crc32c(data[:5000] + data[5000:])  # chunked path (3 chunks + tail) is the same CRC
    assert crc32c(data) != crc32c(data[:-1] + bytes([data[-1] ^ 1]))


@needs_weights
@pytest.mark.parametrize("model", sorted(MODELS))
def test_taggram_and_features_equal_musicnns_tensorflow_code(model):
    """float32 front end (the default) vs musicnn's code with its float16 cast removed: within 1e-4 of each
    output's scale (the pooled features reach ~60; TF's own float32 rounding is ~1e-4 there: our float64 run is
    as far from TF as our float32 run)."""
    expected = np.load(DATA / f"expected_{model}.npz")
    ours = _outputs(model, float16_log=False)
    checked = 0
    for key in expected.files:
        clip, mode, name = key.split("/")
        if mode != "float32":
            continue
        want = expected[key]
        got = ours[clip][name][:len(want)] if name != "penultimate" else ours[clip][name][:1]
        want = want if name != "penultimate" else want[:1]  # musicnn's extractor repeats patch 0's penultimate
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=key)
        checked += 1
    assert checked == len(CLIPS) * (4 if "musicnn" in model else 2)
    assert ours["chord"]["taggram"].shape == (2, 50)  # a 6.2-s clip is two 3-s patches


@needs_weights
def test_float16_mode_reproduces_musicnn_as_shipped_and_its_overflow():
    """float16_log=True rounds as musicnn does: its taggram within 1e-3 where nothing overflows (a float16 rounding
    can flip on float32 noise), and the loud clip overflows to non-finite values (musicnn's TF kernels happen to
    drop the NaNs; the float32 default gives finite values there, tested above)."""
    expected = np.load(DATA / "expected_MTT_musicnn.npz")
    ours = _outputs("MTT_musicnn", float16_log=True)
    for clip in ("tone", "noise", "chord"):
        np.testing.assert_allclose(ours[clip]["taggram"], expected[f"{clip}/float16/taggram"], rtol=0, atol=1e-3)
    assert not np.isfinite(ours["loud"]["taggram"]).all()
    y, _ = sf.read(DATA / "clips" / "loud.flac", dtype="float32")
    assert torch.isinf(MusicnnFrontend(float16_log=True)(torch.from_numpy(y))).any()
    assert torch.isfinite(MusicnnFrontend()(torch.from_numpy(y))).all()


def test_short_clips_are_repeat_padded_to_one_patch():
    log_mel = torch.arange(96 * 100, dtype=torch.float32).reshape(96, 100)
    out = patches(log_mel)
    assert out.shape == (1, 96, 187)
    assert torch.equal(out[0, :, 100:187], log_mel[:, :87])
    assert patches(torch.zeros(96, 187 * 2 + 50)).shape == (2, 96, 187)


def _copy_checkpoint(tmp_path: Path) -> str:
    source = Path(checkpoint_prefix("MTT_vgg"))
    target = tmp_path / "MTT_vgg"
    target.mkdir()
    for name in (".index", ".data-00000-of-00001"):
        shutil.copy(source / name, target / name)
    return f"{target}/"


@needs_weights
def test_truncated_or_corrupt_checkpoints_raise_one_clear_error(tmp_path):
    prefix = _copy_checkpoint(tmp_path)
    assert "1CNN/kernel" in read_checkpoint(prefix)
    data = Path(prefix + ".data-00000-of-00001")
    index = Path(prefix + ".index")
    original_data, original_index = data.read_bytes(), index.read_bytes()

    data.write_bytes(original_data[: len(original_data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(prefix)
    flipped = bytearray(original_data)
    flipped[len(flipped) // 3] ^= 0x40
    data.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="crc32c"):
        read_checkpoint(prefix)
    data.write_bytes(original_data)

    index.write_bytes(original_index[:-10])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(prefix)
    flipped = bytearray(original_index)
    flipped[100] ^= 0x01
    index.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="crc32c"):
        read_checkpoint(prefix)
    index.unlink()
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(prefix)


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a))
    with pytest.raises(MusicnnMissingError, match="pip install --no-deps musicnn==0.1.0"):
        load_pretrained("MTT_musicnn")
