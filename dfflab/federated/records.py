"""The federated run folder: per-round ``metrics.csv``, ``clients.csv``, final model and summary.

``metrics.csv`` has one row per round (round 0 = the initial model): ``round``,
``samples`` (training images processed by all clients so far, the x axis shared with
the centralized baseline's epochs), the server's evaluation of the global model with
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

import csv
import io
import re
import time
from typing import Any

from flwr.app import Message

from dfflab.runs import Run, atomic_write_text

STAGE = "federated"
CLIENT_VAL_KEYS = ("val_loss", "val_auroc", "val_accuracy", "val_balanced_accuracy")


class RoundRecorder:
    """Collects client replies, phase times and global evaluations; writes the run's tables.

    Rounds given to it are the strategy's (1, 2, ...); a resumed run adds ``offset``,
    the rounds finished before the crash.
    """

    def __init__(self, run: Run, offset: int = 0, samples: int = 0):
        self.run = run
        self.t0 = time.time()
        self.offset, self.samples = offset, samples
        self.client_rows: list[dict[str, Any]] = []
        self.rounds: dict[int, dict[str, list[dict[str, Any]]]] = {}
        self.marks: dict[int, dict[str, float]] = {}
        self.client_states: dict[int, dict] = {}  # each client's model of the latest round
        if offset and run.path("clients.csv").is_file():  # keep what the crashed run logged
            with open(run.path("clients.csv"), newline="") as f:
                self.client_rows = [r for r in csv.DictReader(f) if int(r["round"]) <= offset]

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
        row: dict[str, Any] = {"round": server_round, "samples": self.samples, **eval_row,
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
        cols: list[str] = []
        for r in self.client_rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(self.client_rows)
        atomic_write_text(self.run.path("clients.csv"), buf.getvalue())


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


def save_resume_point(run: Run, model, server_round: int, samples: int) -> None:
    from dfflab.federated.task import state_of

    run.save("last.pt", {"state": state_of(model), "round": server_round, "samples": samples})


def open_run(cfg, meta: dict[str, str], fingerprint: str) -> Run:
    """The run folder named by ``run-dir``, or a new one under ``results``."""
    if meta.get("run-dir"):
        run = Run.open(meta["run-dir"])
        run.update_record(config=cfg.to_dict())  # what the ServerApp resolved is what ran
        return run
    name = meta.get("name") or f"{cfg.fl.strategy}-{cfg.fl.partitioning}"
    return Run.create(cfg.results, STAGE, name, cfg.to_dict(), note=meta.get("note", ""),
                      fingerprint=fingerprint)


def finish(run: Run, cfg, store, model, last_eval: dict, extra: dict[str, Any],
           client_states: dict[int, dict] | None = None, device=None) -> dict[str, Any]:
    """Write ``detector.pt`` (final global model, val-chosen threshold), each client's model
    of the last round it trained (``detector_client<p>.pt``, for client ensembles) and
    ``summary.json``."""
    from dataclasses import asdict

    from dfflab.federated import task
    from dfflab.models import save_detector

    meta = {"stage": STAGE, "run": run.name, "strategy": cfg.fl.strategy, "partitioning": cfg.fl.partitioning,
            "train_sources": store.resolve_sources(cfg.train.train_sources)}
    save_detector(run.path("detector.pt"), model, cfg.model, store.image_size, threshold=last_eval["threshold"],
                  source_names=store.source_names, **meta)
    val_rows = task.global_rows(store, cfg)["val"]
    saved, unusable = [], []
    for pid, state in sorted((client_states or {}).items()):
        client = task.new_model(cfg, device)
        task.load_state(client, state)
        try:
            _, _, thr = task.test(client, store, val_rows, device, amp=cfg.train.amp)
        except ValueError:  # a malicious client's (scaled) model may score NaN: no detector
            unusable.append(pid)
            continue
        save_detector(run.path(f"detector_client{pid}.pt"), client, cfg.model, store.image_size,
                      threshold=thr, source_names=store.source_names, partition_id=pid, **meta)
        saved.append(pid)
    rows = run.metrics()
    summary = {"test": last_eval["test"], "test_per_source": last_eval["test_per_source"],
               "val": last_eval["val"], "threshold": last_eval["threshold"],
               "strategy": cfg.fl.strategy, "partitioning": cfg.fl.partitioning,
               "num_partitions": cfg.fl.num_partitions, "rounds": cfg.fl.rounds,
               "rounds_run": max((r["round"] for r in rows), default=0),
               "local_epochs": cfg.fl.local_epochs, "samples": rows[-1]["samples"] if rows else 0,
               "failures": sum(int(r.get("failures") or 0) for r in rows),
               "init": cfg.train.init, "model": asdict(cfg.model),
               "checkpoint": str(run.path("detector.pt")),
               "client_checkpoints": [f"detector_client{p}.pt" for p in saved],
               "clients_without_checkpoint": unusable,
               **extra}
    run.write_summary(summary)
    return summary
