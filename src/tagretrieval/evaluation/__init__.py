"""Retrieval evaluation: per-tag metrics (pure functions) and the results report of a split."""

from tagretrieval.evaluation.metrics import (
    average_precision,
    per_tag_metrics,
    precision_at_k,
    roc_auc,
    song_wise_metrics,
    to_arrays,
)
from tagretrieval.evaluation.results import (
    NO_NEGATIVES,
    NO_POSITIVES,
    RetrievalResults,
    write_results,
)

__all__ = [
    "NO_NEGATIVES",
    "NO_POSITIVES",
    "RetrievalResults",
    "average_precision",
    "per_tag_metrics",
    "precision_at_k",
    "roc_auc",
    "song_wise_metrics",
    "to_arrays",
    "write_results",
]
