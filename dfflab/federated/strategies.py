"""Server strategies by name (``fl.strategy``), all flwr's message-API strategies.

=============  ==================================================================
fedavg         FedAvg (McMahan et al. 2017): example-weighted mean of client models.
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

Every strategy samples all N clients each round (``min-train-nodes = N``), so runs are
deterministic; a client whose reply is an error is left out of that round's aggregate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
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

from dfflab.federated.config import STRATEGIES as NAMES
from dfflab.federated.config import check_names

CLIENT_KEYS = ("partition-id",)  # identify a client: reported, never averaged


def aggregate_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of client metrics, without the identifying keys."""
    out = aggregate_metricrecords(records, weight_key)
    for key in CLIENT_KEYS:
        out.pop(key, None)
    return out


class FedAdamAvgBuffers(FedAdam):
    """FedAdam on weights; the listed buffers (BatchNorm statistics) plainly averaged."""

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


# name -> (strategy class, its extra arguments from cfg and the model's BatchNorm keys)
STRATEGIES: dict[str, tuple[type[Strategy], Callable[[Any, set[str]], dict]]] = {
    "fedavg": (FedAvg, lambda cfg, bn: {}),
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


class Recording:
    """Strategy mixin: shows every round's replies to a recorder before aggregating."""

    def __init__(self, *args: Any, recorder: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder

    def configure_train(self, server_round: int, *args: Any, **kwargs: Any):
        self.recorder.mark(server_round, "start")
        return super().configure_train(server_round, *args, **kwargs)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        self.recorder.record_replies(server_round, "train", replies)
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        self.recorder.record_replies(server_round, "evaluate", replies)
        return super().aggregate_evaluate(server_round, replies)


def make_strategy(cfg, num_nodes: int, bn_keys: set[str], recorder: Any = None) -> Strategy:
    """The strategy ``cfg.fl.strategy`` names, sampling all ``num_nodes`` clients each round.

    Args:
        bn_keys: the model's BatchNorm state-dict keys (FedAdam averages their buffers).
        recorder: if given, gets ``mark(round, "start")`` and ``record_replies(round, phase,
            replies)`` each round (:class:`dfflab.federated.records.RoundRecorder`).
    """
    check_names(cfg.fl)
    cls, extra = STRATEGIES[cfg.fl.strategy]
    kwargs = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=num_nodes,
                  min_evaluate_nodes=num_nodes, min_available_nodes=num_nodes,
                  train_metrics_aggr_fn=aggregate_metrics, evaluate_metrics_aggr_fn=aggregate_metrics,
                  **extra(cfg, bn_keys))
    if recorder is None:
        return cls(**kwargs)
    recorded = type(f"Recorded{cls.__name__}", (Recording, cls), {})
    return recorded(recorder=recorder, **kwargs)
