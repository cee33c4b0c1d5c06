"""Retrieval results of one split: per tag, per tag category and macro-averaged; files and a table.

A tag with no positive (or no negative) song in the split has no ROC-AUC / AP. Such tags are left
out of every average and listed in ``skipped_tags`` with the reason, never scored as 0.
"""

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from tagretrieval import metric_keys
from tagretrieval.evaluation.metrics import ArrayLike, per_tag_metrics, to_arrays
from tagretrieval.metric_keys import METRICS

NO_POSITIVES = "no positive songs in split"
NO_NEGATIVES = "no negative songs in split"
_JSON_KEYS = ("split", "n_songs", "macro", "per_category", "per_tag", "skipped_tags")
_CSV_COLUMNS = ("tag", "category", "n_positives", *METRICS)


@dataclass
class RetrievalResults:
    """Metrics of one split.

    Attributes:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        n_songs: songs ranked for every tag.
        per_tag: tag -> ``{roc_auc, pr_auc, p_at_10, n_positives, category}``; scored tags only.
        per_category: category -> ``{roc_auc, pr_auc, p_at_10, n_tags}``, means over its scored
            tags; a category whose tags were all skipped is absent.
        macro: ``{roc_auc, pr_auc, p_at_10}``, means over all scored tags (not over categories).
        skipped_tags: tag -> reason it was not scored.
    """

    split: str
    n_songs: int
    per_tag: dict[str, dict]
    per_category: dict[str, dict]
    macro: dict[str, float]
    skipped_tags: dict[str, str]

    @classmethod
    def compute(
        cls,
        *,
        scores: ArrayLike,
        relevance: ArrayLike,
        tags: Sequence[str],
        categories: Sequence[str],
        split: str,
        k: int = 10,
    ) -> "RetrievalResults":
        """Score every tag and average over the scorable ones.

        Args:
            scores: ``float [n_tags, n_songs]``, row ``i`` ranks the songs for ``tags[i]``.
            relevance: ``{0, 1} [n_tags, n_songs]``.
            tags: ``n_tags`` unique tag names.
            categories: ``n_tags`` category names (``"genre"``, ``"mood"``), one per tag.
            split: one of ``metric_keys.SPLITS``.
            k: precision cut-off.

        Raises:
            ValueError: bad shapes or values (see ``metrics.to_arrays``), names that do not match the
                rows, duplicate tags, a category unusable in a metric key, or no scorable tag at all.
        """
        scores_np, relevance_np = to_arrays(scores, relevance)
        n_tags, n_songs = scores_np.shape
        _check_names(tags=tags, categories=categories, n_tags=n_tags, split=split)
        n_positives = relevance_np.sum(axis=1)
        metrics = per_tag_metrics(scores_np, relevance_np, k=k)

        per_tag: dict[str, dict] = {}
        skipped_tags: dict[str, str] = {}
        for i, (tag, category) in enumerate(zip(tags, categories)):
            if n_positives[i] == 0:
                skipped_tags[tag] = NO_POSITIVES
            elif n_positives[i] == n_songs:
                skipped_tags[tag] = NO_NEGATIVES
            else:
                row = {name: float(metrics[name][i]) for name in METRICS}
                per_tag[tag] = {**row, "n_positives": int(n_positives[i]), "category": category}
        if not per_tag:
            raise ValueError(
                f"no tag can be scored on split {split!r}: all {n_tags} tags lack positive or negative "
                f"songs (e.g. {tags[0]!r}: {skipped_tags[tags[0]]})"
            )

        per_category: dict[str, dict] = {}
        for category in sorted(set(row["category"] for row in per_tag.values())):
            rows = [row for row in per_tag.values() if row["category"] == category]
            per_category[category] = {**_means(rows), "n_tags": len(rows)}
        return cls(
            split=split,
            n_songs=n_songs,
            per_tag=per_tag,
            per_category=per_category,
            macro=_means(list(per_tag.values())),
            skipped_tags=skipped_tags,
        )

    def flat(self) -> dict[str, float]:
        """Macro and per-category metrics under logger keys (``"test/pr_auc"``, ``"test/roc_auc/mood"``)."""
        flat = {metric_keys.key(self.split, name): self.macro[name] for name in METRICS}
        for category, row in self.per_category.items():
            flat.update({metric_keys.key(self.split, name, category): row[name] for name in METRICS})
        return flat

    def to_json(self, path: str | Path) -> None:
        """Write every field to ``path`` as JSON (no NaN: skipped tags are not in ``per_tag``)."""
        data = {
            "split": self.split,
            "n_songs": self.n_songs,
            "macro": self.macro,
            "per_category": self.per_category,
            "per_tag": self.per_tag,
            "skipped_tags": self.skipped_tags,
        }
        Path(path).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "RetrievalResults":
        """Read a file written by ``to_json``.

        Raises:
            ValueError: the file's top-level keys are not exactly those ``to_json`` writes.
        """
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or set(data) != set(_JSON_KEYS):
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: expected keys {list(_JSON_KEYS)}, found {found}")
        return cls(**{name: data[name] for name in _JSON_KEYS})

    def to_csv(self, path: str | Path) -> None:
        """Write one row per scored tag (columns ``tag, category, n_positives, roc_auc, pr_auc,
        p_at_10``), sorted by category then tag."""
        rows = sorted(self.per_tag.items(), key=lambda item: (item[1]["category"], item[0]))
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(_CSV_COLUMNS)
            for tag, row in rows:
                writer.writerow([tag, *(row[column] for column in _CSV_COLUMNS[1:])])

    def table(self) -> str:
        """A plain-text table: the macro row, one row per category, and the skipped-tag count."""
        table = Table(title=f"{self.split}: {len(self.per_tag)} tags x {self.n_songs} songs", box=box.ASCII2)
        table.add_column("")
        table.add_column("n_tags", justify="right")
        for name in METRICS:
            table.add_column(name, justify="right")
        table.add_row("macro", str(len(self.per_tag)), *(f"{self.macro[name]:.4f}" for name in METRICS))
        table.add_section()
        for category, row in self.per_category.items():
            table.add_row(category, str(row["n_tags"]), *(f"{row[name]:.4f}" for name in METRICS))
        buffer = io.StringIO()
        console = Console(file=buffer, width=100, color_system=None, force_terminal=False)
        console.print(table)
        skipped = ", ".join(f"{tag} ({reason})" for tag, reason in list(self.skipped_tags.items())[:5])
        more = ", ..." if len(self.skipped_tags) > 5 else ""
        console.print(f"skipped tags: {len(self.skipped_tags)}" + (f": {skipped}{more}" if skipped else ""))
        return buffer.getvalue()


def write_results(results: RetrievalResults, out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/metrics/<split>.json`` and ``out_dir/metrics/<split>_per_tag.csv``.

    Returns:
        ``{"json": path, "csv": path}``.
    """
    metrics_dir = Path(out_dir) / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": metrics_dir / f"{results.split}.json",
        "csv": metrics_dir / f"{results.split}_per_tag.csv",
    }
    results.to_json(paths["json"])
    results.to_csv(paths["csv"])
    return paths


def _means(rows: list[dict]) -> dict[str, float]:
    return {name: float(np.mean([row[name] for row in rows])) for name in METRICS}


def _check_names(*, tags: Sequence[str], categories: Sequence[str], n_tags: int, split: str) -> None:
    if len(tags) != n_tags or len(categories) != n_tags:
        raise ValueError(
            f"scores have {n_tags} tag rows but got {len(tags)} tags and {len(categories)} categories"
        )
    seen: set[str] = set()
    for tag in tags:
        if tag in seen:
            raise ValueError(f"tag {tag!r} appears twice; tags must be unique")
        seen.add(tag)
    for category in set(categories):
        metric_keys.key(split, metric_keys.ROC_AUC, category)  # raises on a bad split or category
