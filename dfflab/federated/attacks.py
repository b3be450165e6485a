"""Malicious clients (``fl.malicious``, ``fl.attack``) and the server's check for garbage.

A client whose partition id is listed in ``fl.malicious`` attacks every round:

==========  ==========================================================================
label-flip  trains on flipped labels (real <-> fake): a data-poisoning client whose
            update looks ordinary (Tolpegin et al. 2020).
scale       sends ``w_global + fl.attack-scale * (w_local - w_global)``: a boosted
            (or, negative, reversed) update that dominates a plain mean
            (Bhagoji et al. 2019; Baruch et al. 2019 call the reversed one sign-flip).
nan, inf    sends weights full of NaN / +Inf: a broken or hostile client.
==========  ==========================================================================

The server drops any reply holding a non-finite value before aggregating
(:func:`is_finite`, used by every strategy in :mod:`dfflab.federated.strategies`);
the robust aggregators (FedMedian, FedTrimmedAvg, Krum) then limit what the finite
attacks can do. ``dfflab federated robustness`` measures it. No Flower import here.

    dfflab federated run --preset tiny --set fl.num-partitions=4 --set fl.partitioning=iid \\
        --set fl.malicious=0 --set fl.attack=scale --set fl.strategy=fedmedian
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def malicious_ids(cfg) -> set[int]:
    """The partition ids ``fl.malicious`` names."""
    return {int(p) for p in cfg.fl.malicious}


def attacks_labels(cfg, partition_id: int) -> bool:
    """Whether this client trains on flipped labels."""
    return cfg.fl.attack == "label-flip" and partition_id in malicious_ids(cfg)


def poison(state: dict[str, torch.Tensor], global_state: dict[str, torch.Tensor], attack: str,
           scale: float) -> dict[str, torch.Tensor]:
    """The update a malicious client sends instead of its honest ``state``.

    Only floating-point tensors change (integer counters such as BatchNorm's
    ``num_batches_tracked`` would give the attack away and carry no signal).

    Args:
        state: the client's trained weights.
        global_state: the global weights it started the round from.
        attack: ``scale``, ``nan`` or ``inf`` (``label-flip`` acts in training: no change here).
        scale: the factor of the ``scale`` attack.
    """
    if attack == "label-flip":
        return state
    out = {}
    for key, w in state.items():
        if not w.is_floating_point():
            out[key] = w
        elif attack == "scale":
            g = torch.as_tensor(global_state[key]).to(w.dtype)
            out[key] = g + scale * (w - g)
        elif attack == "nan":
            out[key] = torch.full_like(w, float("nan"))
        elif attack == "inf":
            out[key] = torch.full_like(w, float("inf"))
        else:
            raise ValueError(f"fl.attack: unknown '{attack}'")
    return out


def is_finite(arrays: Iterable[np.ndarray]) -> bool:
    """True when every value of every array is finite (no NaN, no +-Inf)."""
    return all(bool(np.isfinite(a).all()) for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating))
