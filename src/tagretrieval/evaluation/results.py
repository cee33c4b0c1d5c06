"""Retrieval results of one split: per tag, per tag category and macro-averaged; files and a table.

A tag with no positive (or no negative) song in the split has no ROC-AUC / AP. Such tags are left
out of every average and listed in ``skipped_tags`` with the reason, never scored as 0.

Precision at k is named by the cut-off it was computed with (``p_at_10``). It is capped on small splits, and
``notes`` says so: a tag with fewer than ``k`` positive songs scores at most ``n_positives / k``, and a split of
fewer than ``k`` songs is scored at ``k = n_songs`` (the key then says ``p_at_<n_songs>``).

Next to the per-tag metrics (each tag ranks the songs: retrieval), ``song_wise`` holds the auto-tagging view (each
song ranks the tags; "sample-wise" ROC-AUC / PR-AUC), averaged over the songs that carry at least one tag and not
every tag: the same functions on the transposed matrix (:func:`~tagretrieval.evaluation.metrics.song_wise_metrics`).

The zero-shot protocol (``eval.unseen_tags``) adds ``seen`` and ``unseen``: the same results (the same keys) on the
tags the model was trained on and on those held out of training, computed from the same scores.
"""

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from tagretrieval.evaluation import metric_keys
from tagretrieval.evaluation.metrics import ArrayLike, per_tag_metrics, song_wise_metrics, to_arrays
from tagretrieval.runtime.files import atomic_write_json, atomic_write_text

NO_POSITIVES = "no positive songs in split"
NO_NEGATIVES = "no negative songs in split"
_JSON_KEYS = ("split", "n_songs", "k", "macro", "per_category", "per_tag", "skipped_tags", "notes", "song_wise")
_BLOCKS = ("seen", "unseen")  # written only when present (the zero-shot protocol)
SONG_NO_TAGS = "no tag"
SONG_ALL_TAGS = "every tag"
_CSV_INDEX = ("tag", "category", "n_positives")


@dataclass
class RetrievalResults:
    """Metrics of one split.

    Attributes:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        n_songs: songs ranked for every tag.
        k: the precision cut-off used, ``min(k asked for, n_songs)``; its metric is ``p_at_<k>``.
        per_tag: tag -> ``{roc_auc, pr_auc, p_at_<k>, n_positives, category}``; scored tags only.
        per_category: category -> ``{roc_auc, pr_auc, p_at_<k>, n_tags}``, means over its scored
            tags; a category whose tags were all skipped is absent.
        macro: ``{roc_auc, pr_auc, p_at_<k>}``, means over all scored tags (not over categories).
        skipped_tags: tag -> reason it was not scored.
        notes: what caps the numbers on this split (P@k of tags with fewer than k positives, a split
            smaller than k), in words.
        song_wise: ``{roc_auc, pr_auc, n_songs, skipped_songs}``: the means over songs of each song's ROC-AUC and
            AP over all ``n_tags`` tags (auto-tagging), the songs averaged, and how many were left out by reason
            (a song carrying no tag, or every tag).
        seen, unseen: the same results restricted to the training tags / the tags held out of training (the
            zero-shot protocol), or None.
    """

    split: str
    n_songs: int
    k: int
    per_tag: dict[str, dict]
    per_category: dict[str, dict]
    macro: dict[str, float]
    skipped_tags: dict[str, str]
    notes: list[str]
    song_wise: dict = field(default_factory=dict)
    seen: "RetrievalResults | None" = None
    unseen: "RetrievalResults | None" = None

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
            k: precision cut-off; a split of fewer songs is scored at ``k = n_songs`` (and a note says so).

        Raises:
            ValueError: bad shapes or values (see ``metrics.to_arrays``), names that do not match the
                rows, duplicate tags, a category unusable in a metric key, or no scorable tag at all.
        """
        scores_np, relevance_np = to_arrays(scores, relevance, float64=False)  # float32 stays float32: no copy
        n_tags, n_songs = scores_np.shape
        _check_names(tags=tags, categories=categories, n_tags=n_tags, split=split)
        n_positives = relevance_np.sum(axis=1)
        metrics = per_tag_metrics(scores_np, relevance_np, k=k)
        k_used = min(k, n_songs)
        names = metric_keys.metrics(k_used)

        per_tag: dict[str, dict] = {}
        skipped_tags: dict[str, str] = {}
        for i, (tag, category) in enumerate(zip(tags, categories)):
            if n_positives[i] == 0:
                skipped_tags[tag] = NO_POSITIVES
            elif n_positives[i] == n_songs:
                skipped_tags[tag] = NO_NEGATIVES
            else:
                row = {name: float(metrics[name][i]) for name in names}
                per_tag[tag] = {**row, "n_positives": int(n_positives[i]), "category": category}
        if not per_tag:
            raise ValueError(
                f"no tag can be scored on split {split!r}: all {n_tags} tags lack positive or negative "
                f"songs (e.g. {tags[0]!r}: {skipped_tags[tags[0]]})"
            )

        song_wise = _song_wise(scores_np, relevance_np)
        per_category: dict[str, dict] = {}
        for category in sorted(set(row["category"] for row in per_tag.values())):
            rows = [row for row in per_tag.values() if row["category"] == category]
            per_category[category] = {**_means(rows, names), "n_tags": len(rows)}
        return cls(
            split=split,
            n_songs=n_songs,
            k=k_used,
            per_tag=per_tag,
            per_category=per_category,
            macro=_means(list(per_tag.values()), names),
            skipped_tags=skipped_tags,
            notes=precision_notes(k=k, n_songs=n_songs, n_positives=[row["n_positives"] for row in per_tag.values()]),
            song_wise=song_wise,
        )

    def with_blocks(self, *, scores: ArrayLike, relevance: ArrayLike, tags: Sequence[str],
                    categories: Sequence[str], unseen: Sequence[str]) -> "RetrievalResults":
        """These results plus ``seen`` and ``unseen`` blocks: :meth:`compute` on the rows of the tags not in / in
        ``unseen`` (the same ``scores`` and ``relevance`` as this result was computed from, ``[n_tags, n_songs]``).

        Raises:
            ValueError: ``unseen`` names a tag not in ``tags``, or holds all of them or none.
        """
        unknown = sorted(set(unseen) - set(tags))
        if unknown:
            raise ValueError(f"unseen tags not among the evaluated tags: {unknown}")
        held_out = np.asarray([tag in set(unseen) for tag in tags])
        if held_out.all() or not held_out.any():
            raise ValueError(f"seen/unseen blocks need both kinds of tag; {int(held_out.sum())} of {len(tags)} unseen")
        scores_np, relevance_np = to_arrays(scores, relevance, float64=False)

        def block(rows: np.ndarray) -> RetrievalResults:
            return RetrievalResults.compute(scores=scores_np[rows], relevance=relevance_np[rows],
                                            tags=[t for t, r in zip(tags, rows) if r],
                                            categories=[c for c, r in zip(categories, rows) if r],
                                            split=self.split, k=self.k)

        return dataclasses.replace(self, seen=block(~held_out), unseen=block(held_out))

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names of this result, ``(roc_auc, pr_auc, p_at_<k>)``."""
        return metric_keys.metrics(self.k)

    def flat(self) -> dict[str, float]:
        """Macro and per-category metrics under logger keys (``"test/pr_auc/macro"``, ``"test/roc_auc/mood"``), and the
        song-wise means (``"test/song_roc_auc"``)."""
        flat = {metric_keys.key(self.split, name): self.macro[name] for name in self.metrics}
        for category, row in self.per_category.items():
            flat.update({metric_keys.key(self.split, name, category): row[name] for name in self.metrics})
        for name, song_key in ((metric_keys.ROC_AUC, metric_keys.SONG_ROC_AUC),
                               (metric_keys.PR_AUC, metric_keys.SONG_PR_AUC)):
            if self.song_wise.get(name) is not None:
                flat[metric_keys.key(self.split, song_key)] = self.song_wise[name]
        return flat

    def to_dict(self) -> dict:
        """Every field as plain JSON values (``seen``/``unseen`` nested, and only when present)."""
        out = {name: getattr(self, name) for name in _JSON_KEYS}
        out.update({name: getattr(self, name).to_dict() for name in _BLOCKS if getattr(self, name) is not None})
        return out

    def to_json(self, path: str | Path) -> Path:
        """Write every field to ``path`` as JSON (no NaN: skipped tags are not in ``per_tag``), atomically.

        Raises:
            FileWriteError: ``path`` could not be written (nothing partial is left there).
        """
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: object, *, where: str = "results") -> "RetrievalResults":
        """The inverse of :meth:`to_dict`; a file of an older version without ``song_wise`` is read too.

        Raises:
            ValueError: the keys are not those ``to_dict`` writes.
        """
        required = set(_JSON_KEYS) - {"song_wise"}
        if not isinstance(data, dict) or not required <= set(data) <= {*_JSON_KEYS, *_BLOCKS}:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: expected keys {list(_JSON_KEYS)} (and optionally {list(_BLOCKS)}), "
                             f"found {found}")
        blocks = {name: cls.from_dict(data[name], where=f"{where}: {name}") for name in _BLOCKS if name in data}
        return cls(**{name: data[name] for name in _JSON_KEYS if name in data}, **blocks)

    @classmethod
    def from_json(cls, path: str | Path) -> "RetrievalResults":
        """Read a file written by ``to_json``.

        Raises:
            ValueError: the file's top-level keys are not those ``to_json`` writes.
        """
        return cls.from_dict(json.loads(Path(path).read_text()), where=str(path))

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per scored tag (columns ``tag, category, n_positives, roc_auc, pr_auc,
        p_at_<k>``), sorted by category then tag, atomically.

        Raises:
            FileWriteError: ``path`` could not be written (nothing partial is left there).
        """
        columns = (*_CSV_INDEX, *self.metrics)
        rows = sorted(self.per_tag.items(), key=lambda item: (item[1]["category"], item[0]))
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for tag, row in rows:
            writer.writerow([tag, *(row[column] for column in columns[1:])])
        return atomic_write_text(path, buffer.getvalue())

    def table(self) -> str:
        """A plain-text table: the macro row, one row per category, and the skipped-tag count."""
        table = Table(title=f"{self.split}: {len(self.per_tag)} tags x {self.n_songs} songs", box=box.ASCII2)
        table.add_column("")
        table.add_column("n_tags", justify="right")
        for name in self.metrics:
            table.add_column(name, justify="right")
        table.add_row("macro", str(len(self.per_tag)), *(f"{self.macro[name]:.4f}" for name in self.metrics))
        table.add_section()
        for category, row in self.per_category.items():
            table.add_row(category, str(row["n_tags"]), *(f"{row[name]:.4f}" for name in self.metrics))
        buffer = io.StringIO()
        console = Console(file=buffer, width=100, color_system=None, force_terminal=False)
        console.print(table)
        skipped = ", ".join(f"{tag} ({reason})" for tag, reason in list(self.skipped_tags.items())[:5])
        more = ", ..." if len(self.skipped_tags) > 5 else ""
        # plain lines, unwrapped: tag names and notes are text, not Rich markup
        console.print(f"skipped tags: {len(self.skipped_tags)}" + (f": {skipped}{more}" if skipped else ""),
                      markup=False, highlight=False, soft_wrap=True)
        if self.song_wise.get("n_songs"):
            console.print(f"song-wise (each song ranks the tags): ROC-AUC {self.song_wise[metric_keys.ROC_AUC]:.4f}, "
                          f"PR-AUC {self.song_wise[metric_keys.PR_AUC]:.4f} over {self.song_wise['n_songs']} songs",
                          markup=False, highlight=False, soft_wrap=True)
        for note in self.notes:
            console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        text = buffer.getvalue()
        for name in _BLOCKS:
            if (block := getattr(self, name)) is not None:
                text += f"\n{name} tags ({'held out of training' if name == 'unseen' else 'trained on'}):\n"
                text += block.table()
        return text


def write_results(results: RetrievalResults, out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/metrics/<split>.json`` and ``out_dir/metrics/<split>_per_tag.csv``, each atomically.

    Returns:
        ``{"json": path, "csv": path}``.

    Raises:
        FileWriteError: a file could not be written (disk full, permission denied); it names the path, and
            nothing partial is left at it.
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


def small_split_note(*, k: int, n_songs: int) -> str | None:
    """Says that a split of ``0 < n_songs < k`` songs is scored at ``k = n_songs``; None for any other split."""
    if not 0 < n_songs < k:
        return None
    return (f"the split has {n_songs} songs, fewer than k={k}: precision is computed at k={n_songs} "
            f"({metric_keys.p_at(n_songs)})")


def precision_notes(*, k: int, n_songs: int, n_positives: Sequence[int]) -> list[str]:
    """What caps P@k on a split, in words: a split of fewer than ``k`` songs, tags with fewer than ``k`` positives.

    Args:
        k: the cut-off asked for.
        n_songs: songs in the split.
        n_positives: positive songs of each scored tag.
    """
    k_used = min(k, n_songs)
    notes = [note] if (note := small_split_note(k=k, n_songs=n_songs)) else []
    few = [n for n in n_positives if n < k_used]
    if few:
        ceiling = float(np.mean([min(1.0, n / k_used) for n in n_positives]))
        notes.append(f"{len(few)} of {len(n_positives)} scored tags have fewer than {k_used} positive songs: their "
                     f"{metric_keys.p_at(k_used)} is at most n_positives/{k_used}; the highest macro "
                     f"{metric_keys.p_at(k_used)} possible on this split is {ceiling:.4f}")
    return notes


def _song_wise(scores: np.ndarray, relevance: np.ndarray) -> dict:
    """Song-wise means of ``scores``/``relevance [n_tags, n_songs]`` (every tag of the vocabulary): ``{roc_auc, pr_auc,
    n_songs, skipped_songs}``; a song carrying none of the tags, or all of them, has no ROC-AUC and is left out of
    both means (and counted by reason)."""
    metrics = song_wise_metrics(scores, relevance)
    n_tags_of_song = relevance.sum(axis=0)
    usable = (n_tags_of_song > 0) & (n_tags_of_song < relevance.shape[0])
    skipped = {SONG_NO_TAGS: int((n_tags_of_song == 0).sum()),
               SONG_ALL_TAGS: int((n_tags_of_song == relevance.shape[0]).sum())}
    means = {name: float(metrics[name][usable].mean()) if usable.any() else None
             for name in (metric_keys.ROC_AUC, metric_keys.PR_AUC)}
    return {**means, "n_songs": int(usable.sum()), "skipped_songs": {k: v for k, v in skipped.items() if v}}


def _means(rows: list[dict], names: Sequence[str]) -> dict[str, float]:
    return {name: float(np.mean([row[name] for row in rows])) for name in names}


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
    metric_keys.key(split, metric_keys.ROC_AUC)  # raises on an unknown split
    for category in set(categories):
        metric_keys.check_category(category)
