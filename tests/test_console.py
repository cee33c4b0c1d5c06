"""What a run prints, as a user sees it in a terminal: every message once, no advert, no deprecation noise; an
import says what it skipped."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import TINY_SYNTHETIC, run_main

PROGRESS = re.compile(r"[━█▏▎▍▌▋▊▉]|\d+/\d+ \[|it/s|s/it|song/s|track/s")
TABLE_RULE = re.compile(r"^[+\-=| ]+$")
# a log record's decoration: Hydra's "[time][logger][LEVEL] - ", or Lightning's own "LEVEL: "
LOG_PREFIX = re.compile(r"^(\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - |(DEBUG|INFO|WARNING|ERROR): )")


def message_lines(output: str) -> list[str]:
    """The messages a user reads, without their log decoration; no progress bars (nor the metrics Rich wraps
    under them), table rules or blank lines."""
    lines, after_bar = [], False
    for line in output.replace("\r", "\n").splitlines():
        if PROGRESS.search(line):
            after_bar = True
            continue
        if after_bar and line.startswith(" " * 20):  # the bar's metrics, wrapped onto the next line
            continue
        after_bar = False
        if line.strip() and not TABLE_RULE.match(line):
            lines.append(LOG_PREFIX.sub("", line))
    return lines


def test_a_training_run_prints_each_line_once_without_advert_or_deprecation_warnings(tmp_path, synthetic_root):
    # top_k=50 > the 45 songs of the tiny test split: the run must say that P@k is taken at k=45
    result = run_main([f"data.root={synthetic_root}", *TINY_SYNTHETIC, "experiment=smoke", "top_k=50",
                       f"hydra.run.dir={tmp_path / 'run'}"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    lines = message_lines(output)
    repeated = {line: n for line, n in Counter(lines).items() if n > 1}
    assert repeated == {}, output
    # Lightning's INFO lines are there, once, in the run's log format (and in its main.log)
    assert sum("GPU available" in line for line in lines) == 1
    assert sum("Seed set to 42" in line for line in lines) == 1
    assert "Seed set to 42" in (tmp_path / "run" / "main.log").read_text()
    assert "litlogger" not in output and "Tip:" not in output
    assert "deprecated" not in output.lower(), output
    assert any(line.startswith("metrics written to") for line in lines)
    n_test = json.loads((tmp_path / "run" / "metrics" / "test.json").read_text())["n_songs"]
    assert n_test < 50
    assert (f"test split: the split has {n_test} songs, fewer than k=50: precision is computed at k={n_test} "
            f"(p_at_{n_test})") in lines
    assert f"note: the split has {n_test} songs, fewer than k=50: precision is computed at k={n_test} " \
           f"(p_at_{n_test})" in lines


def write_folder_dataset(root: Path, *, n_good: int = 12) -> None:
    """``n_good`` short tones in ``root/audio`` by 4 artists, a corrupt and an empty file, and ``tags.csv``."""
    (root / "audio").mkdir(parents=True)
    rows = []
    for i in range(n_good):
        t = np.arange(22050) / 22050
        sf.write(root / "audio" / f"t{i:02d}.wav", 0.4 * np.sin(2 * np.pi * (200 + 30 * i) * t), 22050)
        rows.append(f"t{i:02d},{'rock' if i % 2 else 'jazz'},a{i % 4}")
    (root / "audio" / "broken.wav").write_bytes(b"RIFF not really a wav file at all")
    (root / "audio" / "blank.wav").write_bytes(b"")
    rows += ["broken,rock,a0", "blank,jazz,a1"]
    (root / "tags.csv").write_text("track_id,tags,artist\n" + "\n".join(rows) + "\n")


def test_the_import_summary_counts_skipped_files_by_reason_and_names_the_report(tmp_path):
    write_folder_dataset(tmp_path / "mydata")
    run_dir = tmp_path / "run"
    result = run_main(["mode=prepare", "data=folder", f"data.root={tmp_path / 'mydata'}",
                       "data.max_skipped_fraction=0.5", "progress=false", f"hydra.run.dir={run_dir}"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    report = json.loads((run_dir / "prepare_report.json").read_text())
    assert report["n_skipped_tracks"] == 2 and sum(report["counts"].values()) == 2
    summary = next(line for line in output.splitlines() if "prepared dataset 'folder'" in line)
    by_reason = ", ".join(f"{reason}: {n}" for reason, n in report["counts"].items())
    assert f"12 tracks, 2 tags; skipped 2 of 14 tracks ({by_reason}); ids and reasons in {run_dir}" in summary
