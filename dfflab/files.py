"""Writing outputs safely: atomic files, JSON, checkpoints, CSV tables, Markdown tables, figures.

Every writer goes through a temp file in the target folder and a rename, so a crash leaves
either the old file or the new one, never half of one. Run folders (:mod:`dfflab.runs`),
the store, the report and every stage write through these.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """torch.save through a temp file; load with :func:`load_checkpoint`."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors are many; name the file
        raise RuntimeError(f"{path}: not a loadable dfflab checkpoint ({e})") from e


# -- tables -------------------------------------------------------------------------------
def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
             fmt: Callable[[Any], Any] | None = None) -> str:
    """CSV of dict rows; the columns are ``columns`` or the union of the rows' keys in first-seen
    order (a key that appears only in later rows leaves earlier cells blank)."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), restval="", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: fmt(v) for k, v in r.items()} if fmt else r)
    return buf.getvalue()


def write_csv(path: Path | str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
              fmt: Callable[[Any], Any] | None = None) -> None:
    """Write :func:`csv_text` atomically."""
    atomic_write_text(path, csv_text(rows, columns, fmt))


def read_csv(path: Path | str) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings ([] when the file does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals (one above 100), NaN and None as '–'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.{digits}f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], cell: Callable[[Any], str] = fmt) -> str:
    """A Markdown table (one line per row, ending in a newline); cells through ``cell``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- figures ------------------------------------------------------------------------------
def pyplot():
    """matplotlib's pyplot with the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path | str, dpi: int = 120, **kwargs: Any) -> Path:
    """Lay out, save (atomically) and close ``fig``; returns ``path``."""
    path = Path(path)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=path.suffix.lstrip(".") or "png", **kwargs)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
