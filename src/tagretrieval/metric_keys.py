"""The one place metric names live.

``self.log``, the checkpoint callback's ``monitor``, early stopping and the reports all build
their keys here, so renaming a metric is a one-line change.
Keys follow ``split/metric`` or ``split/metric/category`` (``"valid/pr_auc"``, ``"test/roc_auc/genre"``).
"""

ROC_AUC = "roc_auc"
PR_AUC = "pr_auc"
P_AT_10 = "p_at_10"
METRICS: tuple[str, ...] = (ROC_AUC, PR_AUC, P_AT_10)
"""Retrieval metrics reported per split, per category and macro-averaged."""
LOSS = "loss"

TRAIN = "train"
VALID = "valid"
TEST = "test"
SPLITS: tuple[str, ...] = (TRAIN, VALID, TEST)


def key(split: str, metric: str, category: str | None = None) -> str:
    """Build a logger key: ``key("valid", "pr_auc") == "valid/pr_auc"``.

    Args:
        split: one of ``SPLITS``.
        metric: one of ``METRICS``, or ``LOSS``; any other name must be non-empty and free of ``/``.
        category: optional tag category (``"genre"``, ``"mood"``); appended as a third level.

    Raises:
        ValueError: for an unknown split, or a metric or category name that is empty or contains ``/``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    parts = [split, _check_part("metric", metric)]
    if category is not None:
        parts.append(_check_part("category", category))
    return "/".join(parts)


def _check_part(what: str, name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{what} must be a non-empty name without '/', got {name!r}")
    return name


MONITOR = key(VALID, PR_AUC)
"""Model-selection metric: checkpoint ``monitor`` and early stopping."""
MONITOR_MODE = "max"
