"""Scoring a detector on store rows: the one function every trainer and evaluation uses.

:func:`score` takes a model in memory (a trainer's per-epoch val/test scoring, the
Flower server's global model, a client's validation); :func:`score_checkpoint` loads a
``detector.pt`` first (crossgen, distortions, UQ, tests). Both return :class:`Scores`:
metrics overall and per fake source at one threshold, the predictions behind them and
that threshold -- chosen on these rows (max balanced accuracy) when none is given, as on
validation. :func:`metrics_table` prints a result.

Scores are NaN-safe: a model wrecked by an attack or a diverged run may output NaN or
Inf; such scores count as 0.5 (no information) and ``nonfinite_frac`` says how many.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dfflab.device import prepare_model
from dfflab.evidence import Scored, intervals
from dfflab.metrics import binary_metrics, choose_threshold, per_source_metrics
from dfflab.models import load_detector
from dfflab.train.core import Predictions, predict

EVAL_BATCH = 256
SHOWN = ("accuracy", "balanced_accuracy", "auroc", "ap", "eer", "f1", "precision", "recall")


@dataclass
class Scores:
    """A detector scored on one set of rows."""

    overall: dict  # binary_metrics (+ ``loss`` with a loss function, + ``nonfinite_frac``)
    per_source: dict  # {fake source: metrics of its fakes vs all reals}
    pred: Predictions
    threshold: float
    rows: np.ndarray | None = None  # the store rows scored, in order (None for plain batches)
    source_names: list = field(default_factory=list)

    @property
    def probs(self) -> np.ndarray:
        """p(fake) as scored (non-finite scores as 0.5), float64."""
        p = torch.as_tensor(self.pred.probs).double()
        return torch.where(torch.isfinite(p), p, 0.5).numpy()

    def add_intervals(self, n_resamples: int, seed: int = 0) -> Scores:
        """Put the 95% bootstrap intervals (``auroc_ci``, ...) into ``overall`` and each source's dict."""
        if n_resamples <= 0:
            return self
        labels, ids, probs = self.pred.labels.numpy(), self.pred.source_ids.numpy(), self.probs
        self.overall.update(intervals(probs, labels, self.threshold, n_resamples, seed))
        for k, name in enumerate(self.source_names):
            if name in self.per_source:
                keep = (labels == 0) | ((ids == k) & (labels == 1))
                self.per_source[name].update(intervals(probs[keep], labels[keep], self.threshold, n_resamples, seed))
        return self

    def scored(self) -> Scored:
        """These scores as :class:`dfflab.evidence.Scored` (for a paired comparison in memory)."""
        rows = np.asarray(self.rows if self.rows is not None else np.arange(len(self.probs)))
        return Scored(rows=rows, labels=self.pred.labels.numpy(), probs=self.probs, threshold=self.threshold)

    def save(self, path: str | Path) -> Path:
        """``test_scores.npz``: rows, labels, source ids, p(fake) and the threshold, for paired comparisons."""
        import io

        from dfflab.files import atomic_write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, rows=np.asarray(self.rows if self.rows is not None else []), probs=self.probs,
                            labels=self.pred.labels.numpy(), source_ids=self.pred.source_ids.numpy(),
                            threshold=np.float64(self.threshold), source_names=np.array(self.source_names))
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)


def load_scored(path: str | Path) -> Scored:
    """A run's ``test_scores.npz`` as :class:`dfflab.evidence.Scored` (for paired comparisons)."""
    with np.load(path) as z:
        return Scored(rows=z["rows"], labels=z["labels"], probs=z["probs"], threshold=float(z["threshold"]))


def score(model, store, rows: np.ndarray, device: torch.device, *, threshold: float | None = None,
          loss_fn: Callable | None = None, amp: bool = True, transform: Callable | None = None,
          batch_size: int = EVAL_BATCH) -> Scores:
    """Score ``model`` on store ``rows`` (``threshold=None``: choose it on these rows).

    Args:
        loss_fn: if given, ``overall["loss"]`` is its value on these rows' logits.
        transform: applied to the float images on the device first (distortions).
    """
    out = score_batches(model, store.batches(rows, batch_size), device, store.source_names, threshold=threshold,
                        loss_fn=loss_fn, amp=amp, transform=transform)
    out.rows = np.asarray(rows)
    return out


def score_batches(model, batches: Iterable, device: torch.device, source_names: list[str], *,
                  threshold: float | None = None, loss_fn: Callable | None = None, amp: bool = True,
                  transform: Callable | None = None) -> Scores:
    """:func:`score` on any iterable of ``(x uint8, y, source_id)`` batches."""
    pred = predict(model, batches, device, amp=amp, transform=transform)
    probs = torch.as_tensor(pred.probs)
    bad = ~torch.isfinite(probs)
    probs = torch.where(bad, 0.5, probs)
    thr = choose_threshold(probs, pred.labels) if threshold is None else float(threshold)
    overall = binary_metrics(probs, pred.labels, thr)
    if loss_fn is not None:
        overall["loss"] = float(loss_fn(pred.logits.to(device), pred.labels.float().to(device)))
    overall["nonfinite_frac"] = float(bad.float().mean()) if len(bad) else 0.0
    per_source = per_source_metrics(probs, pred.labels, pred.source_ids, source_names, thr)
    return Scores(overall, per_source, pred, thr, source_names=list(source_names))


def score_checkpoint(path: str | Path, store, rows: np.ndarray, device: torch.device | str = "cpu", *,
                     threshold: float | None = None, transform: Callable | None = None, amp: bool = True,
                     batch_size: int = EVAL_BATCH) -> Scores:
    """Score a ``detector.pt`` on store ``rows`` at its own (val-chosen) threshold.

    Args:
        threshold: overrides the checkpoint's threshold.

    Raises:
        ValueError: the checkpoint was trained at another image size than the store holds.
    """
    device = torch.device(device) if isinstance(device, str) else device
    model, ckpt = load_detector(path)
    if int(ckpt["image_size"]) != store.image_size:
        raise ValueError(f"{path}: trained on {ckpt['image_size']} px images but the store {store.path} holds "
                         f"{store.image_size} px; set data.image-size={ckpt['image_size']}")
    thr = float(ckpt.get("threshold", 0.5)) if threshold is None else threshold
    return score(prepare_model(model, device), store, rows, device, threshold=thr, amp=amp, transform=transform,
                 batch_size=batch_size)


def metrics_table(overall: dict, per_source: dict, title: str = "") -> str:
    """A fixed-width table: one line overall, one per fake source."""
    head = f"{'':<12}" + "".join(f"{k[:9]:>10}" for k in SHOWN)
    lines = [title, head] if title else [head]
    for name, m in [("all", overall), *per_source.items()]:
        lines.append(f"{name:<12}" + "".join(f"{m.get(k, float('nan')):>10.4f}" for k in SHOWN))
    return "\n".join(lines)
