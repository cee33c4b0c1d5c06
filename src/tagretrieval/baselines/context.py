"""What every baseline's ``run`` receives, and how its retrieval results are written (as a trained model's)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagretrieval.audio import MelFrontend
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.evaluation import RetrievalResults, write_results
from tagretrieval.reports.run_report import scores_path
from tagretrieval.reports.scores import ScoreMatrix


@dataclass
class BaselineContext:
    """The data and the run folder of one baseline run.

    Attributes:
        dataset: the prepared dataset (all tags; a baseline may restrict them).
        output_dir: the run folder; metrics go to ``output_dir/metrics/``.
        frontend: the mel front end of the prepared mel cache (baselines reading mels or checkpoints).
        progress: show progress bars.
        top_k: the ``k`` of P@k.
        make_trainer: builds a Lightning trainer (baselines that train a network).
    """

    dataset: PreparedDataset
    output_dir: Path
    frontend: MelFrontend | None = None
    progress: bool = False
    top_k: int = 10
    make_trainer: Callable[[], object] | None = None


def evaluate_scores(*, scores: np.ndarray, labels: np.ndarray, tags: Sequence[str], categories: Sequence[str],
                    split: str, k: int) -> RetrievalResults:
    """Retrieval metrics of per-song tag scores ``scores [n_songs, n_tags]`` against ``labels [n_songs, n_tags]``.

    Each tag ranks the songs by its column of ``scores`` (a probability, a decision value or a similarity):
    exactly the ``RetrievalResults`` a trained model gets, on ``[n_tags, n_songs]``. Scores are rounded to
    float32 first, as :func:`write_split` stores them, so that ``mode=report`` recomputes the same metrics.
    """
    return RetrievalResults.compute(scores=np.asarray(scores, dtype=np.float32).T, relevance=np.asarray(labels).T,
                                    tags=tags, categories=categories, split=split, k=k)


def write_split(results: RetrievalResults, *, scores: np.ndarray, labels: np.ndarray, track_ids: Sequence[str],
                tags: Sequence[str], categories: Sequence[str], output_dir: Path) -> dict[str, Path]:
    """Write ``metrics/<split>.json``, ``metrics/<split>_per_tag.csv`` and ``metrics/<split>_scores.npz``
    (the score matrix ``mode=report`` reads), like ``mode=train`` does; print the table."""
    paths = write_results(results, output_dir)
    paths["scores"] = ScoreMatrix(
        split=results.split, scores=np.asarray(scores, dtype=np.float32).T, relevance=np.asarray(labels).T.astype(bool),
        tags=list(tags), categories=list(categories), track_ids=list(track_ids),
    ).save(scores_path(output_dir, results.split))
    print(results.table())
    print("metrics written to " + ", ".join(str(p) for p in paths.values()))
    return paths
