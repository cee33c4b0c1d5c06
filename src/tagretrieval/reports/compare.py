"""Compare finished runs: mean and 95% confidence interval over seeds, grouped by config keys (paper Tables 1-2).

Each run folder holds ``.hydra/config.yaml`` (written by Hydra) and ``metrics/<split>.json`` (written by the
training). Runs are grouped by the values of the ``by`` keys; every other difference between the runs of a group
should be the seed, and a note says so when it is not. Command line::

    python -m tagretrieval.reports.compare multirun/2024-05-01/12-00-00 --by model sampler --out table

prints Markdown and LaTeX and, with ``--out PREFIX``, writes ``PREFIX.md``, ``PREFIX.tex`` and ``PREFIX.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tagretrieval.evaluation import metric_keys
from tagretrieval.evaluation import RetrievalResults
from tagretrieval.runtime.files import atomic_write_text
from tagretrieval.evaluation.metric_keys import PR_AUC, TEST
from tagretrieval.reports.stats import Estimate, mean_ci
from tagretrieval.reports.tables import latex_escape, latex_tabular, markdown_table


def metric_title(name: str) -> str:
    """A table's title: ``"MAP (PR-AUC)"`` (the paper's name), ``"P@10"``, ``"ROC-AUC"``."""
    return "MAP (PR-AUC)" if name == PR_AUC else metric_keys.title(name)


OVERALL = "overall"
"""Column of the macro average over all scored tags (the other columns are tag categories)."""
CONFIG = Path(".hydra") / "config.yaml"
HYDRA = Path(".hydra") / "hydra.yaml"
_SEED_KEY = "seed"
_BOOKKEEPING = ("paths", "logger", "progress", "trust_pickles", "checkpoint_trusted", "loader.num_workers",
                "loader.start_method", "run_dir", "report")
"""Config keys that do not change a run's results: runs differing only in them pool without a note."""


@dataclass(frozen=True)
class Run:
    """One finished run: its folder, composed config (unresolved, as Hydra saved it) and metrics of a split."""

    path: Path
    config: DictConfig
    choices: dict[str, str | None]
    results: RetrievalResults

    @classmethod
    def load(cls, path: str | Path, *, split: str = TEST) -> Run:
        """Read ``path/.hydra/config.yaml``, ``path/.hydra/hydra.yaml`` (optional: group choices) and
        ``path/metrics/<split>.json``.

        Raises:
            FileNotFoundError: the config or the metrics file is missing (the message names it).
        """
        path = Path(path)
        for needed in (path / CONFIG, path / "metrics" / f"{split}.json"):
            if not needed.exists():
                raise FileNotFoundError(f"{needed} not found: {path} is not a finished run folder")
        choices: dict[str, str | None] = {}
        if (path / HYDRA).exists():
            node = OmegaConf.select(OmegaConf.load(path / HYDRA), "hydra.runtime.choices")
            choices = OmegaConf.to_container(node, resolve=False) if node is not None else {}
        return cls(path=path, config=OmegaConf.load(path / CONFIG), choices=choices,
                   results=RetrievalResults.from_json(path / "metrics" / f"{split}.json"))

    def label(self, key: str) -> str:
        """The value of config ``key`` as a row label.

        A config group (``model``, ``sampler``) gives the option chosen on the command line (``hybrid``) when
        ``.hydra/hydra.yaml`` records it, else the class name of its ``_target_`` (``HybridModel``); a leaf key
        (``seed``, ``model.embedding_dim``, ``loss.margin``) gives its value.

        Raises:
            KeyError: the run's config has no ``key``, or ``key`` is a group without ``_target_``.
        """
        if key in self.choices:
            return str(self.choices[key]) if self.choices[key] is not None else "null"
        missing = object()
        try:
            node = OmegaConf.select(self.config, key, default=missing)
        except OmegaConfBaseException as error:  # e.g. an interpolation that only resolves inside its run
            raise KeyError(f"{self.path / CONFIG}: cannot read {key!r}: {error}") from None
        if node is missing:
            raise KeyError(f"{self.path / CONFIG} has no key {key!r}")
        if isinstance(node, DictConfig):
            if "_target_" not in node:
                raise KeyError(f"{self.path / CONFIG}: {key!r} is a section without _target_; "
                               f"group by one of its keys instead ({', '.join(f'{key}.{k}' for k in node)})")
            return str(node["_target_"]).rsplit(".", 1)[-1]
        if isinstance(node, ListConfig):
            return str(OmegaConf.to_container(node, resolve=True))
        return "null" if node is None else str(node)

    def flat_config(self) -> dict[str, str]:
        """Every leaf of the unresolved config as ``dotted.key -> text`` (to find what differs between runs)."""
        flat: dict[str, str] = {}

        def walk(node, prefix: str) -> None:
            if isinstance(node, dict) and node:
                for k, v in node.items():
                    walk(v, f"{prefix}{k}.")
            else:
                flat[prefix[:-1]] = repr(node)

        walk(OmegaConf.to_container(self.config, resolve=False), "")
        return flat


def find_runs(paths: Sequence[str | Path], *, split: str = TEST) -> list[Path]:
    """Run folders in ``paths``: a folder with ``metrics/<split>.json`` is a run; any other folder is searched
    (e.g. ``multirun/DATE/TIME`` holding ``0/``, ``1/``, ...). Sorted naturally (``2`` before ``10``), no duplicates.

    Raises:
        FileNotFoundError: a path does not exist or holds no run.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(f"no such folder: {path}")
        if (path / "metrics" / f"{split}.json").exists():
            runs = [path]
        else:
            runs = [metrics.parent.parent for metrics in path.rglob(f"metrics/{split}.json")]
        if not runs:
            raise FileNotFoundError(f"{path} holds no run folder (no metrics/{split}.json below it)")
        found += runs
    unique = {run.resolve(): run for run in found}
    return sorted(unique.values(), key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


@dataclass
class Group:
    """The runs sharing one combination of labels, and the estimates ``(metric, column) -> Estimate``."""

    labels: tuple[str, ...]
    runs: list[Run]
    estimates: dict[tuple[str, str], Estimate] = field(default_factory=dict)


@dataclass
class Comparison:
    """Groups of runs with mean and confidence interval of every metric, overall and per category.

    Attributes:
        by: the config keys that define the groups (the label columns).
        split: the metrics file read (``test``).
        metrics: the metrics compared, in the paper's order: ``(pr_auc, p_at_<k>, roc_auc)``.
        confidence: coverage of the intervals (0.95).
        columns: ``"overall"`` then the tag categories, sorted.
        groups: in the order their first run was found.
        notes: warnings for the reader (groups pooling runs that differ in more than the seed, ...).
    """

    by: tuple[str, ...]
    split: str
    metrics: tuple[str, ...]
    confidence: float
    columns: list[str]
    groups: list[Group]
    notes: list[str]

    def _cell(self, group: Group, metric: str, column: str, *, digits: int, latex: bool) -> str:
        estimate = group.estimates.get((metric, column))
        if estimate is None:
            return "--" if latex else "–"
        mean = f"{estimate.mean:.{digits}f}"
        if estimate.half_width is None:
            text = f"${mean}$" if latex else mean
        else:
            half = f"{estimate.half_width:.{digits}f}"
            text = f"${mean} \\pm {half}$" if latex else f"{mean} ± {half}"
        if estimate.n != len(group.runs):  # some runs lack this category: say on how many runs it rests
            text += f"\\,($n={estimate.n}$)" if latex else f" (n={estimate.n})"
        return text

    def _single_run_note(self) -> str | None:
        single = [" / ".join(g.labels) or "all runs" for g in self.groups if len(g.runs) == 1]
        if not single:
            return None
        return f"n = 1 (no confidence interval, a single run): {', '.join(single)}."

    def _caption(self, *, plus_minus: str = "±") -> str:
        keys = ", ".join(self.by) if self.by else "nothing (all runs pooled)"
        return (f"{sum(len(g.runs) for g in self.groups)} runs, {self.split} split, grouped by {keys}: "
                f"mean {plus_minus} half-width of the {self.confidence * 100:g}% confidence interval over the runs of "
                "each group (Student t, n - 1 degrees of freedom).")

    def to_markdown(self, *, digits: int = 4) -> str:
        """One table per metric (MAP, P@k, ROC-AUC): a row per group, columns overall and per category."""
        header = [*self.by, "n", *self.columns]
        align = "l" * len(self.by) + "r" * (1 + len(self.columns))
        parts = [f"# Run comparison\n\n{self._caption()}\n"]
        for metric in self.metrics:
            rows = [[*g.labels, str(len(g.runs)),
                     *(self._cell(g, metric, c, digits=digits, latex=False) for c in self.columns)]
                    for g in self.groups]
            parts.append(f"## {metric_title(metric)}\n\n" + markdown_table(header, rows, align=align))
        notes = [n for n in (self._single_run_note(), *self.notes) if n]
        if notes:
            parts.append("Notes:\n\n" + "".join(f"- {note}\n" for note in notes))
        return "\n".join(parts)

    def to_latex(self, *, digits: int = 4) -> str:
        """One ``tabular`` per metric, each preceded by a comment naming it; needs no LaTeX package."""
        header = [*(latex_escape(k) for k in self.by), "$n$", *(latex_escape(c) for c in self.columns)]
        align = "l" * len(self.by) + "r" * (1 + len(self.columns))
        single = self._single_run_note()
        parts = [f"% {latex_escape(self._caption(plus_minus='+/-'))}\n"]
        for metric in self.metrics:
            rows = [[*(latex_escape(label) for label in g.labels), str(len(g.runs)),
                     *(self._cell(g, metric, c, digits=digits, latex=True) for c in self.columns)]
                    for g in self.groups]
            parts.append(f"% {latex_escape(metric_title(metric))}\n"
                         + latex_tabular(header, rows, align=align,
                                         note=latex_escape(single) if single else None))
        parts += [f"% note: {latex_escape(note)}\n" for note in self.notes]
        return "\n".join(parts)

    def to_csv(self, path: str | Path) -> Path:
        """Long format: one row per group, metric and column (``ci_half_width`` empty when ``n == 1``); atomic."""
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow([*self.by, "metric", "column", "mean", "ci_half_width", "n", "confidence", "runs"])
        for g in self.groups:
            for metric in self.metrics:
                for column in self.columns:
                    e = g.estimates.get((metric, column))
                    if e is None:
                        continue
                    writer.writerow([*g.labels, metric, column, e.mean,
                                     "" if e.half_width is None else e.half_width, e.n, self.confidence,
                                     ";".join(str(r.path) for r in g.runs)])
        return atomic_write_text(path, buffer.getvalue())


def compare_runs(runs: Sequence[Run], *, by: Sequence[str], confidence: float = 0.95) -> Comparison:
    """Group ``runs`` by the labels of the ``by`` keys and estimate every metric of every group.

    A category absent from a run (all its tags skipped) is averaged over the runs that have it; the cell then
    says on how many. Groups pooling runs whose configs differ in more than ``seed`` get a note.

    Raises:
        ValueError: no runs, runs of different splits, or runs whose P@k has different cut-offs.
    """
    if not runs:
        raise ValueError("no runs to compare")
    splits = {run.results.split for run in runs}
    if len(splits) != 1:
        raise ValueError(f"runs mix splits {sorted(splits)}; compare one split at a time")
    cutoffs = {run.results.k for run in runs}
    if len(cutoffs) != 1:
        examples = ", ".join(f"{run.path} has k={run.results.k}" for run in
                             {run.results.k: run for run in runs}.values())
        raise ValueError(f"runs mix P@k cut-offs {sorted(cutoffs)} ({examples}): compare runs evaluated with the "
                         "same top_k (a split smaller than top_k is scored at k = its size)")
    metrics = metric_keys.table_order(cutoffs.pop())
    by = tuple(by)
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        labels = tuple(run.label(key) for key in by)
        groups.setdefault(labels, Group(labels=labels, runs=[])).runs.append(run)
    columns = [OVERALL, *sorted({c for run in runs for c in run.results.per_category})]
    notes = []
    for group in groups.values():
        for metric in metrics:
            for column in columns:
                values = [_value(run.results, metric, column) for run in group.runs]
                values = [v for v in values if v is not None]
                if values:
                    group.estimates[metric, column] = mean_ci(values, confidence=confidence)
        notes += _pooling_notes(group, by)
    return Comparison(by=by, split=splits.pop(), metrics=metrics, confidence=confidence, columns=columns,
                      groups=list(groups.values()), notes=notes)


def _value(results: RetrievalResults, metric: str, column: str) -> float | None:
    if column == OVERALL:
        return float(results.macro[metric])
    row = results.per_category.get(column)
    return None if row is None else float(row[metric])


def _pooling_notes(group: Group, by: tuple[str, ...]) -> list[str]:
    """Notes for a group whose runs differ in config values other than the seed, or share a seed."""
    name = " / ".join(group.labels) or "all runs"
    if len(group.runs) < 2:
        return []
    notes = []
    flats = [run.flat_config() for run in group.runs]
    keys = set().union(*flats)
    ignored = (_SEED_KEY, *_BOOKKEEPING, *by)
    differ = sorted(k for k in keys if not any(k == g or k.startswith(f"{g}.") for g in ignored)
                    and len({flat.get(k) for flat in flats}) > 1)
    if differ:
        shown = ", ".join(differ[:8]) + (", ..." if len(differ) > 8 else "")
        notes.append(f"group {name} pools runs whose configs differ in {shown}, not only in the seed; "
                     "add those keys to --by if they are experimental factors")
    seeds = [flat.get(_SEED_KEY) for flat in flats]
    repeated = sorted({s for s in seeds if s is not None and seeds.count(s) > 1})
    if repeated:
        notes.append(f"group {name} holds several runs with the same seed ({', '.join(repeated)}): "
                     "its confidence interval does not measure seed variation")
    return notes


def main(argv: Sequence[str] | None = None) -> Comparison:
    """Command line: see the module docstring and ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m tagretrieval.reports.compare",
        description="Mean and confidence interval over seeds of finished runs, grouped by config keys "
                    "(Markdown and LaTeX).")
    parser.add_argument("paths", nargs="+", type=Path,
                        help="run folders, or folders holding them (a Hydra multirun folder)")
    parser.add_argument("--by", nargs="*", default=[], metavar="KEY",
                        help="config keys that define the rows: a group (model, sampler) or a leaf "
                             "(loss.margin); default: pool every run")
    parser.add_argument("--split", default=TEST, help="metrics/<split>.json to read (default: test)")
    parser.add_argument("--confidence", type=float, default=0.95, help="coverage of the interval (default 0.95)")
    parser.add_argument("--digits", type=int, default=4, help="decimals shown (default 4)")
    parser.add_argument("--out", type=Path, default=None, metavar="PREFIX",
                        help="also write PREFIX.md, PREFIX.tex and PREFIX.csv")
    args = parser.parse_args(argv)
    runs = [Run.load(path, split=args.split) for path in find_runs(args.paths, split=args.split)]
    comparison = compare_runs(runs, by=args.by, confidence=args.confidence)
    markdown = comparison.to_markdown(digits=args.digits)
    latex = comparison.to_latex(digits=args.digits)
    if args.out is not None:  # files first: a closed stdout (`| head`) must not cost them
        args.out.parent.mkdir(parents=True, exist_ok=True)
        paths = [args.out.with_name(args.out.name + suffix) for suffix in (".md", ".tex", ".csv")]
        atomic_write_text(paths[0], markdown)
        atomic_write_text(paths[1], latex)
        comparison.to_csv(paths[2])
        print("written: " + ", ".join(map(str, paths)), file=sys.stderr)
    for note in comparison.notes:
        print(f"note: {note}", file=sys.stderr)
    print(markdown)
    print(latex)
    return comparison


if __name__ == "__main__":
    main()
