"""Mel-cache preparation speed vs just decoding the same MP3s (section ``prepare`` of scripts/benchmark.py).

    python scripts/bench_prepare.py [--n-files 200] [--workdir DIR] [--out bench_prepare.json]

Generates ``n_files`` 30 s MP3s like FMA's clips (mostly 44.1 kHz stereo, some 48 kHz stereo and 22.05 kHz
mono; 320 kbit/s CBR; tones plus noise), once: ``--workdir`` keeps them for the next run (encoding is the slow
part, ~3 s per file). Then times, on the same files:

- ``decode``: ``soundfile.read`` of every file and nothing else (the floor: an import must decode);
- ``prepare``: :func:`tagretrieval.audio.prepare_mels` into an empty mel store (decode, mono mix, soxr
  resampling to 22,050 Hz, log-mel, append to the packed store), with the default front end;

both in one process (``serial``: ``num_workers=0``) and in ``n_workers`` processes. Goal: prepare time
<= 1.5 x decode time. Wall-clock times suffer on a shared machine; ``cpu_ratio`` (CPU seconds of this process
and its joined workers, prepare / decode) is the load-independent view of the same comparison.
``stages_ms`` breaks one file's preparation down (mean over ``n_profile`` files):
decode, mono mix, resampling, log-mel with torch's default thread count and with one thread, store append.
The machine's load average is recorded: on a shared machine, multi-threaded torch suffers most.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_RATIO = 1.5
GENERATOR_VERSION = 1
FORMATS = ((44100, 2), (44100, 2), (44100, 2), (48000, 2), (22050, 1))  # (sample rate, channels), cycled


def _clip(index: int, *, seconds: float, sample_rate: int, channels: int) -> np.ndarray:
    """A music-like test signal ``float32 [n_samples, channels]``: a few harmonic tones with vibrato, plus noise."""
    rng = np.random.default_rng(index)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = np.zeros_like(t)
    for f0 in rng.uniform(80, 800, size=3):
        phase = 2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
        y += sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
    y = 0.6 * y / np.abs(y).max() + 0.02 * rng.standard_normal(len(t))
    return np.repeat(y[:, None], channels, axis=1).astype(np.float32)


def _write_mp3(args: tuple[int, str, float]) -> None:
    import soundfile as sf

    index, path, seconds = args
    sample_rate, channels = FORMATS[index % len(FORMATS)]
    tmp = f"{path}.tmp.mp3"
    sf.write(tmp, _clip(index, seconds=seconds, sample_rate=sample_rate, channels=channels), sample_rate,
             format="MP3", compression_level=0.0, bitrate_mode="CONSTANT")
    os.replace(tmp, path)


def generate_mp3s(folder: Path, *, n_files: int, seconds: float, n_workers: int) -> tuple[list[Path], float]:
    """``n_files`` MP3s in ``folder`` (reused when present and made with the same settings); (paths, seconds spent)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"version": GENERATOR_VERSION, "seconds": seconds, "formats": FORMATS}
    spec_path = folder / "generator.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(json.dumps(spec)):
        raise ValueError(f"{folder} holds files generated with other settings; use another --workdir")
    spec_path.write_text(json.dumps(spec))
    paths = [folder / f"{i:06d}.mp3" for i in range(n_files)]
    todo = [(i, str(p), seconds) for i, p in enumerate(paths) if not p.exists()]
    start = time.perf_counter()
    if todo:
        with cf.ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_mp3, todo))
    return paths, time.perf_counter() - start


def _decode(path: str) -> int:
    import soundfile as sf

    return sf.read(path, dtype="float32", always_2d=True)[0].shape[0]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished (joined) child processes so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_decode(paths: list[Path], *, n_workers: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds to decode every file (``n_workers == 0``: in this process)."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    if n_workers == 0:
        for path in paths:
            _decode(str(path))
    else:
        # pool start-up is measured, as it is in prepare_mels (whose workers also import torch)
        with cf.ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_decode, [str(p) for p in paths], chunksize=4))
    return time.perf_counter() - start, cpu_seconds() - cpu_start


def time_prepare(paths: list[Path], cache_dir: Path, *, n_workers: int) -> tuple[float, float, int]:
    """Wall-clock and CPU seconds of ``prepare_mels`` into an empty cache, and how many mels it computed."""
    from tagretrieval.audio import MelFrontend, MelStore, cache_params, prepare_mels

    shutil.rmtree(cache_dir, ignore_errors=True)
    frontend = MelFrontend()
    cache = MelStore(cache_dir, frontend_params=cache_params(frontend))
    start, cpu_start = time.perf_counter(), cpu_seconds()
    outcome = prepare_mels(cache, [(p.stem, p) for p in paths], frontend, num_workers=n_workers, progress=False)
    return time.perf_counter() - start, cpu_seconds() - cpu_start, outcome.n_computed


def profile_stages(paths: list[Path], cache_dir: Path) -> dict[str, float]:
    """Mean milliseconds per file of each stage of one file's preparation (as in ``audio.cache``)."""
    import soundfile as sf
    import soxr
    import torch

    from tagretrieval.audio import MelFrontend, MelStore, cache_params

    frontend = MelFrontend()
    cache = MelStore(cache_dir, frontend_params=cache_params(frontend))
    threads = torch.get_num_threads()
    totals: dict[str, float] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        totals[name] = totals.get(name, 0.0) + 1000 * (time.perf_counter() - start)
        return out

    def mel_one_thread(y: np.ndarray) -> np.ndarray:
        torch.set_num_threads(1)
        try:
            return frontend(torch.from_numpy(y)).numpy()
        finally:
            torch.set_num_threads(threads)

    with torch.no_grad():
        for path in paths:
            data, sr = timed("decode", lambda p: sf.read(p, dtype="float32", always_2d=True), path)
            weights = np.full(data.shape[1], 1.0 / data.shape[1], dtype=np.float32)
            y = timed("mono_mix", np.matmul, data, weights)  # as audio.io.load_audio does
            if sr != frontend.sample_rate:
                y = timed("resample", soxr.resample, y, sr, frontend.sample_rate, "HQ")
            mel = timed(f"mel_{threads}_threads", lambda x: frontend(torch.from_numpy(x)).numpy(), y)
            timed("mel_1_thread", mel_one_thread, y)
            with cache.writer() as writer:  # one commit per file here: an upper bound of the write's cost
                timed("write", writer.add, path.stem, mel)
    # resampling only happens for files not at 22,050 Hz: its mean is over all files, as the other stages'
    return {name: total / len(paths) for name, total in totals.items()}


def bench_prepare(*, n_files: int = 200, seconds: float = 30.0, n_workers: int = 2, n_profile: int = 20,
                  workdir: str | Path | None = None) -> dict:
    """Files per second of mel-cache preparation vs decoding only, serial and with ``n_workers`` processes."""
    import torch

    import tagretrieval.audio  # noqa: F401  (imported before any clock starts: torch, librosa, soxr)

    scratch = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    folder = Path(workdir) if workdir is not None else scratch / "mp3"
    try:
        paths, generate_s = generate_mp3s(folder, n_files=n_files, seconds=seconds, n_workers=max(1, n_workers))
        out: dict = {"n_files": n_files, "clip_seconds": seconds, "generate_seconds": generate_s,
                     "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "load_average_1min_before": os.getloadavg()[0], "goal_ratio": GOAL_RATIO}
        for label, workers in (("serial", 0), (f"{n_workers}_workers", n_workers)):
            decode_s, decode_cpu_s = time_decode(paths, n_workers=workers)
            prepare_s, prepare_cpu_s, n_computed = time_prepare(paths, scratch / "cache", n_workers=workers)
            assert n_computed == n_files, f"prepare computed {n_computed} of {n_files} mels"
            out[label] = {"decode_seconds": decode_s, "prepare_seconds": prepare_s,
                          "decode_files_per_second": n_files / decode_s,
                          "prepare_files_per_second": n_files / prepare_s, "ratio": prepare_s / decode_s,
                          "goal_met": prepare_s / decode_s <= GOAL_RATIO,
                          "decode_cpu_seconds": decode_cpu_s, "prepare_cpu_seconds": prepare_cpu_s,
                          "cpu_ratio": prepare_cpu_s / decode_cpu_s}
        out["stages_ms"] = profile_stages(paths[:n_profile], scratch / "profile_cache")
        out["load_average_1min_after"] = os.getloadavg()[0]
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--workdir", help="keep the generated MP3s here (reused by later runs)")
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args()
    results = bench_prepare(n_files=args.n_files, seconds=args.seconds, n_workers=args.n_workers,
                            workdir=args.workdir)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
