"""The README and docs/ as a reader meets them: every relative link and anchor leads somewhere, docs/README.md lists
every page, the README stays short, and the Quickstart's test command is the one CI runs (.ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = sorted([README, *(REPO / "docs").rglob("*.md")])
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), ![alt](image); the text may span lines
HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$", re.MULTILINE)


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `#` comment or a `[x](y)` in code is not a heading or a link)."""
    return FENCE.sub("", page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`; repeats get -1, -2."""
    seen: dict[str, int] = {}
    out = set()
    for _, title in HEADING.findall(prose(page)):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page)) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_pages_are_found():
    # guards the tests below against passing on an empty list: the README and the pages it was split into
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert {"README.md", "docs/README.md", "docs/recipe.md", "docs/errors.md", "docs/datasets/msd500.md"} <= names
    assert sum(len(relative_links(p)) for p in PAGES) > 50


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file {dest.relative_to(REPO) if REPO in dest.parents else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_docs_index_lists_every_page():
    index = REPO / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in relative_links(index)}
    missing = [p.relative_to(REPO).as_posix() for p in PAGES if p.is_relative_to(index.parent) and p != index
               and p.resolve() not in linked]
    assert not missing, f"pages that docs/README.md does not list (add a row to its table): {missing}"


def test_readme_is_short_and_links_the_index():
    n_lines = len(README.read_text().splitlines())
    assert n_lines <= 300, f"README.md has {n_lines} lines: move the details into a docs/ page (issue 15: <= ~300)"
    assert "docs/README.md" in relative_links(README)


def test_quickstart_test_command_is_what_ci_runs():
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = FENCE.findall(quickstart)[0].splitlines()[1:-1]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command == 'pip install torch==2.13.0 -e ".[test]" && python -m pytest'
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()


def test_scaling_table_is_what_its_command_prints():
    """docs/scale-out.md's table of the scaling rules is pasted output: its command, run, prints it again."""
    import os
    import shlex
    import subprocess
    import sys

    page = (REPO / "docs" / "scale-out.md").read_text()
    section = page.split("## Scaling rules", 1)[1].split("\n## ", 1)[0]
    command = next(line for line in section.splitlines() if line.startswith("python -m tagretrieval.training.recipe"))
    table = "\n".join(line for line in section.split(command, 1)[1].splitlines() if line.startswith("|"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, *shlex.split(command)[1:]], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    assert out.strip() == table.strip()
