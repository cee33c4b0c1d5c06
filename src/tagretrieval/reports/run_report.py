"""The report of one finished run, written to ``DIR/reports/``.

=====================================  =====================================================================
``<split>_per_tag.csv``                one row per scored tag (same columns as ``metrics/<split>_per_tag.csv``)
``<split>_per_tag.md``                 macro and per-category summary, per-tag table, skipped tags, figures
``<split>_per_category.png``           bars of PR-AUC, P@k and ROC-AUC per category
``<split>_pr_curves.png``              precision-recall curves of chosen tags and the micro average (needs scores)
``training_curves.png``                training loss and validation metrics (needs the CSV or TensorBoard log)
=====================================  =====================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tagretrieval.evaluation import metric_keys
from tagretrieval.evaluation import RetrievalResults
from tagretrieval.runtime.files import atomic_write_text
from tagretrieval.evaluation.metric_keys import TEST
from tagretrieval.reports.plots import default_pr_tags, plot_per_category, plot_pr_curves, plot_training_curves
from tagretrieval.reports.scores import ScoreMatrix
from tagretrieval.reports.tables import markdown_table
from tagretrieval.reports.training_log import read_training_log

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"


def scores_path(run_dir: str | Path, split: str = TEST) -> Path:
    """Where a run's score matrix is cached: ``DIR/metrics/<split>_scores.npz``."""
    return Path(run_dir) / "metrics" / f"{split}_scores.npz"


def per_tag_markdown(results: RetrievalResults, *, figures: Sequence[Path] = (), digits: int = 4) -> str:
    """Summary (macro, per category), then every scored tag sorted by category then tag, then skipped tags and
    the notes on what caps P@k."""
    fmt = f"{{:.{digits}f}}"
    order = metric_keys.table_order(results.k)
    titles = [metric_keys.title(m) for m in order]
    summary = [["macro", str(len(results.per_tag)), *(fmt.format(results.macro[m]) for m in order)]]
    summary += [[c, str(row["n_tags"]), *(fmt.format(row[m]) for m in order)]
                for c, row in results.per_category.items()]
    tags = sorted(results.per_tag.items(), key=lambda item: (item[1]["category"], item[0]))
    per_tag = [[tag, row["category"], str(row["n_positives"]), *(fmt.format(row[m]) for m in order)]
               for tag, row in tags]
    parts = [
        f"# {results.split} split: {len(results.per_tag)} tags x {results.n_songs} songs\n",
        "## Summary\n\n" + markdown_table(["", "n_tags", *titles], summary, align="lrrrr"),
        "## Per tag\n\n" + markdown_table(["tag", "category", "n_positives", *titles], per_tag, align="llrrrr"),
    ]
    skipped = "".join(f"- {tag}: {reason}\n" for tag, reason in results.skipped_tags.items())
    parts.append(f"## Skipped tags ({len(results.skipped_tags)})\n\n" + (skipped or "none\n"))
    if results.notes:
        parts.append("## Notes\n\n" + "".join(f"- {note}\n" for note in results.notes))
    if figures:
        parts.append("## Figures\n\n" + "".join(f"![{path.stem}]({path.name})\n\n" for path in figures))
    return "\n".join(parts)


def write_run_report(*, run_dir: str | Path, split: str = TEST, scores: ScoreMatrix | None = None,
                     pr_tags: Sequence[str] = ()) -> dict[str, Path]:
    """Write the tables and figures of ``run_dir`` (see the module docstring) into ``run_dir/reports``.

    Args:
        run_dir: a finished run folder with ``metrics/<split>.json``.
        split: the split to report.
        scores: the split's score matrix; without it there are no precision-recall curves.
        pr_tags: tags whose curves are drawn; empty: the tags with the best, median and worst AP.

    Returns:
        ``name -> path`` of every file written (``per_tag_csv``, ``per_tag_md``, ``per_category``, and
        ``pr_curves`` / ``training_curves`` when their inputs exist; what is missing is logged). Every file is
        written atomically: a failed write leaves the previous file or none, never half of one.

    Raises:
        FileNotFoundError: no ``metrics/<split>.json``.
        ValueError: ``scores`` of another split, or a ``pr_tags`` entry that is unknown or cannot be scored.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics" / f"{split}.json"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: is {run_dir} a finished run folder?")
    if scores is not None and scores.split != split:
        raise ValueError(f"scores of split {scores.split!r} given for a report on {split!r}")
    results = RetrievalResults.from_json(metrics_path)
    out = run_dir / REPORTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    paths = {"per_tag_csv": out / f"{split}_per_tag.csv"}
    results.to_csv(paths["per_tag_csv"])
    paths["per_category"] = plot_per_category(results, out / f"{split}_per_category.png")
    if scores is not None:
        paths["pr_curves"] = plot_pr_curves(scores, tags=list(pr_tags) or default_pr_tags(results),
                                            path=out / f"{split}_pr_curves.png")
    else:
        log.warning("no scores for %s: no precision-recall curves (mode=report computes them)", run_dir)
    training_log = read_training_log(run_dir)
    if training_log is not None:
        paths["training_curves"] = plot_training_curves(training_log, out / "training_curves.png")
    else:
        log.warning("%s has neither csv/metrics.csv nor TensorBoard events: no training curves", run_dir)
    figures = [p for name, p in paths.items() if p.suffix == ".png"]
    paths["per_tag_md"] = out / f"{split}_per_tag.md"
    atomic_write_text(paths["per_tag_md"], per_tag_markdown(results, figures=figures))
    return paths
