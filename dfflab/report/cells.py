"""How the report writes numbers: a value with its 95% interval, a signed difference, a table.

Every number is written with three decimals (FID with one) so that a sentence and the run
folder it comes from can be matched digit for digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dfflab.files import markdown_table
from dfflab.report.collect import fmt


def interval(ci: Sequence[float] | None, digits: int = 3, signed: bool = False) -> str:
    """``[0.880, 0.940]`` (empty when there is none)."""
    if not ci or len(ci) != 2 or any(v is None for v in ci):
        return ""
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return "[" + ", ".join(f.format(float(v)) for v in ci) + "]"


def ci(m: dict | None, key: str, digits: int = 3) -> str:
    """``0.912 [0.880, 0.940]``: ``m[key]`` with ``m[key + "_ci"]`` when the run recorded it; '–' if absent."""
    if not isinstance(m, dict) or m.get(key) is None:
        return "–"
    v = m[key]
    text = f"{float(v):.{digits}f}" if isinstance(v, int | float) else str(v)
    iv = interval(m.get(f"{key}_ci"), digits)
    return f"{text} {iv}" if iv else text


def signed(v: float, digits: int = 3) -> str:
    return f"{float(v):+.{digits}f}"


def diff(comp: dict) -> str:
    """A paired comparison as ``+0.012 [-0.010, +0.034]``."""
    return f"{signed(comp['diff'])} {interval(comp['ci'], signed=True)}"


def secs(v: Any) -> str:
    """Seconds with one decimal ('–' when absent)."""
    return f"{float(v):.1f}" if isinstance(v, int | float) and not isinstance(v, bool) else fmt(v)


def cell(v: Any) -> str:
    """A table cell: strings as they are, numbers through :func:`fmt`."""
    return v if isinstance(v, str) else fmt(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table as report lines, followed by a blank line."""
    return markdown_table(header, rows, cell=cell).rstrip("\n").split("\n") + [""]
