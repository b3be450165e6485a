"""The federated run folder: per-round ``metrics.csv``, ``clients.csv``, final model and summary.

``metrics.csv`` has one row per round (round 0 = the initial model): ``round``,
``samples`` (training images processed by all clients so far), ``steps`` (sequential
optimizer steps so far: per round, the most any client made -- clients train in
parallel), ``epochs_per_client`` (round x local epochs), the x axes shared with the
centralized baseline's epochs; the server's evaluation of the global model with
the centralized metrics (``val_auroc``, ``val_threshold``, ``test_accuracy``,
``test_balanced_accuracy``, ``test_auroc``, ``test_auroc_<source>``), the clients'
aggregated ``train_loss`` and local ``client_val_*`` metrics, ``clients`` (partition ids
whose update was aggregated) and ``nodes`` (their SuperNode ids, same order),
``rejected`` (partition ids whose update held NaN/Inf), ``failures`` (error replies
and replies missing at the round timeout), where the round's time went (``train_phase_s`` with the
slowest client's ``client_compute_s`` in it, ``eval_phase_s``, ``server_eval_s``) and
``seconds`` since the first evaluation. ``clients.csv`` has one row per client, round
and phase (train / evaluate), failures included with their error (or ``rejected``).
"""

from __future__ import annotations

import re
import time
from typing import Any

from flwr.app import Message

from dfflab.files import read_csv, write_csv
from dfflab.runs import Run

STAGE = "federated"
CLIENT_VAL_KEYS = ("val_loss", "val_auroc", "val_accuracy", "val_balanced_accuracy")


class RoundRecorder:
    """Collects client replies, phase times and global evaluations; writes the run's tables.

    Rounds given to it are the strategy's (1, 2, ...); a resumed run adds ``offset``,
    the rounds finished before the crash.
    """

    def __init__(self, run: Run, offset: int = 0, samples: int = 0, steps: int = 0):
        self.run = run
        self.t0 = time.time()
        self.offset, self.samples, self.steps = offset, samples, steps
        self.client_rows: list[dict[str, Any]] = []
        self.rounds: dict[int, dict[str, list[dict[str, Any]]]] = {}
        self.marks: dict[int, dict[str, float]] = {}
        self.client_states: dict[int, dict] = {}  # each client's model of the latest round
        if offset:  # keep what the crashed run logged
            self.client_rows = [r for r in read_csv(run.path("clients.csv")) if int(r["round"]) <= offset]

    def mark(self, server_round: int, event: str) -> None:
        """Time of ``start`` (clients sampled), ``train``/``evaluate`` (replies in), ``server``."""
        self.marks.setdefault(server_round + self.offset, {})[event] = time.time()

    def record_replies(self, server_round: int, phase: str, replies: list[Message],
                       sent: dict[str, int] | None = None, rejected: set[int] | None = None) -> None:
        """One ``clients.csv`` row per reply, and per node in ``sent`` that never replied.

        Args:
            sent: ``{message id: node id}`` of the round's instructions (a node without
                a reply timed out; an error the SuperLink sends for a node is its node's).
            rejected: ``id()`` of the replies the server refused (non-finite values).
        """
        self.mark(server_round, phase)
        server_round += self.offset
        sent = sent or {}
        rows = self.rounds.setdefault(server_round, {}).setdefault(phase, [])
        for msg in replies:
            node = sent.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            row: dict[str, Any] = {"round": server_round, "phase": phase, "node": node}
            if msg.has_error():
                row.update({"partition-id": "", "error": error_line(msg.error.reason)})
            else:
                metrics = next(iter(msg.content.metric_records.values()))
                row.update({k: metrics[k] for k in ("partition-id", *sorted(metrics)) if k in metrics})
                if id(msg) in (rejected or set()):
                    row["rejected"] = "non-finite values (NaN/Inf) in the update"
                elif phase == "train":  # a copy: robust strategies pop arrays while aggregating
                    arrays = next(iter(msg.content.array_records.values()))
                    self.client_states[int(metrics["partition-id"])] = arrays.to_torch_state_dict()
            rows.append(row)
        replied = {r["node"] for r in rows}
        for node in [n for n in sent.values() if n not in replied]:
            rows.append({"round": server_round, "phase": phase, "node": node, "partition-id": "",
                         "error": "no reply within the round timeout (fl.round-timeout)"})
        self.client_rows += rows
        self._write_clients()

    def log_round(self, server_round: int, eval_row: dict[str, float]) -> dict[str, Any]:
        """Append the ``metrics.csv`` row of a round (after its global evaluation)."""
        server_round += self.offset
        got = self.rounds.get(server_round, {})
        train = [r for r in got.get("train", []) if "error" not in r and "rejected" not in r]
        val = [r for r in got.get("evaluate", []) if "error" not in r]
        self.samples += int(sum(r.get("images", 0) for r in train))
        self.steps += int(max((float(r.get("steps", 0)) for r in train), default=0))  # clients step in parallel
        row: dict[str, Any] = {"round": server_round, "samples": self.samples, "steps": self.steps,
                               "epochs_per_client": server_round * self.run.config["fl"]["local_epochs"], **eval_row,
                               "train_loss": _weighted(train, "train_loss")}
        for key in CLIENT_VAL_KEYS:  # the clients' own validation data
            row[f"client_{key}"] = _weighted(val, key)
        row["clients"] = ";".join(str(p) for p in sorted(int(r["partition-id"]) for r in train))
        row["nodes"] = ";".join(str(r["node"]) for r in sorted(train, key=lambda r: int(r["partition-id"])))
        row["rejected"] = ";".join(str(r["partition-id"]) for r in got.get("train", []) if "rejected" in r)
        row["failures"] = sum("error" in r for phase in got.values() for r in phase)
        row.update(self._phase_times(server_round, train))
        row["seconds"] = round(time.time() - self.t0, 2)
        self.run.log_metrics(row)
        return row

    def _phase_times(self, server_round: int, train: list[dict[str, Any]]) -> dict[str, float]:
        """Where a round's wall time went: client training (compute vs the whole phase),
        client validation, the server's evaluation."""
        m = self.marks.get(server_round, {})
        if not {"start", "train", "evaluate", "server"} <= set(m):
            return {}
        return {"train_phase_s": round(m["train"] - m["start"], 3),
                "client_compute_s": round(max((float(r.get("seconds", 0)) for r in train), default=0.0), 3),
                "eval_phase_s": round(m["evaluate"] - m["train"], 3),
                "server_eval_s": round(time.time() - m["server"], 3)}

    def _write_clients(self) -> None:
        write_csv(self.run.path("clients.csv"), self.client_rows)


def error_line(reason: str) -> str:
    """The last line of a client's error (Ray wraps it in two tracebacks)."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", reason).splitlines() if ln.strip()]
    last = lines[-1] if lines else reason
    return last.removesuffix("'>").split("Message: ", 1)[-1]


def _weighted(rows: list[dict[str, Any]], key: str) -> float:
    """Example-weighted mean of ``key`` over client rows (NaN if none has it)."""
    pairs = [(float(r["num-examples"]), float(r[key])) for r in rows if key in r]
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total if total else float("nan")


def resume_point(run: Run) -> dict | None:
    """``last.pt`` of a crashed run (global model after its last logged round), else None.

    Cuts ``metrics.csv`` back to that round. FedAdam's moments and FedBN clients' own
    BatchNorm layers are not in it: they restart.
    """
    if run.finished or not run.path("last.pt").is_file():
        return None
    state = run.load("last.pt")
    run.truncate_metrics(int(state["round"]) + 1)  # rows 0..round
    return state


def save_resume_point(run: Run, model, server_round: int, samples: int, steps: int = 0) -> None:
    from dfflab.federated.task import state_of

    run.save("last.pt", {"state": state_of(model), "round": server_round, "samples": samples, "steps": steps})


def open_run(cfg, meta: dict[str, str], fingerprint: str) -> Run:
    """The run folder named by ``run-dir``, or a new one under ``results``."""
    if meta.get("run-dir"):
        run = Run.open(meta["run-dir"])
        run.update_record(config=cfg.to_dict())  # what the ServerApp resolved is what ran
        return run
    from dfflab.federated.config import default_name, run_stage

    name = meta.get("name") or default_name(cfg)
    return Run.create(cfg.results, run_stage(cfg.fl), name, cfg.to_dict(), note=meta.get("note", ""),
                      fingerprint=fingerprint)


def round_config(cfg, run: Run, done: int):
    """The ``ConfigRecord`` every round's messages carry: the resolved config, the rounds a resumed
    run already has, the run's ``partition.npz`` and the key a client's kept state belongs to."""
    import json

    from flwr.app import ConfigRecord

    from dfflab.federated.shares import FILE

    return ConfigRecord({"dfflab-config": json.dumps(cfg.to_dict()), "round-offset": done,
                         "partition-file": str(run.path(FILE)), "run-key": str(run.dir)})


FINISHED = "dfflab run finished: "  # the ServerApp's last line for a run: everything is written


def announce_finished(run: Run) -> None:
    """Log that ``run``'s folder is complete (the launcher stops waiting for Flower's shutdown then)."""
    from logging import INFO

    from flwr.common import log

    log(INFO, "%s%s", FINISHED, run.dir)


def result_line(summary: dict) -> str:
    """The one-line result of a finished run (the launcher prints it)."""
    if "test" in summary:
        eps = f", epsilon {summary['epsilon']:.3g} at delta {summary['dp']['delta']:g}" if "dp" in summary else ""
        return (f"test AUROC {summary['test']['auroc']:.4f}, accuracy {summary['test']['accuracy']:.4f} "
                f"after {summary['rounds_run']} rounds{eps}")
    knn = summary.get("knn", {})
    return (f"kNN real/fake acc {knn.get('knn_real_fake_acc_test', float('nan')):.3f} (test), linear real/fake "
            f"{summary.get('linear', {}).get('linear_real_fake_acc_test', float('nan')):.3f} after "
            f"{summary.get('rounds_run')} rounds")


def finish(run: Run, cfg, store, model, last_eval: dict, extra: dict[str, Any],
           client_states: dict[int, dict] | None = None, device=None) -> dict[str, Any]:
    """Write ``detector.pt`` (final global model, val-chosen threshold), each client's model
    of the last round it trained (``detector_client<p>.pt``, for client ensembles),
    ``test_scores.npz`` and ``summary.json`` (test metrics with their 95% intervals)."""
    from dataclasses import asdict

    from dfflab.detector.recipe import new_model
    from dfflab.federated import task
    from dfflab.models import save_detector

    meta = {"stage": STAGE, "run": run.name, "strategy": cfg.fl.strategy, "partitioning": cfg.fl.partitioning,
            "train_sources": store.resolve_sources(cfg.train.train_sources)}
    if "scores" in last_eval:  # the final global model's test scores: intervals, and kept for paired comparisons
        last_eval["scores"].add_intervals(cfg.train.bootstrap, cfg.train.seed).save(run.path("test_scores.npz"))
    save_detector(run.path("detector.pt"), model, cfg.model, store.image_size, threshold=last_eval["threshold"],
                  source_names=store.source_names, **meta)
    val_rows = task.global_rows(store, cfg)["val"]
    saved, unusable = [], []
    for pid, state in sorted((client_states or {}).items()):
        client = new_model(cfg, device)
        task.load_state(client, state)
        val = task.test(client, store, val_rows, device, amp=cfg.train.amp)
        if val.overall["nonfinite_frac"] > 0:  # a malicious client's (scaled) model may score NaN: no detector
            unusable.append(pid)
            continue
        thr = val.threshold
        save_detector(run.path(f"detector_client{pid}.pt"), client, cfg.model, store.image_size,
                      threshold=thr, source_names=store.source_names, partition_id=pid, **meta)
        saved.append(pid)
    rows = run.metrics()
    scored_as_used = _scored_as_used(run, cfg, store, model, client_states or {}, saved, device)
    summary = {"test": last_eval["test"], "test_per_source": last_eval["test_per_source"], **scored_as_used,
               "val": last_eval["val"], "threshold": last_eval["threshold"],
               "strategy": cfg.fl.strategy, "partitioning": cfg.fl.partitioning,
               "num_partitions": cfg.fl.num_partitions, "rounds": cfg.fl.rounds,
               "rounds_run": max((r["round"] for r in rows), default=0),
               "local_epochs": cfg.fl.local_epochs, "samples": rows[-1]["samples"] if rows else 0,
               "steps": rows[-1].get("steps") if rows else 0,
               "epochs_per_client": rows[-1].get("epochs_per_client") if rows else 0,
               "sizes": {"train": int(sum(p["images"] for p in extra.get("partition", []))),
                         **{k: len(v) for k, v in task.global_rows(store, cfg).items()}},
               "failures": sum(int(r.get("failures") or 0) for r in rows),
               "init": cfg.train.init, "model": asdict(cfg.model),
               "checkpoint": str(run.path("detector.pt")),
               "client_checkpoints": [f"detector_client{p}.pt" for p in saved],
               "clients_without_checkpoint": unusable,
               **extra}
    run.write_summary(summary)
    return summary


def _scored_as_used(run, cfg, store, model, client_states: dict, usable: list[int], device) -> dict:
    """FedBN: ``per_client`` personalised models; otherwise ``test_bn_reestimated``."""
    from dfflab.federated import final_models, shares, task
    from dfflab.federated.strategies import KEEPS_LOCAL_BN

    if cfg.fl.strategy not in KEEPS_LOCAL_BN:
        return {"test_bn_reestimated": final_models.reestimated_scores(model, store, cfg, device, run)}
    sources = {}
    for pid in usable:
        rows = shares.client(run.path(shares.FILE), store, cfg, pid)
        fakes = set(store.sources[rows["train"]]) & set(store.fake_sources)
        sources[pid] = next(iter(fakes)) if len(fakes) == 1 else None
    states = {p: s for p, s in client_states.items() if p in usable}
    return {"per_client": final_models.personalised_scores(task.state_of(model), states, task.bn_keys(model),
                                                           sources, store, cfg, device, run)}
