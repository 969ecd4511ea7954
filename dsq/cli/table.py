"""Plain-text and markdown tables for CLI output (no dependency, aligned columns)."""

from __future__ import annotations


def format_table(headers: list[str], rows: list[list[object]], markdown: bool = False) -> str:
    """Columns padded to their widest cell; ``markdown=True`` adds pipes and the header rule."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if markdown:
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(headers), rule] + [line(r) for r in cells])
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in cells])
