"""Retrieval latency: brute force (torch) vs faiss exact vs faiss approximate (IVF), on random 256-d embeddings.

``bench_retrieval() -> dict`` is the ``retrieval`` section of ``scripts/benchmark.py``; run alone with
``python scripts/bench_retrieval.py [--out bench_retrieval.json]``.

For 10k, 100k and 1M songs it measures, per index (:mod:`tagretrieval.inference.index`): the build time, the
latency of one query (median of ``repeats`` single-query searches, ms) and the time per query when
``n_queries`` are searched in one call (ms), plus the recall@10 of the approximate index against exact search.

The songs are a random mixture: 1,000 Gaussian cluster centres in 256-d, every song a centre plus isotropic
noise of ``noise`` times the centres' scale, queries drawn the same way. Exact search does not care about the
distribution; an approximate index does: on structureless i.i.d. Gaussian vectors (its worst case, reported
as ``recall_at_10_iid`` for the sizes up to ``iid_max_n``) the same IVF settings find far fewer true
neighbours. Trained embeddings have structure (tags, artists), so real recall lies in between: measure it
on your own embeddings (export them with ``mode=export``) before choosing ``n_probe``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _median_ms(fn, queries: np.ndarray, *, repeats: int) -> float:
    """Median latency in ms of ``fn(query [1, D])`` over ``repeats`` different queries (after one warm-up)."""
    fn(queries[:1])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(queries[i % len(queries):i % len(queries) + 1])
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _mixture(n: int, *, centers: torch.Tensor, noise: float, generator: torch.Generator) -> np.ndarray:
    """``n`` points ``centre + noise * N(0, I)``, float32 ``[n, D]``."""
    picks = torch.randint(0, len(centers), (n,), generator=generator)
    points = torch.randn(n, centers.shape[1], generator=generator).mul_(noise).add_(centers[picks])
    return points.numpy()


def _recall(rows: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(rows, truth)]))


def _measure(build, songs: np.ndarray, queries: np.ndarray, *, k: int, repeats: int) -> tuple[dict, np.ndarray]:
    start = time.perf_counter()
    index = build(songs)
    build_s = time.perf_counter() - start
    single_ms = _median_ms(lambda q: index.search(q, k), queries, repeats=repeats)
    start = time.perf_counter()
    _, rows = index.search(queries, k)
    batch_ms = 1e3 * (time.perf_counter() - start) / len(queries)
    return {"build_s": build_s, "ms_per_query_single": single_ms, "ms_per_query_batched": batch_ms}, rows


def bench_retrieval(*, sizes=(10_000, 100_000, 1_000_000), dim: int = 256, n_queries: int = 100, k: int = 10,
                    repeats: int = 5, noise: float = 1.5, n_probe: int = 16, iid_max_n: int = 100_000,
                    seed: int = 0) -> dict:
    """Latency (ms per query) and recall@10 of :class:`ExactIndex`, :class:`FaissFlatIndex`, :class:`FaissIVFIndex`.

    Returns ``{"<n>": {"exact_torch": {...}, "faiss_flat": {...}, "faiss_ivf": {..., "recall_at_10": r}}, ...}``;
    each index entry has ``build_s``, ``ms_per_query_single`` and ``ms_per_query_batched`` (``n_queries`` per
    call). Needs faiss (``pip install faiss-cpu``).
    """
    from tagretrieval.inference.index import ExactIndex, FaissFlatIndex, FaissIVFIndex

    def ivf(x):
        return FaissIVFIndex(x, n_probe=n_probe, seed=seed)

    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(1000, dim, generator=generator)
    out: dict = {"dim": dim, "k": k, "n_queries": n_queries, "noise": noise, "n_clusters": 1000,
                 "ivf": {"n_lists": "round(sqrt(n))", "n_probe": n_probe}, "torch_threads": torch.get_num_threads()}
    start_all = time.perf_counter()
    for n in sizes:
        songs = _mixture(n, centers=centers, noise=noise, generator=generator)
        queries = _mixture(n_queries, centers=centers, noise=noise, generator=generator)
        result = {}
        result["exact_torch"], truth = _measure(ExactIndex, songs, queries, k=k, repeats=repeats)
        result["faiss_flat"], flat_rows = _measure(FaissFlatIndex, songs, queries, k=k, repeats=repeats)
        result["faiss_flat"]["recall_at_10"] = _recall(flat_rows, truth)
        result["faiss_ivf"], ivf_rows = _measure(ivf, songs, queries, k=k, repeats=repeats)
        result["faiss_ivf"]["recall_at_10"] = _recall(ivf_rows, truth)
        del songs
        if n <= iid_max_n:   # structureless data: the approximate index's worst case
            songs = torch.randn(n, dim, generator=generator).numpy()
            queries = torch.randn(n_queries, dim, generator=generator).numpy()
            _, truth = ExactIndex(songs).search(queries, k)
            _, rows = ivf(songs).search(queries, k)
            result["faiss_ivf"]["recall_at_10_iid"] = _recall(rows, truth)
            del songs
        out[str(n)] = result
        print(f"[retrieval] n={n}: {json.dumps(result)}", flush=True)
    out["total_seconds"] = time.perf_counter() - start_all
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    result = bench_retrieval()
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
