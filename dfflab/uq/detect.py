"""Uncertainty for ``dfflab detect``: calibrated p(fake), an uncertainty, and abstaining.

``dfflab detect`` (dfflab/centralized/cli.py) calls these per batch of images:

    p, unc = detect_uncertainty(model, ckpt, x, method="temperature")
    thr = decision_threshold(ckpt, "temperature")           # on the calibrated scale
    abstain = should_abstain(unc, abstain_threshold(ckpt, "temperature", cfg.uq))
    label = "uncertain" if abstain else ("fake" if p > thr else "real")

The temperature and thresholds come from the checkpoint, where
`dfflab uq evaluate RUN` stored them after fitting on validation; an uncalibrated
checkpoint has temperature 1 (p(fake) as trained) and the default abstain entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from dfflab.uq.calibration import binary_entropy

DETECT_METHODS = ("temperature", "mc-dropout")
DEFAULT_ABSTAIN_ENTROPY = 0.9  # bits: abstains when 0.32 < p(fake) < 0.68, used before any fit


@torch.no_grad()
def detect_uncertainty(model: nn.Module, ckpt: dict, x: torch.Tensor, method: str = "temperature",
                       passes: int | None = None, score: str = "entropy") -> tuple[torch.Tensor, torch.Tensor]:
    """(p(fake), uncertainty), each (B,), for a float image batch ``x`` (B, 3, S, S) in [0, 1].

    Args:
        model: the detector, on ``x``'s device.
        ckpt: its checkpoint dict (``temperature``, and ``uq`` once evaluated).
        method: ``temperature`` (one pass, logits / T) or ``mc-dropout`` (``passes``
            stochastic passes, default the checkpoint's fitted ``uq.mc_samples`` or 20).
        score: ``entropy`` (predictive entropy, bits) or, with mc-dropout,
            ``mutual-info`` (its epistemic part).
    """
    if method not in DETECT_METHODS:
        raise ValueError(f"unknown detect uncertainty method '{method}' (known: {', '.join(DETECT_METHODS)})")
    if score not in ("entropy", "mutual-info") or (score == "mutual-info" and method != "mc-dropout"):
        raise ValueError(f"score '{score}' needs method mc-dropout (entropy works with both)")
    was_training = model.training
    model.eval()
    try:
        if method == "temperature":
            p = torch.sigmoid(model(x).float() / float(ckpt.get("temperature", 1.0)))
            return p, binary_entropy(p)
        t = passes or int(ckpt.get("uq", {}).get("mc_samples", 20))
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        member = torch.sigmoid(torch.stack([model(x).float() for _ in range(t)]))  # (T, B)
        p = member.mean(0)
        h = binary_entropy(p)
        if score == "entropy":
            return p, h
        return p, (h - binary_entropy(member).mean(0)).clamp(min=0)
    finally:
        model.train(was_training)


def should_abstain(uncertainty: torch.Tensor, threshold: float) -> torch.Tensor:
    """True where the image is too uncertain to label (uncertainty above ``threshold``)."""
    return uncertainty > threshold


def decision_threshold(ckpt: dict, method: str = "temperature") -> float:
    """The p(fake) threshold on the scale :func:`detect_uncertainty` returns.

    The checkpoint's threshold was chosen on uncalibrated validation scores;
    temperature scaling maps it monotonically (the decisions stay the same). For
    mc-dropout, the threshold `uq evaluate` chose on validation, if fitted.
    """
    from dfflab.centralized.detect import calibrated_threshold

    thr = float(ckpt.get("threshold", 0.5))
    if method == "mc-dropout":
        return float(ckpt.get("uq", {}).get("thresholds", {}).get("mc-dropout", thr))
    return calibrated_threshold(thr, float(ckpt.get("temperature", 1.0)))


def abstain_threshold(ckpt: dict, method: str = "temperature", ucfg=None, score: str = "entropy") -> float:
    """The uncertainty (bits) above which ``detect --abstain`` abstains.

    For entropy: ``uq.abstain-entropy`` if set (> 0), else the threshold `uq evaluate`
    fitted on validation for ``uq.coverage``, else :data:`DEFAULT_ABSTAIN_ENTROPY`.
    For mutual-info only the fitted threshold exists.

    Raises:
        ValueError: mutual-info asked for but never fitted for this checkpoint.
    """
    key = score.replace("-", "_")
    if key == "entropy" and ucfg is not None and ucfg.abstain_entropy > 0:
        return float(ucfg.abstain_entropy)
    fitted = ckpt.get("uq", {}).get("abstain", {}).get(method, {})
    if key in fitted:
        return float(fitted[key])
    if key == "entropy":
        return DEFAULT_ABSTAIN_ENTROPY
    raise ValueError(f"no {score} abstain threshold in this checkpoint: run `dfflab uq evaluate` on its run first")
