"""Unseen generators: does uncertainty flag fakes from a generator the detector never saw?

In a leave-one-generator-out run (``train.train-sources`` lacks a fake source that
``train.test-sources`` has), for each held-out generator h and each uncertainty score:

* ``separation_auroc``: AUROC of the score separating h's test fakes (positives)
  from the seen generators' test fakes (negatives). 0.5 = the score can't tell them
  apart; above 0.5 = h's fakes look more uncertain, as one would hope.
* on h's test set (all test reals + h's fakes): accuracy at full coverage, at
  ``uq.coverage`` (the most uncertain abstained within this set), and under the
  abstain threshold fitted on validation (seen sources), with the coverage that
  threshold actually leaves — a drop against the seen set shows the detector abstains
  more on the unseen generator. The seen set's numbers sit beside them.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_auroc

from dfflab.uq.methods import UQOutput
from dfflab.uq.selective import accuracy_at_coverage


def held_out_sources(train_sources: list[str], test_sources: list[str], fake_sources: list[str]) -> list[str]:
    """Fake sources tested on but never trained on (the LOGO held-out generator(s))."""
    return [s for s in test_sources if s in fake_sources and s not in train_sources]


def _subset_scores(out: UQOutput, mask: torch.Tensor, threshold: float, coverage: float,
                   abstain_at: float) -> dict[str, float]:
    p, y, u = out.probs[mask], out.labels[mask], out.entropy[mask]
    correct = ((p > threshold).long() == y).double()
    kept = u <= abstain_at
    return {"n": int(mask.sum()), "accuracy": float(correct.mean()),
            "acc_at_coverage": accuracy_at_coverage(u, correct, coverage),
            "val_threshold_coverage": float(kept.double().mean()),
            "val_threshold_accuracy": float(correct[kept].mean()) if kept.any() else float("nan")}


def unseen_scores(out: UQOutput, source_names: list[str], held_out: str, seen: list[str], *,
                  threshold: float, coverage: float, abstain_at: float) -> dict:
    """Separation AUROC per uncertainty score and selective accuracy on held-out vs seen sets.

    Args:
        out: the method's test predictions.
        held_out: the generator never trained on; ``seen``: the trained-on fake sources.
        threshold: the method's p(fake) decision threshold (chosen on val).
        abstain_at: the entropy threshold fitted on val for ``coverage``.
    """
    sid, y = out.source_ids, out.labels
    is_h = (sid == source_names.index(held_out)) & (y == 1)
    is_seen = torch.isin(sid, torch.tensor([source_names.index(s) for s in seen])) & (y == 1)
    if not is_h.any() or not is_seen.any():
        raise ValueError(f"the test rows need fakes of both the held-out source {held_out} and seen "
                         f"sources {seen}; check train.test-sources")
    fakes = is_h | is_seen
    target = is_h[fakes].long()
    sep = {name: float(binary_auroc(s[fakes].float(), target)) for name, s in out.scores().items()}
    real = y == 0
    return {"separation_auroc": sep,
            "held_out": _subset_scores(out, real | is_h, threshold, coverage, abstain_at),
            "seen": _subset_scores(out, real | is_seen, threshold, coverage, abstain_at),
            "mean_entropy_fakes": {"held_out": float(out.entropy[is_h].mean()),
                                   "seen": float(out.entropy[is_seen].mean())}}
