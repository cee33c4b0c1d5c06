"""Write the expected outputs of musicnn's own TensorFlow code for tests/test_pretrained_musicnn.py.

Run once, in a side environment with TensorFlow (not a dependency of this project)::

    python -m venv /work/tfenv
    /work/tfenv/bin/pip install tensorflow-cpu tf-keras librosa "numpy<2" soundfile
    /work/tfenv/bin/pip install --no-deps musicnn==0.1.0
    TF_USE_LEGACY_KERAS=1 /work/tfenv/bin/python scripts/make_musicnn_reference.py

It synthesises four deterministic clips at 16 kHz (a quiet tone with harmonics, seeded noise, a quiet chord with
clicks lasting two patches, and a loud tone), writes them as 16-bit FLAC under ``tests/data/musicnn/clips/``, and
runs ``musicnn.extractor.extractor`` on each file with each of the four models, twice:

- ``float16``: musicnn exactly as shipped. Its ``batch_data`` casts the mel power to float16 and computes
  ``log10(10000 x + 1)`` in float16, so a mel power above 6.55 overflows to inf (the loud clip, and most real
  music at normal level) and the network's outputs become NaN.
- ``float32``: the same code with that one cast removed (the log computed in float32), which is what
  ``tagretrieval.pretrained`` computes by default.

The outputs go to ``tests/data/musicnn/expected_<model>.npz`` with keys ``<clip>/<mode>/<output>``: ``taggram``
``[n_patches, 50]`` for every model; ``max_pool``, ``mean_pool`` ``[n_patches, 753]`` and ``penultimate``
``[n_patches, 200]`` for musicnn; ``pool5`` ``[n_patches, 2, 128]`` for vgg. ``versions.json`` records the
versions that produced them. musicnn's ``extractor`` repeats the first patch's ``penultimate`` (and ``cnn1..3``)
for every later patch (its loop unpacks them under other names): only row 0 of ``penultimate`` is musicnn's
output for that patch, and the test compares only that row.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "musicnn"
MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")


def clips() -> dict[str, np.ndarray]:
    """Four deterministic test signals, float in [-1, 1] at 16 kHz."""
    rng = np.random.default_rng(20190101)
    out = {}
    t = np.arange(int(3.5 * SR)) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)
    tone = sum(np.sin(2 * np.pi * 440 * k * t) / k for k in (1, 2, 3, 5))
    out["tone"] = 0.004 * envelope * tone
    noise = rng.standard_normal(int(4.0 * SR))
    out["noise"] = 0.01 * np.convolve(noise, np.ones(8) / 8, mode="same")  # low-passed
    t = np.arange(int(6.2 * SR)) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.00))
    clicks = np.zeros_like(t)
    for start in np.arange(0, 6.2, 0.5):
        i = int(start * SR)
        clicks[i:i + 200] = np.hanning(400)[200:] * rng.standard_normal(min(200, len(t) - i))
    out["chord"] = 0.002 * chord + 0.01 * clicks
    t = np.arange(int(3.2 * SR)) / SR
    out["loud"] = 0.9 * np.tanh(3 * np.sin(2 * np.pi * 110 * t))
    return out


def main() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import librosa
    import tensorflow as tf
    import musicnn
    from musicnn import configuration as config
    from musicnn import extractor as ex

    (OUT / "clips").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, y in clips().items():
        path = OUT / "clips" / f"{name}.flac"
        sf.write(path, y, SR, subtype="PCM_16")
        paths[name] = path

    shipped = ex.batch_data

    def batch_data_float32(audio_file, n_frames, overlap):
        """musicnn's batch_data without the float16 cast (the rest verbatim)."""
        audio, sr = librosa.load(audio_file, sr=config.SR)
        audio_rep = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=config.FFT_HOP,
                                                   n_fft=config.FFT_SIZE, n_mels=config.N_MELS).T
        audio_rep = np.log10(10000 * audio_rep + 1)
        last_frame = audio_rep.shape[0] - n_frames + 1
        batch = np.stack([audio_rep[i:i + n_frames] for i in range(0, last_frame, overlap)])
        return batch, audio_rep

    for model in MODELS:
        expected = {}
        for mode, batch_data in (("float16", shipped), ("float32", batch_data_float32)):
            ex.batch_data = batch_data
            for name, path in paths.items():
                taggram, _, features = ex.extractor(str(path), model=model, extract_features=True)
                n = taggram.shape[0]
                expected[f"{name}/{mode}/taggram"] = taggram.astype(np.float32)
                if "vgg" in model:
                    expected[f"{name}/{mode}/pool5"] = features["pool5"].reshape(n, 2, 128).astype(np.float32)
                else:
                    for key in ("max_pool", "mean_pool", "penultimate"):
                        expected[f"{name}/{mode}/{key}"] = features[key].astype(np.float32)
        ex.batch_data = shipped
        np.savez_compressed(OUT / f"expected_{model}.npz", **expected)
        print(model, {k: v.shape for k, v in expected.items() if k.endswith("taggram")}, file=sys.stderr)
    versions = {"tensorflow": tf.__version__, "librosa": librosa.__version__, "numpy": np.__version__,
                "musicnn": "0.1.0", "musicnn_path": str(Path(musicnn.__file__).parent)}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")


if __name__ == "__main__":
    main()
