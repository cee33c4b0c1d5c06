"""Plain Markdown and LaTeX tables (written by hand: pandas' ``to_markdown`` needs ``tabulate``, and its
``to_latex`` needs ``jinja2`` and escapes nothing by default)."""

from __future__ import annotations

from collections.abc import Sequence

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        header: column titles ``[n_columns]``.
        rows: cell texts, ``n_columns`` each; ``|`` is escaped.
        align: one letter per column, ``l`` or ``r`` (default: all left).
    """
    align = align or "l" * len(header)
    _check_widths(header, rows, align)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [_markdown_row(header), "| " + " | ".join(rule) + " |"]
    lines += [_markdown_row(row) for row in rows]
    return "\n".join(lines) + "\n"


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", r"\|").replace("\n", " ") for c in cells) + " |"


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``balanced_weighted`` -> ``balanced\\_weighted``)."""
    return "".join(_LATEX_SPECIALS.get(c, c) for c in str(text))


def latex_tabular(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str,
                  note: str | None = None) -> str:
    """A ``tabular`` with ``\\hline`` rules (no package needed). Cells are inserted verbatim: escape text with
    :func:`latex_escape` first. ``note`` (already escaped) becomes a last row spanning every column."""
    _check_widths(header, rows, align)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\hline", " & ".join(header) + r" \\", r"\hline"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines.append(r"\hline")
    if note:
        lines += [rf"\multicolumn{{{len(align)}}}{{l}}{{\footnotesize {note}}} \\"]
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def _check_widths(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> None:
    if len(align) != len(header) or set(align) - {"l", "r", "c"}:
        raise ValueError(f"align must have one of l/r/c per column ({len(header)}), got {align!r}")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)} has {len(row)} cells, the header {len(header)}")
