"""Decoding (load_audio) and the log-mel front end (MelFrontend, mel_from_file).

Parity with librosa 0.11, measured on the 4 s chirp + harmonics + noise signal below (float32 in torch 2.13
CPU): max |difference| 2.0e-4 dB over the whole spectrogram (range -47..+24 dB), 4.3e-4 dB with a silent
second in the middle (frames clamped at amin agree exactly). The tests allow 2e-3 dB.
"""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from tagretrieval.audio import AUDIO_EXTENSIONS, AudioDecodeError, MelFrontend, load_audio, mel_from_file

SR = 22050
PARITY_TOL_DB = 2e-3


def synth(*, seconds: float = 4.0, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """float32 [n_samples]: linear chirp 100 Hz -> 4 kHz, 220 Hz with 3 harmonics, white noise at -40 dB."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * (100 * t + (4000 - 100) / (2 * seconds) * t**2))
    for k in range(1, 5):
        y += 0.1 / k * np.sin(2 * np.pi * 220 * k * t)
    y += 0.01 * np.random.default_rng(seed).standard_normal(t.shape)
    return y.astype(np.float32)


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    S = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
    return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)


def peak_hz(y: np.ndarray, sample_rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(y))) * sample_rate / y.shape[0])


# --- MelFrontend -------------------------------------------------------------------------------------


@pytest.mark.parametrize("silent_gap", [False, True])
def test_frontend_matches_librosa(silent_gap):
    y = synth()
    if silent_gap:
        y[SR:2 * SR] = 0.0  # frames whose power is below amin on both sides
    expected = librosa_log_mel(y)
    ours = MelFrontend()(torch.from_numpy(y)).numpy()
    assert ours.shape == expected.shape == (128, 1 + y.shape[0] // 512)
    assert np.abs(ours - expected).max() < PARITY_TOL_DB


def test_frontend_matches_torchaudio():
    try:
        torchaudio = pytest.importorskip("torchaudio", exc_type=ImportError)
    except OSError as error:  # a torchaudio whose native library does not load
        pytest.skip(f"torchaudio does not load: {error}")
    y = torch.from_numpy(synth())
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=1024, hop_length=512, n_mels=128, power=2.0,
                                               center=True, pad_mode="constant", norm="slaney", mel_scale="slaney")
    expected = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)(mel(y))
    ours = MelFrontend()(y)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() < PARITY_TOL_DB


def test_frontend_batch_equals_one_by_one_and_frame_count():
    frontend = MelFrontend()
    ys = torch.from_numpy(np.stack([synth(seconds=1.5, seed=s) for s in range(3)]))
    batch = frontend(ys)
    assert batch.shape == (3, 128, frontend.n_frames(ys.shape[1]))
    for i in range(3):
        torch.testing.assert_close(batch[i], frontend(ys[i]), rtol=0, atol=1e-5)
    # shorter than one window still gives 1 + n // hop frames (zero padding, no reflect error)
    assert frontend(torch.zeros(100)).shape == (128, 1)


def test_frontend_floor_is_amin_and_rejects_bad_input():
    out = MelFrontend(amin=1e-10)(torch.zeros(SR))
    torch.testing.assert_close(out, torch.full((128, 1 + SR // 512), -100.0))  # 10 * log10(amin), never -inf
    with pytest.raises(ValueError, match="waveform"):
        MelFrontend()(torch.zeros(2, 3, 100))
    with pytest.raises(ValueError, match="fmax_hz"):
        MelFrontend(fmax_hz=SR)  # above Nyquist


def test_frontend_params_are_complete_and_json():
    frontend = MelFrontend(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64, fmin_hz=20.0, amin=1e-8)
    params = json.loads(json.dumps(frontend.params()))
    assert params == {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 64, "fmin_hz": 20.0,
                      "fmax_hz": 8000.0, "amin": 1e-8, "log": "power_to_db", "version": params["version"]}
    assert isinstance(params["version"], int)
    assert MelFrontend(fmax_hz=None).params() == MelFrontend(fmax_hz=SR / 2).params()  # same filterbank
    assert frontend.n_frames(16000) == 1 + 16000 // 256
    assert "mel_basis" not in frontend.state_dict()  # derived from params, not checkpointed


# --- load_audio ----------------------------------------------------------------------------------------


def test_load_audio_stereo_44k_to_mono_22k(tmp_path):
    sr_in, seconds = 44100, 1.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr_in, subtype="FLOAT")
    y = load_audio(path, sample_rate=SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.shape[0] - seconds * SR) <= 1
    assert peak_hz(y, SR) == pytest.approx(440.0, abs=SR / y.shape[0])
    # mono = mean of the channels: amplitude (0.5 + 0.3) / 2, away from the resampler's edges
    assert np.abs(y[1000:-1000]).max() == pytest.approx(0.4, abs=5e-3)


def _writable(fmt: str, subtype: str) -> bool:
    return fmt in sf.available_formats() and subtype in sf.available_subtypes(fmt)


@pytest.mark.parametrize("ext, fmt, subtype", [(".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS"),
                                               (".mp3", "MP3", "MPEG_LAYER_III")])
def test_load_audio_compressed_formats(tmp_path, ext, fmt, subtype):
    if not _writable(fmt, subtype):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    sr_in = 44100
    t = np.arange(sr_in) / sr_in
    path = tmp_path / f"tone{ext}"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t), sr_in, format=fmt, subtype=subtype)
    y = load_audio(path, sample_rate=SR)
    assert y.dtype == np.float32
    assert abs(y.shape[0] - SR) <= 0.05 * SR  # lossy codecs may add encoder delay/padding
    assert peak_hz(y, SR) == pytest.approx(1000.0, abs=2 * SR / y.shape[0])


def test_load_audio_keeps_silence(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SR), SR)
    y = load_audio(path, sample_rate=SR)
    assert y.shape == (SR,) and not y.any()


@pytest.mark.parametrize("case", ["corrupt", "empty", "header_only", "missing", "text", "nan"])
def test_load_audio_errors_name_the_path(tmp_path, case):
    path = tmp_path / {"text": "notes.txt"}.get(case, f"{case}.wav")
    if case == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "header_only":  # a wav truncated to its header: decodes to nothing
        sf.write(path, np.zeros(SR), SR, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:44])
    elif case == "text":
        path.write_text("not audio")
    elif case == "nan":
        sf.write(path, np.array([0.0, np.nan, 0.1]), SR, subtype="FLOAT")
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, sample_rate=SR)
    assert str(path) in str(info.value)
    assert info.value.path == path


def test_audio_extensions():
    assert AUDIO_EXTENSIONS == (".wav", ".flac", ".mp3", ".ogg")


def test_mel_from_file_is_frontend_of_load_audio(tmp_path):
    path = tmp_path / "tone.flac"
    sf.write(path, synth(seconds=1.0, sample_rate=16000), 16000)
    frontend = MelFrontend()
    mel = mel_from_file(path, frontend)
    y = load_audio(path, sample_rate=SR)
    assert mel.dtype == np.float32 and mel.shape == (128, frontend.n_frames(y.shape[0]))
    np.testing.assert_array_equal(mel, frontend(torch.from_numpy(y)).numpy())
