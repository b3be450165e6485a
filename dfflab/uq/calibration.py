"""Calibration: temperature scaling and the scores that judge p(fake).

Every function takes p(fake) (or logits) and 0/1 labels as 1-D tensors.

* :func:`fit_temperature` — temperature scaling (Guo et al. 2017, sec. 4.2): one
  scalar T > 0 dividing the logits, fitted by minimising the NLL on *validation*
  logits only. It cannot change which image ranks above which, so AUROC and the
  decisions at p = 0.5 stay as they were; only the confidence changes.
* :func:`ece` — expected calibration error via torchmetrics'
  ``binary_calibration_error``: equal-width bins over p(fake), the gap between the
  mean p(fake) and the share of fakes in each bin, weighted by the bin's share.
* :func:`nll`, :func:`brier`, :func:`reliability_bins` (the same bins as the ECE, for
  the diagram); the predictive entropy is :func:`dfflab.metrics.binary_entropy`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_calibration_error

EPS = 1e-7  # keeps log(0) out of the NLL for probabilities that round to 0 or 1
# A detector whose val logits carry no signal drives T to infinity: every p(fake) would
# round to exactly 0.5 in float32, tying all images and so changing the ranking. T is
# clamped to this range, wide enough for any real detector (Guo et al. report T < 5);
T_RANGE = (0.01, 100.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T minimising the mean NLL of ``sigmoid(logits / T)``.

    Optimises log T with L-BFGS (strong Wolfe line search), so T stays positive;
    the result is clamped to :data:`T_RANGE`.

    Args:
        logits: (N,) validation logits of p(fake).
        labels: (N,) 0 real / 1 fake.

    Raises:
        ValueError: empty inputs or only one class (T would run off to 0 or infinity).
    """
    z, y = logits.detach().double().cpu().flatten(), labels.detach().double().cpu().flatten()
    if len(z) == 0 or len(z) != len(y):
        raise ValueError(f"fit_temperature needs matching non-empty logits and labels, got {len(z)} and {len(y)}")
    if y.min() == y.max():
        raise ValueError("fit_temperature needs both reals and fakes in the validation rows")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    log_t = float(log_t.detach())
    if math.isnan(log_t):
        raise FloatingPointError("temperature fit diverged (log T is NaN)")
    return min(max(math.exp(min(log_t, 700.0)), T_RANGE[0]), T_RANGE[1])


def scale(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Calibrated p(fake) = sigmoid(logits / T), in float64 so a large T ties no images."""
    return torch.sigmoid(logits.double() / temperature)


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error (L1) of p(fake) over ``n_bins`` equal-width bins."""
    return float(binary_calibration_error(probs.float().cpu(), labels.long().cpu(), n_bins=n_bins, norm="l1"))


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood (nats) of the labels under p(fake)."""
    p = probs.double().cpu().clamp(EPS, 1 - EPS)
    return float(F.binary_cross_entropy(p, labels.double().cpu()))


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean squared error between p(fake) and the 0/1 label."""
    return float(((probs.double().cpu() - labels.double().cpu()) ** 2).mean())


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, list]:
    """Per bin: edges, count, mean p(fake) and share of fakes — the reliability diagram.

    Binning matches torchmetrics' ECE exactly (``bucketize(right=True)``): bin i < n
    holds ``edges[i] <= p < edges[i+1]`` and an extra bin n holds p == 1 (common for
    over-confident float32 sigmoids), so ``sum(count/N * |frac_fake - mean_prob|)``
    over the n + 1 bins is :func:`ece`.
    """
    p, y = probs.double().cpu(), labels.double().cpu()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(p, edges, right=True) - 1  # 0..n; p < 0 is impossible for probabilities
    count = torch.zeros(n_bins + 1, dtype=torch.float64).scatter_add_(0, idx, torch.ones_like(p))
    psum = torch.zeros(n_bins + 1, dtype=torch.float64).scatter_add_(0, idx, p)
    ysum = torch.zeros(n_bins + 1, dtype=torch.float64).scatter_add_(0, idx, y)
    safe = count.clamp(min=1)
    return {"edges": edges.tolist(), "count": count.long().tolist(),
            "mean_prob": (psum / safe).tolist(), "frac_fake": (ysum / safe).tolist()}


def calibration_scores(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """``{"ece", "nll", "brier"}`` of p(fake) against the labels."""
    return {"ece": ece(probs, labels, n_bins), "nll": nll(probs, labels), "brier": brier(probs, labels)}
