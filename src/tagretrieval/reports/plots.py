"""PNG figures of one run: metrics per category, precision-recall curves, training curves.

Figures are drawn with matplotlib's object API on the Agg canvas: no pyplot, no global backend switch, no window;
works on headless machines and inside notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from tagretrieval.evaluation import metric_keys
from tagretrieval.evaluation import RetrievalResults, average_precision
from tagretrieval.runtime.files import atomic_write
from tagretrieval.evaluation.metric_keys import PR_AUC, ROC_AUC
from tagretrieval.reports.scores import ScoreMatrix
from tagretrieval.reports.training_log import TrainingLog

_DPI = 120


def metric_label(name: str) -> str:
    """A metric's legend text: ``"PR-AUC (AP)"``, ``"P@10"``, ``"ROC-AUC"``."""
    return "PR-AUC (AP)" if name == PR_AUC else metric_keys.title(name)


def _save(figure: Figure, path: str | Path) -> Path:
    """Draw ``figure`` into ``path`` (format from its suffix, e.g. ``.png``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    return atomic_write(path, lambda f: figure.savefig(f, dpi=_DPI, format=path.suffix.lstrip(".") or "png"))


def plot_per_category(results: RetrievalResults, path: str | Path) -> Path:
    """Grouped bars: every metric for the macro average and each tag category (with its tag count)."""
    groups = [("macro", results.macro, len(results.per_tag))]
    groups += [(c, row, row["n_tags"]) for c, row in results.per_category.items()]
    figure = Figure(figsize=(max(6.0, 1.2 * len(groups) + 2.0), 4.0), layout="constrained")
    axes = figure.add_subplot()
    order = metric_keys.table_order(results.k)
    width = 0.8 / len(order)
    x = np.arange(len(groups))
    for i, name in enumerate(order):
        values = [row[name] for _, row, _ in groups]
        bars = axes.bar(x + (i - (len(order) - 1) / 2) * width, values, width, label=metric_label(name))
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    axes.set_xticks(x, [f"{name}\n({n} tags)" for name, _, n in groups])
    axes.set_ylim(0.0, 1.08)
    axes.set_ylabel("score")
    axes.set_title(f"{results.split}: {len(results.per_tag)} tags x {results.n_songs} songs")
    axes.legend(loc="upper right", fontsize=8, ncols=len(order))
    return _save(figure, path)


def default_pr_tags(results: RetrievalResults) -> list[str]:
    """The tags with the highest, median and lowest AP (ties broken by name): a spread of easy to hard tags."""
    ranked = sorted(results.per_tag, key=lambda tag: (-results.per_tag[tag][PR_AUC], tag))
    picks = [ranked[0], ranked[len(ranked) // 2], ranked[-1]]
    return list(dict.fromkeys(picks))


def plot_pr_curves(scores: ScoreMatrix, *, tags: Sequence[str], path: str | Path) -> Path:
    """Precision-recall curves of ``tags`` and the micro average over all scorable tags (legend: AP).

    The micro average pools every (tag, song) pair of the tags that have both positive and negative songs,
    the tags the macro metrics are averaged over.

    Raises:
        ValueError: a tag is not in the score matrix, or cannot be scored (no positive or no negative song).
    """
    index = {tag: i for i, tag in enumerate(scores.tags)}
    unknown = [t for t in tags if t not in index]
    if unknown:
        raise ValueError(f"tags not in the {scores.split} scores: {unknown}; known tags: {', '.join(scores.tags)}")
    n_positives = scores.relevance.sum(axis=1)
    scorable = (n_positives > 0) & (n_positives < scores.relevance.shape[1])
    unscorable = [t for t in tags if not scorable[index[t]]]
    if unscorable:
        raise ValueError(f"tags without positive or negative songs in {scores.split}, no curve: {unscorable}")
    figure = Figure(figsize=(6.0, 5.0), layout="constrained")
    axes = figure.add_subplot()
    pooled_scores = scores.scores[scorable].reshape(1, -1)
    pooled_relevance = scores.relevance[scorable].reshape(1, -1)
    curves = [(f"micro-average ({int(scorable.sum())} tags)", pooled_scores[0], pooled_relevance[0])]
    curves += [(tag, scores.scores[index[tag]], scores.relevance[index[tag]]) for tag in tags]
    for i, (label, y_score, y_true) in enumerate(curves):
        precision, recall, _ = precision_recall_curve(y_true, y_score)
        ap = float(average_precision(y_score[None, :], y_true[None, :])[0])
        style = {"color": "black", "linewidth": 2.0} if i == 0 else {"linewidth": 1.2}
        axes.step(recall, precision, where="post", label=f"{label}: AP {ap:.3f}", **style)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"precision-recall, {scores.split} split ({scores.scores.shape[1]} songs)")
    axes.legend(loc="upper right", fontsize=8)
    return _save(figure, path)


def plot_training_curves(log: TrainingLog, path: str | Path) -> Path:
    """Two panels against the training step: the training loss, and the validation metrics (macro)."""
    loss_key = metric_keys.key(metric_keys.TRAIN, metric_keys.LOSS)
    # on_step and on_epoch logging makes Lightning append _step / _epoch to the key
    loss_keys = [k for k in (f"{loss_key}_step", f"{loss_key}_epoch", loss_key) if k in log.keys]
    # every valid/<metric>/macro key the run logged (its P@k, whatever k), in the order of the tables
    valid = [(key, name) for key in log.keys if (name := _valid_macro_metric(key)) is not None]
    valid.sort(key=lambda item: {PR_AUC: 0, ROC_AUC: 2}.get(item[1], 1))
    figure = Figure(figsize=(10.0, 4.0), layout="constrained")
    loss_axes, valid_axes = figure.subplots(1, 2)
    for key in loss_keys:
        series = log.series(key)
        loss_axes.plot(series["step"], series["value"], marker="o" if len(series) < 30 else None, markersize=3,
                       label=key)
    for key, name in valid:
        series = log.series(key)
        if len(series):
            valid_axes.plot(series["step"], series["value"], marker="o" if len(series) < 30 else None,
                            markersize=3, label=metric_label(name))
    for axes, title in ((loss_axes, "training loss"), (valid_axes, "validation (macro)")):
        axes.set_xlabel("step")
        axes.set_title(title)
        if axes.lines:
            axes.legend(fontsize=8)
        else:
            axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
    figure.suptitle(f"training curves (from {'/'.join(log.source.parts[-2:])})", fontsize=10)
    return _save(figure, path)


def _valid_macro_metric(key: str) -> str | None:
    """``"pr_auc"`` for ``"valid/pr_auc/macro"``; None for a key that is not a validation macro average."""
    parts = key.split("/")
    if len(parts) != 3 or not metric_keys.is_retrieval_metric(parts[1]):
        return None
    return parts[1] if key == metric_keys.key(metric_keys.VALID, parts[1]) else None
