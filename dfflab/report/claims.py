"""Sentences of the discussion: each one carries the numbers (with intervals) it rests on and links
the run folders they come from; the words for a comparison follow its paired interval."""

from __future__ import annotations

from dataclasses import dataclass, field

from dfflab.report.cells import ci, diff, interval
from dfflab.report.collect import RunInfo


@dataclass
class Claims:
    """An ordered list of discussion sentences, grouped under headings."""

    parts: list[tuple[str, list[str]]] = field(default_factory=list)

    def section(self, heading: str) -> None:
        self.parts.append((heading, []))

    def say(self, text: str, *runs: RunInfo) -> None:
        """One sentence; ``runs`` are linked at its end."""
        links = ", ".join(dict.fromkeys(r.link for r in runs if r is not None))
        self.parts[-1][1].append(text.rstrip(".") + "." + (f" ({links})" if links else ""))

    def lines(self) -> list[str]:
        out = []
        for heading, sentences in self.parts:
            if sentences:
                out += [heading, ""] + [f"- {s}" for s in sentences] + [""]
        return out

    def sentences(self) -> list[str]:
        return [s for _, ss in self.parts for s in ss]


def auroc(r: RunInfo, where: str = "test") -> str:
    """``0.912 [0.880, 0.940]``: a run's test AUROC with its interval."""
    return ci(r.summary.get(where), "auroc")


def compared(comp: dict) -> str:
    """``difference +0.012 [-0.010, +0.034]: no significant difference``; with seeds, the seed count."""
    seeds = f" over {comp['n_seeds']} paired seeds" if comp.get("n_seeds", 1) > 1 else ""
    return f"paired difference {diff(comp)}{seeds}: {comp['verdict']}"


def overlap(a: list | None, b: list | None) -> bool | None:
    """Whether two intervals overlap (None if either is missing)."""
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def iv(m: dict | None, key: str = "auroc") -> str:
    return interval((m or {}).get(f"{key}_ci"))
