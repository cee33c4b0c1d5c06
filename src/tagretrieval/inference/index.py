"""Nearest-neighbour search by cosine similarity (config group ``index``).

Every index takes the song embeddings ``[n, D]`` once, L2-normalises them, and answers
``search(queries [n_queries, D], k) -> (scores [n_queries, k] float32, rows [n_queries, k] int64)``, best first,
where ``scores`` are cosine similarities and ``rows`` index the embeddings it was built from. ``k`` larger than
``n`` is cut to ``n``.

==================  ==========================================  ====================================================
class               how                                         when
==================  ==========================================  ====================================================
``ExactIndex``      torch matmul + ``topk`` (no extra package)  default; exact; fine up to ~1M songs on a CPU
``FaissFlatIndex``  faiss ``IndexFlatIP``                       exact too, with faiss's BLAS kernels
``FaissIVFIndex``   faiss ``IndexIVFFlat`` (k-means lists)      approximate; millions of songs, builds in seconds
``FaissHNSWIndex``  faiss ``IndexHNSWFlat`` (graph)             approximate; high recall, slow to build (minutes/1M)
==================  ==========================================  ====================================================

Approximate indexes may find fewer than ``k`` songs for a query (IVF with too few lists probed): the missing
hits have row ``-1`` and score ``-inf``. faiss is imported only when a faiss index is built (``pip install
faiss-cpu``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# ExactIndex scores at most this many (query, song) pairs at once: 32 Mi float32 = 128 MiB
_MAX_SCORES_IN_MEMORY = 1 << 25


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """``x [n, D]`` -> float32 C-contiguous rows of unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a matrix [n, dim], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class Index:
    """Base class: holds the normalised embeddings ``[n, D]``; subclasses implement
    ``_search(queries [n_queries, D] normalised, k) -> (scores, rows)``."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = normalize_rows(embeddings)  # [n, D]
        if len(self.embeddings) == 0:
            raise ValueError("cannot build an index over zero embeddings")

    @property
    def n(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar songs of every query.

        Args:
            queries: ``[n_queries, D]``, any scale (normalised here).
            k: hits per query; cut to the number of songs.
        Returns:
            ``scores`` float32 ``[n_queries, min(k, n)]`` (cosine, descending) and ``rows`` int64, same shape.
        """
        queries = normalize_rows(queries)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries are {queries.shape[1]}-d, the index holds {self.dim}-d embeddings")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(int(k), self.n)
        scores, rows = self._search(queries, k)
        return np.asarray(scores, dtype=np.float32), np.asarray(rows, dtype=np.int64)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ExactIndex(Index):
    """Brute force: ``queries @ embeddings.T`` then ``topk``, in torch, blocks of queries at a time."""

    def __init__(self, embeddings: np.ndarray) -> None:
        super().__init__(embeddings)
        self._songs = torch.from_numpy(self.embeddings)  # shares memory

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        block = max(1, _MAX_SCORES_IN_MEMORY // self.n)
        scores, rows = [], []
        with torch.no_grad():
            for start in range(0, len(queries), block):
                similarity = torch.from_numpy(queries[start:start + block]) @ self._songs.T  # [block, n]
                top = torch.topk(similarity, k, dim=1, largest=True, sorted=True)
                scores.append(top.values.numpy())
                rows.append(top.indices.numpy())
        return np.concatenate(scores), np.concatenate(rows)


def import_faiss():
    """The ``faiss`` module, or an ImportError saying how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "this index needs faiss: `pip install faiss-cpu` (or faiss-gpu), or use index=exact "
            "(brute force, no extra package)"
        ) from error
    return faiss


class _FaissIndex(Index):
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.faiss_index.search(queries, k)
        scores = np.where(rows < 0, -np.inf, scores)
        return scores, rows


class FaissFlatIndex(_FaissIndex):
    """Exact inner product on normalised vectors (faiss ``IndexFlatIP``): same hits as :class:`ExactIndex`."""

    def __init__(self, embeddings: np.ndarray) -> None:
        super().__init__(embeddings)
        faiss = import_faiss()
        self.faiss_index = faiss.IndexFlatIP(self.dim)
        self.faiss_index.add(self.embeddings)


class FaissIVFIndex(_FaissIndex):
    """Approximate: k-means splits the songs into ``n_lists`` lists; a query scans the ``n_probe`` nearest lists.

    Args:
        n_lists: number of k-means lists; None -> ``round(sqrt(n))`` (at least 1). More lists: faster search,
            slower build, lower recall at a fixed ``n_probe``.
        n_probe: lists scanned per query (``n_probe == n_lists`` is exact, and as slow as brute force).
        train_points_per_list: k-means is trained on at most ``train_points_per_list * n_lists`` songs (drawn
            with ``seed``); faiss wants at least 39 per list.
        seed: seeds the k-means sample and initialisation.
    """

    def __init__(self, embeddings: np.ndarray, *, n_lists: int | None = None, n_probe: int = 16,
                 train_points_per_list: int = 64, seed: int = 0) -> None:
        super().__init__(embeddings)
        faiss = import_faiss()
        n_lists = max(1, round(math.sqrt(self.n))) if n_lists is None else int(n_lists)
        if not 1 <= n_lists <= self.n:
            raise ValueError(f"n_lists must be in [1, n_songs={self.n}], got {n_lists}")
        if n_probe < 1:
            raise ValueError(f"n_probe must be >= 1, got {n_probe}")
        self.n_lists = n_lists
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.spherical = True  # unit-norm centroids: max inner product = nearest in angle
        n_train = min(self.n, train_points_per_list * n_lists)
        sample = np.random.default_rng(seed).choice(self.n, size=n_train, replace=False)
        index.train(self.embeddings[np.sort(sample)])
        index.add(self.embeddings)
        index.nprobe = min(n_probe, n_lists)
        self._quantizer = quantizer  # faiss does not own it: keep it alive as long as the index
        self.faiss_index = index


class FaissHNSWIndex(_FaissIndex):
    """Approximate: a hierarchical navigable small-world graph (faiss ``IndexHNSWFlat``, inner product).

    Args:
        m: neighbours per node (memory ~ ``n * m * 8`` bytes on top of the vectors).
        ef_construction: search width while building (higher: better graph, slower build).
        ef_search: search width per query (higher: better recall, slower search); at least ``k`` is used.
    """

    def __init__(self, embeddings: np.ndarray, *, m: int = 32, ef_construction: int = 40,
                 ef_search: int = 64) -> None:
        super().__init__(embeddings)
        faiss = import_faiss()
        if min(m, ef_construction, ef_search) < 1:
            raise ValueError(f"m, ef_construction and ef_search must be >= 1, got {m}, {ef_construction}, {ef_search}")
        self.ef_search = ef_search
        self.faiss_index = faiss.IndexHNSWFlat(self.dim, m, faiss.METRIC_INNER_PRODUCT)
        self.faiss_index.hnsw.efConstruction = ef_construction
        self.faiss_index.add(self.embeddings)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.faiss_index.hnsw.efSearch = max(self.ef_search, k)
        return super()._search(queries, k)

