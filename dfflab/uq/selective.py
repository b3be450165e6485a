"""Selective prediction: abstain on the most uncertain images, measure the rest.

The risk-coverage curve (Geifman & El-Yaniv 2017) sorts images from most to least
certain; at coverage k/N the k most certain are kept and the risk is their error
rate. AURC is the mean risk over k = 1..N (lower is better); E-AURC subtracts the
AURC of an oracle that abstains on the errors first, leaving what the uncertainty
score costs. Ties in the uncertainty (saturated p = 1, say) are averaged over every
order of the tied images, so a score with many ties earns no luck from sort order.
"""

from __future__ import annotations

import math

import torch


def _expected_cum_errors(uncertainty: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """(N,) expected errors among the k most certain images, k = 1..N, ties averaged."""
    u = uncertainty.double().cpu().flatten()
    err = 1.0 - correct.double().cpu().flatten()
    if len(u) == 0 or len(u) != len(err):
        raise ValueError(f"need matching non-empty uncertainty and correctness, got {len(u)} and {len(err)}")
    order = torch.argsort(u, stable=True)
    u, err = u[order], err[order]
    _, group, counts = torch.unique_consecutive(u, return_inverse=True, return_counts=True)
    group_err = torch.zeros(len(counts), dtype=torch.float64).scatter_add_(0, group, err)
    before = torch.cumsum(group_err, 0) - group_err  # errors of all more certain groups
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(u)) - start[group]  # 0-based place inside the tied group
    return before[group] + (pos + 1) * (group_err / counts)[group]


def risk_coverage(uncertainty: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(coverage, risk), both (N,): coverage k/N and the error rate of the k most certain.

    Args:
        uncertainty: (N,) higher = less certain (abstained first).
        correct: (N,) 1 where the prediction is right.
    """
    cum = _expected_cum_errors(uncertainty, correct)
    k = torch.arange(1, len(cum) + 1, dtype=torch.float64)
    return k / len(cum), cum / k


def aurc(uncertainty: torch.Tensor, correct: torch.Tensor) -> float:
    """Area under the risk-coverage curve: mean risk over coverages 1/N .. 1."""
    return float(risk_coverage(uncertainty, correct)[1].mean())


def oracle_aurc(correct: torch.Tensor) -> float:
    """AURC of the best possible score: every error abstained before any correct image."""
    n = len(correct)
    n_err = int((correct == 0).sum())
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((k - (n - n_err)).clamp(min=0) / k).mean())


def accuracy_at_coverage(uncertainty: torch.Tensor, correct: torch.Tensor, coverage: float) -> float:
    """Accuracy on the ``round(coverage * N)`` most certain images (at least one)."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage} (setting uq.coverage)")
    cum = _expected_cum_errors(uncertainty, correct)
    k = max(1, round(coverage * len(cum)))
    return float(1 - cum[k - 1] / k)


def threshold_for_coverage(uncertainty: torch.Tensor, coverage: float) -> float:
    """The uncertainty at or below which a share ``coverage`` of these images lies.

    Fitted on validation, it is the abstain threshold ``detect --abstain`` applies.
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage} (setting uq.coverage)")
    u = torch.sort(uncertainty.double().cpu().flatten()).values
    return float(u[max(1, math.ceil(coverage * len(u))) - 1])


def selective_scores(uncertainty: torch.Tensor, correct: torch.Tensor, coverage: float) -> dict[str, float]:
    """``aurc``, ``e_aurc``, ``acc_at_coverage`` and ``risk_at_coverage``."""
    a = aurc(uncertainty, correct)
    acc = accuracy_at_coverage(uncertainty, correct, coverage)
    return {"aurc": a, "e_aurc": a - oracle_aurc(correct), "acc_at_coverage": acc,
            "risk_at_coverage": 1 - acc, "coverage": coverage}


def curve_points(uncertainty: torch.Tensor, correct: torch.Tensor, points: int = 101) -> dict[str, list]:
    """The risk-coverage curve at ``points`` evenly spaced coverages, for uq.json and plots."""
    cov, risk = risk_coverage(uncertainty, correct)
    idx = torch.linspace(0, len(cov) - 1, min(points, len(cov))).round().long().unique()
    return {"coverage": cov[idx].tolist(), "risk": risk[idx].tolist()}
