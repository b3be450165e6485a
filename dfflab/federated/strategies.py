"""Server strategies by name (``fl.strategy``), all flwr's message-API strategies.

=============  ==================================================================
fedavg         FedAvg (McMahan et al. 2017): example-weighted mean of client models.
fedavgm        FedAvgM (Hsu et al. 2019): FedAvg's mean update applied with server
               momentum ``fl.server-momentum`` and learning rate ``fl.server-step``; BatchNorm
               running statistics are plainly averaged, as for FedAdam.
fedprox        FedProx (Li et al. 2020): FedAvg on the server; each client adds
               mu/2 ||w - w_global||^2 (``fl.proximal-mu``, sent as ``proximal-mu``).
fedadam        FedAdam (Reddi et al. 2021): Adam on the averaged update, server lr
               ``fl.server-lr``; BatchNorm running statistics are plainly averaged
               (an Adam step of size ~eta could drive a running variance negative).
fedbn          FedBN (Li et al. 2021): FedAvg, but each client keeps its own BatchNorm
               affine weights and statistics (the textbook answer to feature shift,
               here: one generator per client). The server still averages them, only
               for its own evaluation of the global model.
fedmedian      coordinate-wise median (Yin et al. 2018).
fedtrimmedavg  coordinate-wise trimmed mean, ``fl.trim-beta`` cut from each tail.
krum           Krum (Blanchard et al. 2017), tolerating ``fl.krum-malicious`` clients.
=============  ==================================================================

Every strategy samples all connected clients each round and needs ``fl.min-nodes`` of
them (all N by default, so simulated runs are deterministic). A client whose reply is
an error, arrives after ``fl.round-timeout`` or holds a NaN/Inf is left out of that
round's aggregate, in every strategy (:class:`Guarded`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import (
    aggregate_arrayrecords,
    aggregate_metricrecords,
)

from dfflab.federated.attacks import is_finite
from dfflab.federated.config import STRATEGIES as NAMES
from dfflab.federated.config import check_names, dp_enabled

CLIENT_KEYS = ("partition-id",)  # identify a client: reported, never averaged


def aggregate_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of client metrics, without the identifying keys."""
    out = aggregate_metricrecords(records, weight_key)
    for key in CLIENT_KEYS:
        out.pop(key, None)
    return out


class AvgBuffers:
    """Strategy mixin for server optimizers (FedAdam, FedAvgM): the listed buffers (BatchNorm
    statistics) are plainly averaged instead of stepped (a step could drive a variance negative)."""

    def __init__(self, *, buffer_keys: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buffer_keys = set(buffer_keys)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        mean = aggregate_arrayrecords([m.content for m in replies if not m.has_error()],
                                      self.weighted_by_key)
        for key in self.buffer_keys & set(mean.keys()):
            arrays[key] = mean[key]
        return arrays, metrics


class FedAdamAvgBuffers(AvgBuffers, FedAdam):
    """FedAdam on weights; BatchNorm statistics plainly averaged."""


class FedAvgMAvgBuffers(AvgBuffers, FedAvgM):
    """FedAvgM on weights; BatchNorm statistics plainly averaged."""


# name -> (strategy class, its extra arguments from cfg and the model's BatchNorm keys)
STRATEGIES: dict[str, tuple[type[Strategy], Callable[[Any, set[str]], dict]]] = {
    "fedavg": (FedAvg, lambda cfg, bn: {}),
    "fedavgm": (FedAvgMAvgBuffers, lambda cfg, bn: {
        "server_learning_rate": cfg.fl.server_step, "server_momentum": cfg.fl.server_momentum,
        "buffer_keys": {k for k in bn if not k.endswith((".weight", ".bias"))}}),
    "fedprox": (FedProx, lambda cfg, bn: {"proximal_mu": cfg.fl.proximal_mu}),
    "fedadam": (FedAdamAvgBuffers, lambda cfg, bn: {
        "eta": cfg.fl.server_lr, "eta_l": cfg.train.lr,
        "buffer_keys": {k for k in bn if not k.endswith((".weight", ".bias"))}}),
    "fedbn": (FedAvg, lambda cfg, bn: {}),
    "fedmedian": (FedMedian, lambda cfg, bn: {}),
    "fedtrimmedavg": (FedTrimmedAvg, lambda cfg, bn: {"beta": cfg.fl.trim_beta}),
    "krum": (Krum, lambda cfg, bn: {"num_malicious_nodes": cfg.fl.krum_malicious}),
}

assert tuple(STRATEGIES) == NAMES, "dfflab/federated/config.py lists other strategies"

# Strategies whose clients do something different (the ClientApp asks these).
KEEPS_LOCAL_BN = {"fedbn"}


class Guarded:
    """Strategy mixin: drops non-finite replies before aggregating; reports every round.

    Args:
        recorder: if given, gets ``mark(round, "start")``, ``record_replies(round, phase,
            replies, sent={message id: node id}, rejected=reply ids)`` each round
            (:class:`dfflab.federated.records.RoundRecorder`).
    """

    def __init__(self, *args: Any, recorder: Any = None, num_nodes: int = 0, wait_nodes: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder
        self.num_nodes, self.wait_nodes = num_nodes, wait_nodes
        self.sent: dict[str, list[Message]] = {}  # phase -> the instructions (ids set when sent)

    def configure_train(self, server_round: int, arrays, config, grid):
        if self.recorder is not None:
            self.recorder.mark(server_round, "start")
        deadline = time.time() + self.wait_nodes  # give a restarted node the chance to rejoin
        while len(list(grid.get_node_ids())) < self.num_nodes and time.time() < deadline:
            time.sleep(1.0)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.sent["train"] = messages
        return messages

    def configure_evaluate(self, server_round: int, *args: Any, **kwargs: Any):
        messages = list(super().configure_evaluate(server_round, *args, **kwargs))
        self.sent["evaluate"] = messages
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = in_partition_order(replies)
        bad = [m for m in replies if not m.has_error() and not finite_reply(m)]
        if bad:
            log(WARNING, "round %d: rejected %d update(s) with NaN/Inf values from node(s) %s",
                server_round, len(bad), [m.metadata.src_node_id for m in bad])
        self._record(server_round, "train", replies, {id(m) for m in bad})
        return super().aggregate_train(server_round, [m for m in replies if all(m is not b for b in bad)])

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        replies = in_partition_order(replies)
        self._record(server_round, "evaluate", replies, set())
        return super().aggregate_evaluate(server_round, replies)

    def _record(self, server_round: int, phase: str, replies: list[Message], rejected: set[int]) -> None:
        if self.recorder is not None:
            sent = {m.metadata.message_id: m.metadata.dst_node_id for m in self.sent.get(phase, [])}
            self.recorder.record_replies(server_round, phase, replies, sent=sent, rejected=rejected)


def in_partition_order(replies: Iterable[Message]) -> list[Message]:
    """Replies sorted by the client's partition id (error replies last).

    They arrive in whatever order the clients finish; a weighted mean summed in arrival order
    differs in its last bits from run to run, and over rounds that grew to ~0.01 test AUROC
    between two runs of the same settings. Summed in partition order, a run is reproducible.
    """
    def key(msg: Message) -> tuple[int, int]:
        if msg.has_error():
            return (1, 0)
        for rec in msg.content.metric_records.values():
            if "partition-id" in rec:
                return (0, int(rec["partition-id"]))
        return (0, -1)

    return sorted(replies, key=key)


def finite_reply(msg: Message) -> bool:
    """Whether every array of a reply is finite (no NaN / Inf)."""
    return all(is_finite(a.numpy() for a in rec.values()) for rec in msg.content.array_records.values())


def make_strategy(cfg, num_nodes: int, bn_keys: set[str], recorder: Any = None, done_rounds: int = 0) -> Strategy:
    """The strategy ``cfg.fl.strategy`` names, guarded against non-finite updates; with
    ``fl.dp-clip`` > 0 inside Flower's DP wrapper with its accountant (:mod:`dfflab.federated.privacy`).

    Each round samples every connected client (``fraction-train = 1``) and waits for at
    least ``fl.min-nodes`` (0 = ``num_nodes``); ``fl.fraction-evaluate`` of them validate.

    Args:
        bn_keys: the model's BatchNorm state-dict keys (FedAdam averages their buffers).
        recorder: see :class:`Guarded`.
        done_rounds: rounds a resumed run finished before (the DP accountant counts them).
    """
    check_names(cfg.fl)
    cls, extra = STRATEGIES[cfg.fl.strategy]
    need = cfg.fl.min_nodes or num_nodes
    evaluating = cfg.fl.fraction_evaluate > 0
    kwargs = dict(fraction_train=1.0, fraction_evaluate=cfg.fl.fraction_evaluate, min_train_nodes=need,
                  min_evaluate_nodes=need if evaluating else 0, min_available_nodes=need,
                  train_metrics_aggr_fn=aggregate_metrics, evaluate_metrics_aggr_fn=aggregate_metrics,
                  **extra(cfg, bn_keys))
    guard = dict(recorder=recorder, num_nodes=num_nodes, wait_nodes=cfg.fl.wait_nodes)
    if dp_enabled(cfg.fl):
        from dfflab.federated import privacy

        inner = cls(**{**kwargs, "weighted_by_key": privacy.WEIGHT_KEY})
        return privacy.dp_wrapped(Guarded, inner, cfg.fl, num_nodes, done_rounds, **guard)
    guarded = type(f"Guarded{cls.__name__}", (Guarded, cls), {})
    return guarded(**guard, **kwargs)
