"""The one place metric names live.

``self.log``, the checkpoint callback's ``monitor``, early stopping and the reports all build
their keys here, so renaming a metric is a one-line change.

A retrieval metric is a namespace holding its macro average and one value per tag category, so that
hierarchical trackers (Neptune, W&B sections) never see one name used as both a value and a folder::

    valid/pr_auc/macro    valid/pr_auc/era    valid/pr_auc/mood    ...
    valid/p_at_10/macro   valid/p_at_10/era   ...
    valid/song_roc_auc    valid/song_pr_auc   (song-wise: each song ranks the tags; plain values)
    train/loss            (not a retrieval metric: a plain value)

Precision at ``k`` is named by its ``k`` (``p_at_10``, ``p_at_5``): a file or a logger key always says which
cut-off it holds.
"""

from __future__ import annotations

import re

ROC_AUC = "roc_auc"
PR_AUC = "pr_auc"
P_AT_PREFIX = "p_at_"
LOSS = "loss"
SONG_ROC_AUC = "song_roc_auc"
"""Auto-tagging's song-wise ROC-AUC (each song ranks the tags), mean over songs: ``test/song_roc_auc``."""
SONG_PR_AUC = "song_pr_auc"
"""Song-wise PR-AUC (AP of each song's tags), mean over songs: ``test/song_pr_auc``."""

MACRO = "macro"
"""The macro average's place in a key (``valid/pr_auc/macro``); not usable as a tag category name."""

TRAIN = "train"
VALID = "valid"
TEST = "test"
SPLITS: tuple[str, ...] = (TRAIN, VALID, TEST)

_P_AT = re.compile(rf"{P_AT_PREFIX}([1-9][0-9]*)")


def p_at(k: int) -> str:
    """The name of precision at ``k``: ``p_at(10) == "p_at_10"``.

    Raises:
        ValueError: ``k`` is not an integer >= 1.
    """
    if isinstance(k, bool) or not hasattr(k, "__index__") or int(k) < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return f"{P_AT_PREFIX}{int(k)}"


def metrics(k: int) -> tuple[str, ...]:
    """The retrieval metrics of a split evaluated with cut-off ``k``: ``(roc_auc, pr_auc, p_at_<k>)``."""
    return (ROC_AUC, PR_AUC, p_at(k))


def k_of(name: str) -> int | None:
    """``k`` of a precision-at-k name (``k_of("p_at_5") == 5``); None for any other name."""
    match = _P_AT.fullmatch(name)
    return int(match.group(1)) if match else None


def table_order(k: int) -> tuple[str, ...]:
    """The column order of the paper's tables and of our reports: ``(pr_auc, p_at_<k>, roc_auc)``."""
    return (PR_AUC, p_at(k), ROC_AUC)


def title(name: str) -> str:
    """A metric's name for people: ``"ROC-AUC"``, ``"PR-AUC"``, ``"P@10"``; other names are returned as they are."""
    k = k_of(name)
    return f"P@{k}" if k is not None else {ROC_AUC: "ROC-AUC", PR_AUC: "PR-AUC"}.get(name, name)


def is_retrieval_metric(name: str) -> bool:
    """ROC-AUC, PR-AUC and every ``p_at_<k>``: the metrics with a macro average and per-category values."""
    return name in (ROC_AUC, PR_AUC) or k_of(name) is not None


def key(split: str, metric: str, category: str | None = None) -> str:
    """Build a logger key.

    ``key("valid", "pr_auc") == "valid/pr_auc/macro"`` (a retrieval metric without a category is its macro
    average), ``key("test", "roc_auc", "genre") == "test/roc_auc/genre"``, ``key("train", "loss") == "train/loss"``.

    Args:
        split: one of ``SPLITS``.
        metric: a retrieval metric (see :func:`is_retrieval_metric`), ``LOSS``, or any other non-empty name
            without ``/``.
        category: a tag category (``"genre"``, ``"mood"``) or ``MACRO``; None: ``MACRO`` for a retrieval metric,
            nothing for any other metric.

    Raises:
        ValueError: for an unknown split, or a metric or category name that is empty or contains ``/``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    parts = [split, _check_part("metric", metric)]
    if category is None and is_retrieval_metric(metric):
        category = MACRO
    if category is not None:
        parts.append(_check_part("category", category))
    return "/".join(parts)


def check_category(name: str) -> str:
    """A tag category usable in keys: non-empty, no ``/``, and not ``MACRO`` (which names the macro average).

    Raises:
        ValueError: naming the category and why.
    """
    _check_part("category", name)
    if name == MACRO:
        raise ValueError(f"tag category {name!r} is reserved: keys such as 'valid/pr_auc/{MACRO}' hold the macro "
                         "average; rename the category in the data")
    return name


def _check_part(what: str, name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{what} must be a non-empty name without '/', got {name!r}")
    return name


MONITOR = key(VALID, PR_AUC)
"""Model-selection metric, ``"valid/pr_auc/macro"``: checkpoint ``monitor`` and early stopping."""
MONITOR_MODE = "max"
