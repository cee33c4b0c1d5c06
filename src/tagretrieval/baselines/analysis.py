"""Analyses of song vectors and tag predictions: confusion matrix, kNN + Jaccard, PCA explained variance.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display), as in
:mod:`tagretrieval.reports.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, jaccard_score
from sklearn.neighbors import NearestNeighbors

_DPI = 120


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=_DPI)
    return path


# -- single-label data: confusion matrix ---------------------------------------------------------------------
def is_single_label(labels: np.ndarray) -> bool:
    """Whether every song ``labels [n_songs, n_tags]`` carries exactly one tag (e.g. FMA's top genre)."""
    return bool(len(labels)) and bool((np.asarray(labels).sum(axis=1) == 1).all())


def write_confusion_matrix(*, labels: np.ndarray, scores: np.ndarray, tags: Sequence[str],
                           out_dir: Path) -> dict[str, Path]:
    """Confusion matrix of single-label songs, predicting each song's highest-scoring tag.

    Args:
        labels: ``{0, 1} [n_songs, n_tags]``, one 1 per row; scores: ``[n_songs, n_tags]``.

    Writes ``confusion_matrix.csv`` (rows: true tag, columns: predicted tag, counts) and
    ``confusion_matrix.png`` (row-normalised, accuracy in the title).
    """
    if not is_single_label(labels):
        raise ValueError("a confusion matrix needs single-label songs (exactly one tag each)")
    true, predicted = np.asarray(labels).argmax(axis=1), np.asarray(scores).argmax(axis=1)
    counts = confusion_matrix(true, predicted, labels=np.arange(len(tags)))      # [n_tags (true), n_tags (pred)]
    table = pd.DataFrame(counts, index=pd.Index(list(tags), name="true"), columns=list(tags))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "confusion_matrix.csv", "png": out_dir / "confusion_matrix.png"}
    table.to_csv(paths["csv"])
    with np.errstate(invalid="ignore"):
        normalised = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))  # a tag without test songs: 0 row
    size = max(4.0, 0.45 * len(tags) + 2.0)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    axes = figure.add_subplot()
    ConfusionMatrixDisplay(normalised, display_labels=list(tags)).plot(ax=axes, values_format=".2f",
                                                                       xticks_rotation="vertical", colorbar=True)
    axes.set_title(f"test: accuracy {float((true == predicted).mean()):.3f} over {len(true)} songs (row-normalised)")
    _save(figure, paths["png"])
    return paths


# -- kNN with majority voting, Jaccard index -----------------------------------------------------------------
def knn_majority_vote(X_train: np.ndarray, Y_train: np.ndarray, X_query: np.ndarray, *, n_neighbors: int,
                      metric: str = "euclidean") -> np.ndarray:
    """Multi-label kNN: a query song gets a tag when strictly more than half of its ``n_neighbors`` nearest
    training songs carry it.

    Args:
        X_train: ``[n_train, d]``; Y_train: ``{0, 1} [n_train, n_tags]``; X_query: ``[n_query, d]``.
        metric: a scikit-learn ``NearestNeighbors`` metric (``"euclidean"``, ``"cosine"``).

    Returns:
        ``{0, 1} int64 [n_query, n_tags]``.
    """
    if not 1 <= n_neighbors <= len(X_train):
        raise ValueError(f"n_neighbors must be in [1, n_train={len(X_train)}], got {n_neighbors}")
    index = NearestNeighbors(n_neighbors=n_neighbors, metric=metric).fit(X_train)
    _, neighbours = index.kneighbors(X_query)                                    # [n_query, n_neighbors]
    votes = np.asarray(Y_train)[neighbours].sum(axis=1)                          # [n_query, n_tags]
    return (2 * votes > n_neighbors).astype(np.int64)


def jaccard_index(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    """Mean over songs of ``|true & predicted| / |true | predicted|`` (scikit-learn ``jaccard_score``,
    ``average="samples"``); a song with no true and no predicted tag counts as 1 (perfect agreement)."""
    return float(jaccard_score(np.asarray(Y_true), np.asarray(Y_pred), average="samples", zero_division=1.0))


# -- PCA explained variance ---------------------------------------------------------------------------------
def explained_variance(X: np.ndarray) -> pd.DataFrame:
    """PCA of ``X [n_songs, d]`` (centred, not scaled): columns ``component`` (1-based),
    ``explained_variance_ratio``, ``cumulative``; ``min(n_songs, d)`` rows."""
    pca = PCA(n_components=min(X.shape)).fit(X)
    ratio = pca.explained_variance_ratio_
    return pd.DataFrame({"component": np.arange(1, len(ratio) + 1), "explained_variance_ratio": ratio,
                         "cumulative": np.cumsum(ratio)})


def components_for(table: pd.DataFrame, fraction: float) -> int:
    """Fewest components whose cumulative explained variance reaches ``fraction``."""
    return int(min(np.searchsorted(table["cumulative"].to_numpy(), fraction - 1e-12) + 1, len(table)))


def plot_explained_variance(table: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Cumulative explained variance against the number of components, with the 90 % and 95 % marks."""
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(table["component"], table["cumulative"], marker=".", label="cumulative")
    axes.bar(table["component"], table["explained_variance_ratio"], alpha=0.4, label="per component")
    for fraction in (0.9, 0.95):
        n = components_for(table, fraction)
        axes.axhline(fraction, linestyle=":", color="grey")
        axes.annotate(f"{fraction:.0%}: {n}", (n, fraction), textcoords="offset points", xytext=(4, -12))
    axes.set_xlabel("principal components")
    axes.set_ylabel("explained variance ratio")
    axes.set_ylim(0.0, 1.02)
    axes.set_title(title, fontsize=9)
    axes.legend(loc="center right")
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(figure, path)
