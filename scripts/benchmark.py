"""Performance goals of tagretrieval, measured (not asserted): `python scripts/benchmark.py --out bench.json`.

Sections (``--sections`` picks some):
  eval_metrics  per-tag ROC-AUC / PR-AUC / P@10 on 100 tags x 20,000 songs: ours vs a per-tag scikit-learn loop
                (goal: >= 20x faster, max abs difference <= 1e-6)
  sampler       one batch of balanced-weighted triplets (pairs + in-batch negatives), batch 128 and 1024:
                ours vs a per-row Python loop like the reference (goal: >= 20x)
  train_step    paper-size acoustic model, batch 128: training samples/s on this machine's device
  loader        the training loader on a generated store of 20,000 x 30 s tracks (fp16, fp32), 0/1/2 workers:
                crops/s and bytes read per crop, old per-file cache vs packed store (goals: >= 2,000 crops/s per
                worker, bytes read <= 1.5x the crop); scripts/bench_loader.py
  train_throughput  acoustic model, batch 128: samples/s from the real loader vs from memory, fp32/bf16,
                channels_last and compile off/on (paper size on a GPU, demo size on a CPU)
  evaluation    RetrievalResults.compute on 1,000 tags x 200,000 songs: seconds and peak memory (goal < 4 GB)
  mel           our torch log-mel front end (default threads and 1 thread) vs librosa, per 30 s clip; on a GPU too
  prepare       mel-store preparation of 200 generated 30 s MP3s vs decoding them only (goal: <= 1.5x decoding)
  retrieval     latency per query over 10k / 100k / 1M embeddings: brute force vs faiss exact vs faiss approximate
  musicnn       MTT_musicnn embeddings of the same 8 x 30 s clips: ours (torch) vs musicnn's own TensorFlow code run by
                --tf-python (a side environment with TensorFlow; goal: ours >= 2x on the same CPU); scripts/bench_musicnn.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def best_seconds(fn: Callable[[], object], *, repeats: int) -> float:
    """Best wall-clock time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_eval_metrics(*, n_tags: int = 100, n_songs: int = 20_000) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from tagretrieval.evaluation import metric_keys
    from tagretrieval.evaluation.metrics import per_tag_metrics

    rng = np.random.default_rng(0)
    relevance = rng.random((n_tags, n_songs)) < 0.05
    scores = np.round(rng.standard_normal((n_tags, n_songs)) + relevance, 3)   # rounded: many ties

    def sklearn_loop():
        out = {metric_keys.ROC_AUC: [], metric_keys.PR_AUC: [], metric_keys.p_at(10): []}
        for t in range(n_tags):
            out[metric_keys.ROC_AUC].append(roc_auc_score(relevance[t], scores[t]))
            out[metric_keys.PR_AUC].append(average_precision_score(relevance[t], scores[t]))
            top = np.argsort(-scores[t], kind="stable")[:10]
            out[metric_keys.p_at(10)].append(relevance[t, top].mean())
        return {k: np.asarray(v) for k, v in out.items()}

    ours_s = best_seconds(lambda: per_tag_metrics(scores, relevance), repeats=5)
    loop_s = best_seconds(sklearn_loop, repeats=1)
    ours, loop = per_tag_metrics(scores, relevance), sklearn_loop()
    diff = max(float(np.max(np.abs(ours[k] - loop[k]))) for k in loop)
    return {"n_tags": n_tags, "n_songs": n_songs, "ours_seconds": ours_s, "sklearn_loop_seconds": loop_s,
            "ratio": loop_s / ours_s, "max_abs_difference": diff, "goal_ratio": 20}


def bench_sampler(*, batch_sizes=(128, 1024), n_songs: int = 20_000, n_tags: int = 100, dim: int = 256) -> dict:
    from tagretrieval.data.samplers import BalancedWeightedPairSampler, PositiveIndex, choose_negatives

    rng = np.random.default_rng(0)
    labels = (rng.random((n_songs, n_tags)) < 0.03).astype(np.uint8)
    index = PositiveIndex.from_labels(labels, np.arange(n_songs))
    tag_to_songs = {t: np.flatnonzero(labels[:, t]).tolist() for t in range(n_tags)}
    song_tags = [set(np.flatnonzero(row).tolist()) for row in labels]
    out = {}
    for batch_size in batch_sizes:
        anchors, songs = torch.randn(batch_size, dim), torch.randn(batch_size, dim)
        sampler = BalancedWeightedPairSampler(batch_size=batch_size)

        def ours():
            pairs = sampler.pairs(index, rng, batch_size)
            labels_t = torch.from_numpy(labels[pairs[:, 0].astype(np.int64)]).bool()
            tag = torch.from_numpy(pairs[:, 1].astype(np.int64))
            return choose_negatives(anchors=anchors, songs=songs, candidates=~labels_t[:, tag].T, mode="weighted")

        def reference_loop():
            # per-row Python, as the reference data loader and negative choice did it
            rows = []
            for _ in range(batch_size):
                tag = random.randrange(n_tags)
                rows.append((random.choice(tag_to_songs[tag]), tag))
            a, s = anchors.numpy(), songs.numpy()
            negatives = []
            for i, (_, tag) in enumerate(rows):
                candidates = [j for j, (song, _) in enumerate(rows) if tag not in song_tags[song]]
                cos = [float(a[i] @ s[j] / (np.linalg.norm(a[i]) * np.linalg.norm(s[j]))) for j in candidates]
                weights = np.asarray([(c + 1) / 2 for c in cos])
                negatives.append(np.random.choice(candidates, p=weights / weights.sum()))
            return negatives

        ours_s = best_seconds(ours, repeats=20)
        loop_s = best_seconds(reference_loop, repeats=2 if batch_size > 256 else 5)
        out[str(batch_size)] = {"ours_seconds": ours_s, "python_loop_seconds": loop_s, "ratio": loop_s / ours_s}
    out["goal_ratio"] = 20
    return out


def bench_train_step(*, batch_size: int = 128, steps: int = 3) -> dict:
    from tagretrieval.training.losses import TripletLoss
    from tagretrieval.models import AcousticModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AcousticModel().to(device).train()          # paper size
    loss_fn = TripletLoss(margin=0.4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    mel = torch.randn(batch_size, 128, 173, device=device)
    words = torch.randn(batch_size, 300, device=device)

    def step():
        optimizer.zero_grad()
        songs = model.embed_songs(mel=mel)
        anchors = model.embed_tags(words)
        loss = loss_fn(anchors, songs, songs.roll(1, 0))
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds = best_seconds(step, repeats=steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"device": name, "batch_size": batch_size, "seconds_per_step": seconds,
            "samples_per_second": batch_size / seconds}


def bench_mel(*, seconds: float = 30.0, sample_rate: int = 22050) -> dict:
    import librosa

    from tagretrieval.audio import MelFrontend

    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32)
    frontend = MelFrontend(sample_rate=sample_rate)
    y_t = torch.from_numpy(y)

    def ours():
        with torch.no_grad():
            return frontend(y_t)

    def reference():
        S = librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=1024, hop_length=512, n_mels=128)
        return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)

    threads = torch.get_num_threads()
    ours_s, librosa_s = best_seconds(ours, repeats=5), best_seconds(reference, repeats=5)
    torch.set_num_threads(1)  # what prepare_mels uses: one clip's STFT is too small to share between threads
    try:
        ours_1_s = best_seconds(ours, repeats=5)
    finally:
        torch.set_num_threads(threads)
    diff = float(np.max(np.abs(ours().numpy() - reference())))
    out = {"clip_seconds": seconds, "torch_threads": threads, "ours_seconds_per_clip": ours_s,
           "ours_1_thread_seconds_per_clip": ours_1_s, "librosa_seconds_per_clip": librosa_s,
           "ratio": librosa_s / ours_s, "ratio_1_thread": librosa_s / ours_1_s, "max_abs_difference_db": diff,
           "load_average_1min": os.getloadavg()[0]}
    if torch.cuda.is_available():
        gpu = frontend.to("cuda")
        batch = torch.from_numpy(np.stack([y] * 64)).cuda()  # 64 clips at once, as a GPU front end would run

        def on_gpu():
            with torch.no_grad():
                gpu(batch)
            torch.cuda.synchronize()

        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_seconds_per_clip_batch_64"] = best_seconds(on_gpu, repeats=5) / 64
    return out


def bench_prepare_section() -> dict:
    from bench_prepare import bench_prepare  # scripts/ is on the path when this file runs

    return bench_prepare()


def bench_retrieval_section() -> dict:
    from bench_retrieval import bench_retrieval

    return bench_retrieval()


def bench_loader_section() -> dict:
    from bench_loader import bench_loader

    return bench_loader()


def bench_train_throughput_section() -> dict:
    from bench_loader import bench_train_throughput

    return bench_train_throughput()


def bench_musicnn_section() -> dict:
    from bench_musicnn import bench_musicnn

    return bench_musicnn()


def bench_evaluation_section() -> dict:
    from bench_loader import bench_evaluation

    return bench_evaluation()


SECTIONS = {"eval_metrics": bench_eval_metrics, "sampler": bench_sampler, "train_step": bench_train_step,
            "loader": bench_loader_section, "train_throughput": bench_train_throughput_section,
            "evaluation": bench_evaluation_section, "mel": bench_mel, "prepare": bench_prepare_section,
            "retrieval": bench_retrieval_section, "musicnn": bench_musicnn_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--tf-python", help="musicnn section: the Python of an environment with TensorFlow and musicnn")
    args = parser.parse_args()
    if args.tf_python:
        os.environ["TAGRETRIEVAL_TF_PYTHON"] = args.tf_python
    random.seed(0)
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        print(f"[benchmark] {name} ...", flush=True)
        results[name] = SECTIONS[name]()
        print(json.dumps(results[name], indent=2), flush=True)
        args.out.write_text(json.dumps(results, indent=2))  # after every section: a long run keeps its figures
    print(f"[benchmark] written to {args.out}")


if __name__ == "__main__":
    main()
