"""musicnn in torch vs musicnn's own TensorFlow code: clips/s embedding the same clips (``benchmark.py --sections
musicnn``), and the cost per clip of the import step that computes ``song_features=musicnn``.

Ours: :class:`tagretrieval.pretrained.embedder.MusicnnEmbedder` (decode at 16 kHz, musicnn's front end, the network
on 3-s patches, mean), the path of ``song_features=musicnn``. Theirs: ``musicnn.extractor.extractor(file,
model=..., extract_features=True)``, as musicnn's README calls it, run by the Python of a side environment that has
TensorFlow (``--tf-python`` or ``TAGRETRIEVAL_TF_PYTHON``; TensorFlow is never a dependency of ours): it needs
``tensorflow-cpu``, ``tf-keras`` and ``musicnn`` there, and ``TF_USE_LEGACY_KERAS=1`` (set here). Without one, only
ours is measured, and the result says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

CLIP_SECONDS = 30.0
N_CLIPS = 8
MODEL = "MTT_musicnn"

_THEIRS = r"""
import json, sys, time
from musicnn.extractor import extractor
files, model = json.loads(sys.argv[1]), sys.argv[2]
extractor(files[0], model=model, extract_features=True)  # warm-up: imports, the first graph
start = time.perf_counter()
for path in files:
    extractor(path, model=model, extract_features=True)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def _clips(folder: Path, *, n: int, seconds: float, sample_rate: int = 22050) -> list[Path]:
    """``n`` clips of tones and noise at ``sample_rate`` (decoding and resampling are part of both paths)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    paths = []
    for i in range(n):
        y = 0.2 * np.sin(2 * np.pi * (110 * (i + 1)) * t) + 0.05 * rng.standard_normal(t.shape)
        paths.append(folder / f"clip{i}.wav")
        sf.write(paths[-1], y.astype(np.float32), sample_rate)
    return paths


def _theirs(python: str, files: list[Path]) -> dict:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([python, "-c", _THEIRS, json.dumps([str(f) for f in files]), MODEL], env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_musicnn(*, n_clips: int = N_CLIPS, clip_seconds: float = CLIP_SECONDS, tf_python: str | None = None) -> dict:
    from tagretrieval.pretrained.embedder import MusicnnEmbedder

    tf_python = tf_python or os.environ.get("TAGRETRIEVAL_TF_PYTHON")
    with tempfile.TemporaryDirectory() as tmp:
        files = _clips(Path(tmp), n=n_clips, seconds=clip_seconds)
        embedder = MusicnnEmbedder(model=MODEL, layer="penultimate")
        embedder(embedder.load(files[0]))  # warm-up: the weights, the first forward pass
        start = time.perf_counter()
        for path in files:
            embedder(embedder.load(path))
        ours_s = time.perf_counter() - start
        out = {"model": MODEL, "n_clips": n_clips, "clip_seconds": clip_seconds, "torch_threads": torch.get_num_threads(),
               "ours_clips_per_second": n_clips / ours_s, "ours_seconds_per_1000_clips": 1000 * ours_s / n_clips,
               "load_average_1min": os.getloadavg()[0]}
        if torch.cuda.is_available():
            gpu = MusicnnEmbedder(model=MODEL, layer="penultimate", device="cuda")
            gpu(gpu.load(files[0]))
            start = time.perf_counter()
            for path in files:
                gpu(gpu.load(path))
            torch.cuda.synchronize()
            out["gpu"] = torch.cuda.get_device_name(0)
            out["ours_gpu_clips_per_second"] = n_clips / (time.perf_counter() - start)
        if tf_python is None:
            out["musicnn_tf"] = "not measured: no --tf-python / TAGRETRIEVAL_TF_PYTHON with TensorFlow and musicnn"
            return out
        theirs = _theirs(tf_python, files)
        if "error" in theirs:
            out["musicnn_tf"] = f"failed: {theirs['error']}"
            return out
        out["musicnn_tf_clips_per_second"] = n_clips / theirs["seconds"]
        out["speedup"] = out["ours_clips_per_second"] / out["musicnn_tf_clips_per_second"]
    return out


if __name__ == "__main__":
    print(json.dumps(bench_musicnn(tf_python=sys.argv[1] if len(sys.argv) > 1 else None), indent=2))
