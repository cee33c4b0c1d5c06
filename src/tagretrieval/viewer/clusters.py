"""Spherical k-means of song embeddings, and what each cluster is made of (tag counts, a bar chart).

Spherical k-means is written here rather than taken from scikit-learn: ``KMeans`` minimises euclidean
distance to *un-normalised* centroids, while retrieval ranks by cosine, so the centroid of a cluster
must be the normalised mean direction. The loop is 20 lines of numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tagretrieval.runtime.files import atomic_write

N_TRACKS = "n_tracks"


def normalise_rows(X: np.ndarray, *, names: Sequence[str] | None = None) -> np.ndarray:
    """``float64 [n, D]`` rows of ``X`` scaled to unit L2 norm.

    Raises:
        ValueError: a row holds NaN/inf or has zero norm (named by ``names[i]`` when given).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"expected a non-empty 2-D array [n, D], got shape {X.shape}")
    norms = np.linalg.norm(X, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = [str(names[i]) if names is not None else str(i) for i in rows[:20]]
        more = f" ... ({len(rows)} in all)" if len(rows) > 20 else ""
        raise ValueError(f"embedding rows with NaN/inf or zero norm: {', '.join(shown)}{more}")
    return X / norms[:, None]


def _kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with cosine distance ``1 - x.c``: ``[k, D]`` rows of ``X``."""
    centroids = [X[rng.integers(len(X))]]
    distance = 1.0 - X @ centroids[0]
    for _ in range(1, k):
        weights = np.clip(distance, 0.0, None)
        total = weights.sum()
        i = rng.choice(len(X), p=weights / total) if total > 0 else rng.integers(len(X))
        centroids.append(X[i])
        distance = np.minimum(distance, 1.0 - X @ X[i])
    return np.stack(centroids)


def spherical_kmeans(X: np.ndarray, k: int, seed: int = 0, *, n_init: int = 4, max_iter: int = 100,
                     tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the directions of ``X``: maximise the summed cosine of each row to its centroid.

    Args:
        X: ``[n, D]`` embeddings, any scale (rows are normalised first).
        k: number of clusters, ``1 <= k <= n``.
        seed: seeds the k-means++ initialisations.
        n_init: restarts; the one with the largest summed cosine is kept.
        max_iter: iterations per restart.
        tol: a restart stops once an iteration moves at most ``tol * n`` rows to another cluster
            (below ``1 / n``: once no row moves).

    Returns:
        ``labels`` int64 ``[n]`` in ``[0, k)``, and ``centroids`` float64 ``[k, D]`` of unit norm.
        Every cluster is non-empty: an emptied cluster takes the worst-fitted row of a larger cluster.
    """
    X = normalise_rows(X)
    n = len(X)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} clusters for {n} rows: need 1 <= k <= n")
    if n_init < 1 or max_iter < 1 or tol < 0:
        raise ValueError(f"need n_init >= 1, max_iter >= 1, tol >= 0; got {n_init}, {max_iter}, {tol}")
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        centroids = _kmeans_pp(X, k, rng)
        labels = np.full(n, -1)
        for _ in range(max_iter):
            similarity = X @ centroids.T
            new_labels = similarity.argmax(axis=1)
            _fill_empty_clusters(new_labels, similarity, k)
            n_moved = int(np.count_nonzero(new_labels != labels))
            labels = new_labels
            one_hot = np.zeros((n, k))
            one_hot[np.arange(n), labels] = 1.0
            sums = one_hot.T @ X  # [k, D] sum of each cluster's rows (np.add.at is ~100x slower)
            centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
            if n_moved <= tol * n:
                break
        objective = float(np.sum(X * centroids[labels]))
        if best is None or objective > best[0]:
            best = (objective, labels.astype(np.int64), centroids)
    return best[1], best[2]


def _fill_empty_clusters(labels: np.ndarray, similarity: np.ndarray, k: int) -> None:
    """In place: give each empty cluster the worst-fitted row of a cluster that has more than one."""
    counts = np.bincount(labels, minlength=k)
    fit = similarity[np.arange(len(labels)), labels]
    for j in np.flatnonzero(counts == 0):
        i = next(i for i in np.argsort(fit, kind="stable") if counts[labels[i]] > 1)
        counts[labels[i]] -= 1
        labels[i], counts[j], fit[i] = j, 1, np.inf


def cluster_composition(labels: np.ndarray, tracks: pd.DataFrame, tags: Sequence[str]) -> pd.DataFrame:
    """How many tracks of each cluster carry each tag.

    Args:
        labels: int ``[n_tracks]`` cluster of each row of ``tracks``.
        tracks: DataFrame with a ``tags`` column, ``';'``-joined tag names per track.
        tags: the tags to count (e.g. only the genre tags); tags of a track not in this list are ignored.

    Returns:
        One row per cluster (index ``cluster``, sorted), columns ``n_tracks`` then one int column per tag
        of ``tags``. ``n_tracks`` sums to ``len(tracks)``; a tag's column sums to the number of tracks
        carrying it. A track may carry several tags, so a row's tag counts need not sum to ``n_tracks``.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(tracks),):
        raise ValueError(f"labels has shape {labels.shape}, expected ({len(tracks)},) (one per track)")
    if "tags" not in tracks.columns:
        raise ValueError(f"tracks needs a 'tags' column (';'-joined tag names), found {list(tracks.columns)}")
    if len(set(tags)) != len(tags):
        raise ValueError("tags contains duplicates")
    column = {t: j for j, t in enumerate(tags)}
    multi_hot = np.zeros((len(tracks), len(tags)), dtype=np.int64)
    for i, tag_list in enumerate(split_tags(tracks["tags"])):
        for tag in tag_list:
            if tag in column:
                multi_hot[i, column[tag]] = 1
    clusters = np.unique(labels)
    counts = np.stack([multi_hot[labels == c].sum(axis=0) for c in clusters])
    table = pd.DataFrame(counts, columns=list(tags), index=pd.Index(clusters, name="cluster"))
    table.insert(0, N_TRACKS, [int(np.sum(labels == c)) for c in clusters])
    return table


def split_tags(column: pd.Series) -> list[list[str]]:
    """The ``';'``-joined tag strings of ``column`` as lists (missing/empty -> ``[]``, names stripped)."""
    out = []
    for value in column.tolist():
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        out.append([t.strip() for t in text.split(";") if t.strip()])
    return out


def plot_cluster_composition(df: pd.DataFrame, path: str | Path, *, top_n: int = 10) -> Path:
    """Stacked bars, one per cluster: the share of each tag among the cluster's tag occurrences.

    Args:
        df: a :func:`cluster_composition` table.
        path: the PNG to write (parent folders are created).
        top_n: the ``top_n`` most frequent tags overall get their own colour; the rest are pooled as "other".

    Returns:
        ``path``. The bar width is constant; each bar is labelled with its cluster's ``n_tracks``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if N_TRACKS not in df.columns:
        raise ValueError(f"expected a cluster_composition table with an '{N_TRACKS}' column")
    counts = df.drop(columns=N_TRACKS)
    order = counts.sum(axis=0).sort_values(ascending=False, kind="stable").index
    shown = counts[order[:top_n]].copy()
    if len(order) > top_n:
        shown["other"] = counts[order[top_n:]].sum(axis=1)
    totals = shown.sum(axis=1).replace(0, 1)
    shares = shown.div(totals, axis=0)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(df) + 3), 4.5))
    cmap = plt.get_cmap("tab20")
    x = np.arange(len(df))
    bottom = np.zeros(len(df))
    for j, tag in enumerate(shares.columns):
        color = "0.75" if tag == "other" else cmap(j % 20)
        ax.bar(x, shares[tag].to_numpy(), bottom=bottom, color=color, label=tag, width=0.8)
        bottom += shares[tag].to_numpy()
    ax.set_xticks(x, [f"{c}\n(n={n})" for c, n in zip(df.index, df[N_TRACKS])], fontsize=8)
    ax.set_xlabel("cluster")
    ax.set_ylabel("share of tag occurrences")
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=120, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
    return path
