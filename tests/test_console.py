"""What a run prints, as a user sees it in a terminal: every message once, no advert, no deprecation noise."""

from __future__ import annotations

import re
from collections import Counter

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
    result = run_main([f"data.root={synthetic_root}", *TINY_SYNTHETIC, "experiment=smoke",
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
