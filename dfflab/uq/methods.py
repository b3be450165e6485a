"""Uncertainty methods behind one interface, picked by name from :data:`METHODS`.

Each method takes the checkpoints it may draw on (:class:`Models`), a
:class:`Scorer` over the evaluation rows and the ``[uq]`` settings, and returns a
:class:`UQOutput` per split (``val``, ``test``): p(fake) per image, plus the
per-pass or per-member p(fake) when the method samples several predictions, from
which the predictive entropy and the mutual information (its epistemic part) follow.

``plain``            one deterministic pass: the "before" of every comparison.
``temperature``      logits / T with T fitted on validation NLL (Guo et al. 2017).
``mc-dropout``       T stochastic passes with the head's dropout on (Gal & Ghahramani 2016).
``ensemble``         mean p(fake) of M independently seeded detectors (Lakshminarayanan
                     et al. 2017); `dfflab uq ensemble` trains them.
``client-ensemble``  mean p(fake) of a federated run's final client models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfflab.metrics import binary_entropy
from dfflab.uq.calibration import fit_temperature, scale

SPLITS = ("val", "test")


@dataclass
class UQOutput:
    """Predictions of one method on one split."""

    probs: torch.Tensor  # (N,) p(fake)
    labels: torch.Tensor  # (N,) 0 real / 1 fake
    source_ids: torch.Tensor  # (N,)
    member_probs: torch.Tensor | None = None  # (K, N) per MC pass or ensemble member

    @property
    def entropy(self) -> torch.Tensor:
        """Predictive (total) entropy in bits of the averaged p(fake)."""
        return binary_entropy(self.probs)

    @property
    def mutual_info(self) -> torch.Tensor | None:
        """Epistemic part: entropy of the mean minus the mean entropy (bits); None for one prediction."""
        if self.member_probs is None:
            return None
        expected = binary_entropy(self.member_probs).mean(0)
        return (self.entropy - expected).clamp(min=0)  # >= 0 by concavity; clamp float noise

    def scores(self) -> dict[str, torch.Tensor]:
        """The uncertainty scores this method defines: ``entropy`` and maybe ``mutual_info``."""
        out = {"entropy": self.entropy}
        if self.member_probs is not None:
            out["mutual_info"] = self.mutual_info
        return out


@dataclass
class Models:
    """The checkpoints a method may draw on."""

    detector: Path  # the run's own detector.pt
    members: list[Path] = field(default_factory=list)  # deep-ensemble members
    clients: list[Path] = field(default_factory=list)  # a federated run's final client models


@dataclass
class MethodResult:
    outputs: dict[str, UQOutput]  # split -> predictions
    info: dict = field(default_factory=dict)  # fitted values (temperature, passes, members)


class Scorer:
    """Runs detector checkpoints over store rows and caches the logits, so methods share passes."""

    def __init__(self, store, rows: dict[str, np.ndarray], device: torch.device, *, batch_size: int = 256,
                 amp: bool = True, seed: int = 0, progress: bool = False):
        self.store, self.rows, self.device = store, rows, device
        self.batch_size, self.amp, self.seed, self.progress = batch_size, amp, seed, progress
        self._models: dict[Path, tuple[nn.Module, dict]] = {}
        self._logits: dict[tuple, object] = {}

    def model(self, path: Path) -> tuple[nn.Module, dict]:
        """(model on the device, checkpoint); raises ValueError if it doesn't fit the store."""
        from dfflab.device import prepare_model
        from dfflab.models import load_detector

        path = Path(path)
        if path not in self._models:
            model, ckpt = load_detector(path)
            if int(ckpt["image_size"]) != self.store.image_size:
                raise ValueError(f"{path}: trained on {ckpt['image_size']} px images but the store "
                                 f"{self.store.path} holds {self.store.image_size} px")
            self._models[path] = (prepare_model(model, self.device), ckpt)
        return self._models[path]

    def logits(self, path: Path, split: str, passes: int = 1):
        """:class:`~dfflab.train.core.Predictions` of ``path`` on ``split``; logits (passes, N) if passes > 1."""
        from dfflab.train.core import predict

        key = (Path(path), split, passes)
        if key not in self._logits:
            model, _ = self.model(path)
            mc = passes > 1
            if mc:
                torch.manual_seed(self.seed)  # the same MC samples on every rerun
            desc = f"{Path(path).parent.name}/{split}" + (f" x{passes}" if mc else "") if self.progress else None
            self._logits[key] = predict(model, self.store.batches(self.rows[split], self.batch_size), self.device,
                                        amp=self.amp, passes=passes, dropout=mc, desc=desc)
        return self._logits[key]


# -- methods ------------------------------------------------------------------------------
def plain(models: Models, scorer: Scorer, ucfg) -> MethodResult:
    out = {}
    for s in SPLITS:
        pred = scorer.logits(models.detector, s)
        out[s] = UQOutput(pred.probs, pred.labels, pred.source_ids)
    return MethodResult(out)


def temperature(models: Models, scorer: Scorer, ucfg) -> MethodResult:
    val = scorer.logits(models.detector, "val")
    t = fit_temperature(val.logits, val.labels)  # validation only: test never informs T
    out = {}
    for s in SPLITS:
        pred = scorer.logits(models.detector, s)
        out[s] = UQOutput(scale(pred.logits, t), pred.labels, pred.source_ids)
    return MethodResult(out, {"temperature": t})


def mc_dropout(models: Models, scorer: Scorer, ucfg) -> MethodResult:
    if ucfg.mc_samples < 1:
        raise ValueError(f"uq.mc-samples must be at least 1, got {ucfg.mc_samples}")
    model, _ = scorer.model(models.detector)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    out = {}
    for s in SPLITS:
        pred = scorer.logits(models.detector, s, passes=ucfg.mc_samples)
        z = pred.logits if pred.logits.ndim == 2 else pred.logits[None]  # (T, N)
        p = torch.sigmoid(z)
        out[s] = UQOutput(p.mean(0), pred.labels, pred.source_ids, p)
    info = {"passes": ucfg.mc_samples, "dropout": max(rates, default=0.0)}
    if not any(rates):
        info["warning"] = "the detector has no active dropout: every pass is the same prediction"
    return MethodResult(out, info)


def mean_of(paths: list[Path], scorer: Scorer) -> MethodResult:
    """Average p(fake) over detectors (deep ensembles average probabilities, not logits)."""
    out = {}
    for s in SPLITS:
        preds = [scorer.logits(p, s) for p in paths]
        for p in preds[1:]:
            if not torch.equal(p.labels, preds[0].labels):
                raise RuntimeError("ensemble members scored different rows")
        member = torch.stack([p.probs for p in preds])  # (M, N)
        out[s] = UQOutput(member.mean(0), preds[0].labels, preds[0].source_ids, member)
    return MethodResult(out, {"members": [str(p) for p in paths]})


def ensemble(models: Models, scorer: Scorer, ucfg) -> MethodResult:
    return mean_of(models.members, scorer)


def client_ensemble(models: Models, scorer: Scorer, ucfg) -> MethodResult:
    return mean_of(models.clients, scorer)


@dataclass(frozen=True)
class Method:
    fn: Callable[[Models, Scorer, object], MethodResult]
    needs: Callable[[Models], str | None] = lambda m: None  # why it can't run, or None


def _need_members(m: Models) -> str | None:
    if len(m.members) < 2:
        return ("no ensemble members: evaluate the run folder `dfflab uq ensemble` wrote, or pass "
                "--members RUN ... with other runs of the same setup")
    return None


def _need_clients(m: Models) -> str | None:
    if not m.clients:
        return "no client models: the run has no clients/*.pt or detector_client<p>.pt (federated runs only)"
    return None


METHODS: dict[str, Method] = {
    "plain": Method(plain),
    "temperature": Method(temperature),
    "mc-dropout": Method(mc_dropout),
    "ensemble": Method(ensemble, _need_members),
    "client-ensemble": Method(client_ensemble, _need_clients),
}
