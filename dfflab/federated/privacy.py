"""DP-FedAvg: Flower's differential-privacy wrappers with a real accountant (``fl.dp-*``).

With ``fl.dp-clip`` = C > 0 a run is DP-FedAvg (McMahan et al. 2018, "Learning differentially
private recurrent language models"): every round each of the N clients' model update
(its weights minus the global weights it started from) is clipped to L2 norm C, the server
takes their **unweighted** mean and adds Gaussian noise of standard deviation z*C/N
(``fl.dp-noise`` = z). The pieces are Flower's own:

* ``fl.dp-clipping=client``: :class:`DifferentialPrivacyClientSideFixedClipping` on the server and
  Flower's ``fixedclipping_mod`` on each client (:func:`clipping_mod`), so the server only ever
  sees clipped updates; ``server``: :class:`DifferentialPrivacyServerSideFixedClipping` clips what
  arrives. Either way the noise is added once, centrally, by the server (central DP: the
  server is trusted to add it).
* the **accountant** is Flower's ``RdpAccountant``, which wraps Google's ``dp-accounting``
  (the maintained library Flower's ``flwr[dp]`` extra installs): each round composes one
  Gaussian mechanism of noise multiplier z into Renyi DP, converted to epsilon at
  ``fl.dp-delta`` after every round (``epsilon`` in metrics.csv, the final one in summary.json).

**BatchNorm statistics are not released** (:func:`dp_arrays`): each client keeps its own running
statistics across rounds (FedBN's split, for the buffers only), and the server re-estimates the
global model's statistics on its own validation rows before it evaluates (:func:`server_batchnorm`;
no client data, so no privacy cost). Sent with the weights they would have to be clipped and
noised with them, and they dominate the update: on quick, a client's first-round update has
norm 1.1 in the weights and 15.9 in the running variances, so a joint clip at C = 2 left the
weights an eighth of their step and the statistics wrong (test AUROC 0.55 with clipping alone,
against 0.74 without). The counters (``num_batches_tracked``) are not federated either.

What epsilon means here: **client-level** DP under add/remove-one-client adjacency -- the
guarantee covers everything one client (one organisation's whole image set) contributes,
not one image. Every round uses all N clients (no sampling, so no amplification by
subsampling). The accountant covers the model updates only: the metrics clients report
(training loss, local validation, ``update_norm``) are not privatised, as Flower's
accountant states too; turn client evaluation off (``fl.fraction-evaluate=0``) for a
deployment. The server's noise comes from numpy's global generator, not from ``train.seed``:
a noise anyone can replay from a recorded seed protects nothing, so DP runs are not
bit-for-bit reproducible.

With only a handful of clients the noise on the mean, z*C/N per coordinate over
hundreds of thousands of weights, dwarfs any update of norm <= C unless z is tiny (epsilon
then huge): DP-FedAvg was built for thousands of clients per round. The privacy-utility
runs measure how that plays out here, they do not tune it away.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)

from dfflab.federated.config import dp_enabled

WEIGHT_KEY = "dp-weight"  # every client reports 1: DP-FedAvg's mean is unweighted (sensitivity C/N)
WRAPPERS = {"client": DifferentialPrivacyClientSideFixedClipping, "server": DifferentialPrivacyServerSideFixedClipping}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # not released in a DP run (dp_arrays)
ACCOUNTANT = "dp-accounting RDP (Flower RdpAccountant), no sampling amplification, add/remove-one-client adjacency"


def make_accountant(fl, num_clients: int):
    """Flower's RDP accountant (backed by ``dp-accounting``) for N clients every round."""
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(PrivacyConfig(target_delta=fl.dp_delta, population_size=num_clients,
                                       neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                       sampling_method=SamplingMethod.NO_AMPLIFICATION))


def dp_wrapped(guard: type, inner: Strategy, fl, num_clients: int, done_rounds: int = 0, **guard_kwargs) -> Strategy:
    """``inner`` (plain FedAvg / FedProx, weighted by :data:`WEIGHT_KEY`) inside Flower's DP wrapper
    for ``fl.dp-clipping``, inside ``guard`` (the :class:`~dfflab.federated.strategies.Guarded` mixin).

    Args:
        done_rounds: rounds a resumed run released before its crash; composed into the
            accountant first, so epsilon counts them.
    """
    cls = WRAPPERS[fl.dp_clipping]
    accountant = make_accountant(fl, num_clients) if fl.dp_noise > 0 else None  # z = 0: clipping only
    if accountant is not None and done_rounds:
        accountant.compose(GaussianPrivacyEvent(fl.dp_noise, num_clients, num_clients), count=done_rounds)
    guarded = type(f"Guarded{cls.__name__}", (guard, cls), {})
    return guarded(inner, fl.dp_noise, fl.dp_clip, num_clients, accountant=accountant, **guard_kwargs)


def epsilon(strategy: Any) -> float:
    """Epsilon spent so far at ``fl.dp-delta`` (0 before the first release; inf without noise)."""
    if not hasattr(strategy, "privacy_spent"):
        return float("nan")  # not a DP run
    spent = strategy.privacy_spent()
    if spent is None:
        return float("inf")
    return float(spent.epsilon) if spent.num_releases else 0.0


def summary(fl, strategy: Any) -> dict[str, Any]:
    """The summary.json ``dp`` record: the settings epsilon was computed for, and epsilon."""
    spent = strategy.privacy_spent() if hasattr(strategy, "privacy_spent") else None
    return {"noise_multiplier": fl.dp_noise, "clip": fl.dp_clip, "delta": fl.dp_delta, "clipping": fl.dp_clipping,
            "epsilon": epsilon(strategy), "rounds_released": spent.num_releases if spent else None,
            "rdp_order": spent.optimal_order if spent else None, "num_clients": fl.num_partitions,
            "noise_std": fl.dp_noise * fl.dp_clip / max(1, fl.num_partitions), "accountant": ACCOUNTANT,
            "level": "client"}


def clipping_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``fixedclipping_mod`` where the server asked for client-side clipping (its DP wrapper
    puts the clipping norm into the round's config); any other train message passes untouched."""
    config = next(iter(msg.content.config_records.values()), {}) if msg.content.config_records else {}
    if KEY_CLIPPING_NORM not in config:
        return call_next(msg, context)
    return fixedclipping_mod(msg, context, call_next)


def is_released(key: str) -> bool:
    """Whether a state-dict entry is part of a DP run's update (not a BatchNorm buffer)."""
    return not key.endswith(BN_BUFFERS)


def dp_arrays(cfg, state: dict) -> dict:
    """What a DP run federates: the weights (BatchNorm affine weights included, its buffers not), as
    floats of at least one dimension; other runs: ``state`` itself.

    At least one dimension because Flower's clipping scales the update in place, which silently
    skips 0-d arrays (numpy's difference of two 0-d arrays is a scalar, which ``*=`` rebinds
    instead of scaling): they would stay unclipped yet count in the norm.
    """
    if not dp_enabled(cfg.fl):
        return state
    return {k: (v if v.is_floating_point() else v.float()).reshape(v.shape or (1,)) for k, v in state.items()
            if is_released(k)}


def local_buffers(state: dict) -> dict:
    """A DP client's own BatchNorm buffers (kept in its context.state between rounds)."""
    return {k: v for k, v in state.items() if not is_released(k)}


def server_batchnorm(model, store, cfg, device) -> int:
    """Re-estimate the global model's BatchNorm statistics on the server's validation rows (a DP run
    releases none); returns the images used."""
    from dfflab.federated.task import global_rows
    from dfflab.train.core import reestimate_batchnorm

    rows = global_rows(store, cfg)["val"]
    return reestimate_batchnorm(model, store.batches(rows, cfg.train.batch_size), device, cfg.train.amp)


def client_metrics(cfg, start: dict | None = None, state: dict | None = None) -> dict[str, float]:
    """What a DP client adds to its reply: weight 1 (the mean is unweighted) and, for a train reply
    (``start``: the weights received, ``state``: after training), its update's norm before
    clipping (what ``fl.dp-clip`` is chosen against; not privatised)."""
    if not dp_enabled(cfg.fl):
        return {}
    if start is None:  # an evaluate reply: only the weight
        return {WEIGHT_KEY: 1}
    sq = sum(float(np.sum((state[k].double().numpy() - start[k].double().numpy()) ** 2)) for k in state
             if is_released(k))
    return {WEIGHT_KEY: 1, "update_norm": float(np.sqrt(sq))}
