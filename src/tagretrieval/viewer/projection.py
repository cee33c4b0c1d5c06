"""2-D maps of the song embeddings for the viewer: t-SNE (scikit-learn) and, when installed, UMAP."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

PROJECTIONS: tuple[str, ...] = ("tsne", "umap", "both")


def umap_available() -> bool:
    """Whether ``umap`` (the ``umap-learn`` package) can be imported."""
    return importlib.util.find_spec("umap") is not None


def methods_for(projection: str) -> list[str]:
    """The maps to compute for a ``projection`` argument of :func:`~tagretrieval.viewer.write_viewer`.

    ``"tsne"`` and ``"umap"`` give that map (``"umap"`` raises ImportError without ``umap-learn``);
    ``"both"`` gives t-SNE and UMAP, or t-SNE alone with a warning when ``umap-learn`` is missing.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; expected one of {PROJECTIONS}")
    if projection == "tsne":
        return ["tsne"]
    if umap_available():
        return ["umap"] if projection == "umap" else ["tsne", "umap"]
    if projection == "umap":
        raise ImportError("projection='umap' needs umap-learn: pip install umap-learn")
    warnings.warn("umap-learn is not installed: the viewer shows the t-SNE map only (pip install umap-learn)",
                  stacklevel=3)
    return ["tsne"]


def project(X: np.ndarray, *, method: str, seed: int) -> np.ndarray:
    """Map unit-norm rows ``X [n, D]`` to ``float64 [n, 2]`` with cosine distance, scaled into ``[0, 1]``.

    Both axes share one scale (the map keeps its aspect ratio); the longer side spans exactly ``[0, 1]``.
    Fewer than 4 rows cannot be embedded by t-SNE/UMAP: they are placed on a circle.
    """
    n = len(X)
    if n < 4:
        angle = 2 * np.pi * np.arange(n) / max(n, 1)
        xy = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (n - 1) / 3))
        xy = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                  random_state=seed).fit_transform(X)
    elif method == "umap":
        import umap

        n_neighbors = int(min(15, n - 1))
        # seeded UMAP runs single-threaded anyway; n_jobs=1 says so instead of warning about it
        xy = umap.UMAP(n_components=2, metric="cosine", n_neighbors=n_neighbors, random_state=seed,
                       n_jobs=1).fit_transform(X)
    else:
        raise ValueError(f"unknown projection method {method!r}; expected 'tsne' or 'umap'")
    xy = np.asarray(xy, dtype=np.float64)
    xy = xy - xy.min(axis=0)
    span = xy.max()
    return xy / span if span > 0 else xy
