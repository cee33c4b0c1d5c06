"""Skip-and-report: what an import left out, and why, written to ``prepare_report.json``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from tagretrieval.runtime.errors import UserError
from tagretrieval.runtime.files import atomic_write, atomic_write_json

REPORT_FILE = "prepare_report.json"


class TooManySkippedError(UserError):
    """An import skipped more than the allowed fraction of its tracks."""


class PrepareReport:
    """Collects skipped items by reason.

    ``skip("decode error", "TR123", "...")`` records one item; ``counts`` and ``items`` summarise them.
    Reasons are short fixed phrases (the keys of the JSON), details are free text per item.
    """

    def __init__(self, *, dataset: str) -> None:
        self.dataset = dataset
        self.n_candidates = 0
        self.n_kept = 0
        self.notes: list[str] = []
        self._items: dict[str, dict[str, str]] = defaultdict(dict)

    def skip(self, reason: str, item_id: str, detail: str = "") -> None:
        self._items[reason][str(item_id)] = detail

    def note(self, text: str) -> None:
        """A remark that is not a skipped item (e.g. 'no split column: made an artist-disjoint split')."""
        self.notes.append(text)

    @property
    def counts(self) -> dict[str, int]:
        return {reason: len(items) for reason, items in sorted(self._items.items())}

    def items(self, reason: str) -> dict[str, str]:
        return dict(self._items.get(reason, {}))

    @property
    def n_skipped_tracks(self) -> int:
        """Distinct skipped ids among the reasons that concern tracks (every reason but 'tag: ...')."""
        ids: set[str] = set()
        for reason, items in self._items.items():
            if not is_tag_reason(reason):
                ids.update(items)
        return len(ids)

    def check(self, *, max_skipped_fraction: float) -> None:
        """Raise TooManySkippedError if more than ``max_skipped_fraction`` of the candidate tracks were skipped."""
        if self.n_candidates and self.n_skipped_tracks / self.n_candidates > max_skipped_fraction:
            raise TooManySkippedError(
                f"{self.dataset}: skipped {self.n_skipped_tracks} of {self.n_candidates} tracks "
                f"(> {max_skipped_fraction:.0%} allowed by data.max_skipped_fraction): {self.counts}. "
                "See prepare_report.json for the ids and reasons."
            )

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset, "n_candidates": self.n_candidates, "n_kept": self.n_kept,
            "n_skipped_tracks": self.n_skipped_tracks, "counts": self.counts, "notes": self.notes,
            "skipped": {reason: dict(sorted(items.items())) for reason, items in sorted(self._items.items())},
        }

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, self.to_dict())

    def summary(self) -> str:
        lines = [f"{self.dataset}: kept {self.n_kept} of {self.n_candidates} tracks"]
        lines += [f"  skipped ({reason}): {count}" for reason, count in self.counts.items()]
        lines += [f"  note: {text}" for text in self.notes]
        return "\n".join(lines)


def is_tag_reason(reason: str) -> bool:
    """Whether a skip reason concerns tags (``"tag: no word vector"``), not tracks."""
    return reason.startswith("tag")


def skipped_summary(report_path: str | Path) -> str:
    """What an import left out, for the console: counts by reason and where the ids are listed.

    ``"skipped 3 of 63 tracks (decode error: 2, empty: 1) and 1 tag (tag: no word vector: 1); ids and reasons in
    RUN/prepare_report.json"``, or ``"nothing skipped (report: RUN/prepare_report.json)"``.
    """
    data = json.loads(Path(report_path).read_text())
    tracks = {reason: n for reason, n in data["counts"].items() if not is_tag_reason(reason)}
    tags = {reason: n for reason, n in data["counts"].items() if is_tag_reason(reason)}
    parts = []
    if tracks:
        parts.append(f"skipped {data['n_skipped_tracks']} of {data['n_candidates']} tracks ({_by_reason(tracks)})")
    if tags:
        n_tags = sum(tags.values())
        parts.append(f"{n_tags} tag{'s' if n_tags != 1 else ''} ({_by_reason(tags)})")
    if not parts:
        return f"nothing skipped (report: {report_path})"
    return (" and " if tracks else "skipped ").join(parts) + f"; ids and reasons in {report_path}"


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counts.items())


def copy_report(prepared_dir: str | Path, run_dir: str | Path) -> Path | None:
    """Copy the prepared folder's report into a run folder (``DIR/prepare_report.json``)."""
    source = Path(prepared_dir) / REPORT_FILE
    if not source.exists():
        return None
    target = Path(run_dir) / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    return atomic_write(target, lambda f: f.write(data))  # every rank of a DDP run copies it
