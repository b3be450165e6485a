"""Shared fixtures and helpers: a tiny SynthDFF dataset and its prepared store (made once per
session), the tiny config of a federated test, and Flower messages built by hand.

Tests marked ``slow`` (Flower simulation and deployment, the pipeline, Inception) are left
out by ``pytest -m "not slow"``, the short inner loop; the full suite runs them all.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, MetricRecord, RecordDict

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = dict(n_real=24, seed=3, difficulty=1.5, fake_size=48, real_min=40, real_max=90)


@pytest.fixture(scope="session")
def tiny_cfg():
    from dfflab.config import load_config

    return load_config("tiny")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """SynthDFF (folders) with 24 reals + 72 fakes and its splits.csv."""
    from dfflab.config import load_config
    from dfflab.data.synth import SynthSpec, write_synth

    out = tmp_path_factory.mktemp("synth") / "synthdff"
    write_synth(out, SynthSpec(**TINY), load_config("tiny"), progress=False)
    return out


@pytest.fixture(scope="session")
def store(synth_root, tmp_path_factory):
    from dfflab.data.prepare import prepare
    from dfflab.data.store import Store

    out = tmp_path_factory.mktemp("store") / "store"
    prepare(synth_root, out, 32, workers=1, progress=False)
    return Store(out)


# -- federated helpers ------------------------------------------------------------------------
def tiny(store, tmp_path, *extra):
    """The tiny preset on the session store, results in ``tmp_path`` (federated tests)."""
    from dfflab.config import load_config

    return load_config("tiny", [f"data.store={store.path}", f"results={tmp_path}", "fl.min-partition-size=2",
                                *extra])


def instruction(content: RecordDict, node: int = 1, kind: str = MessageType.TRAIN) -> Message:
    """A message as the server sends it (metadata set by hand: no SuperLink here)."""
    md = Metadata(run_id=1, message_id=f"m{node}", src_node_id=0, dst_node_id=node, reply_to_message_id="",
                  group_id="", created_at=time.time(), ttl=3600.0, message_type=kind)
    return Message(content, metadata=md)


def arrays_of(d: dict) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in d.items()})


def reply(arrays: dict, n: int, node: int, **metrics) -> Message:
    content = RecordDict({"arrays": arrays_of(arrays),
                          "metrics": MetricRecord({"num-examples": n, **metrics})})
    return Message(content, reply_to=instruction(RecordDict(), node))


@pytest.fixture
def server_identity(monkeypatch):
    """What the ServerApp process knows about itself (strategies build messages with it)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


class FakeGrid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def client_msg(cfg, model, server_round, kind=MessageType.TRAIN, **config):
    """A train (or evaluate) instruction carrying ``model``'s weights and ``cfg``."""
    from dfflab.federated.task import state_of

    content = RecordDict({"arrays": ArrayRecord(state_of(model)),
                          "config": ConfigRecord({"dfflab-config": json.dumps(cfg.to_dict()),
                                                  "server-round": server_round, **config})})
    return instruction(content, kind=kind)


def client_ctx(pid, n=3):
    """The Context of client ``pid`` of ``n`` (a fresh state)."""
    return Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": n},
                   state=RecordDict(), run_config={})


# -- report helpers ---------------------------------------------------------------------------
def discussion_sentences(report: str) -> list[str]:
    """The bullets of REPORT.md's discussion (section 4), links and code spans removed."""
    import re

    body = report.split("## 4. Discussion and conclusions", 1)[1].split("\n## ", 1)[0]
    bullets = [ln[2:] for ln in body.splitlines() if ln.startswith("- ")]
    return [re.sub(r"`[^`]*`", "", re.sub(r"\[[^\]]*\]\([^)]*\)", "", b)) for b in bullets]


def run_folder_numbers(results: Path) -> set[float]:
    """Every number in the run folders: JSON and CSV values, and the paired differences (with
    their intervals and both sides) of every two runs scored on the same test rows, computed
    here from their test_scores.npz with the bootstrap settings the report states."""
    import csv

    from dfflab.detector.scoring import load_scored
    from dfflab.evidence import paired_difference
    from dfflab.report.context import PAIRED_SEED

    nums: set[float] = set()

    def walk(v):
        if isinstance(v, bool):
            return
        if isinstance(v, int | float):
            nums.add(float(v))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for f in results.glob("runs/*/*.json"):
        walk(json.loads(f.read_text()))
    for f in results.glob("runs/*/*.csv"):
        for row in csv.DictReader(f.open()):
            for v in row.values():
                try:
                    nums.add(float(v))
                except (TypeError, ValueError):
                    pass
    scored = {f.parent.name: load_scored(f) for f in results.glob("runs/*/test_scores.npz")}
    boot = {d: json.loads((results / "runs" / d / "config.json").read_text())["config"].get("train", {})
            .get("bootstrap", 1000) for d in scored}
    for a, sa in scored.items():
        for b, sb in scored.items():
            if a != b and np.array_equal(sa.rows, sb.rows):
                comp = paired_difference(sa, sb, "auroc", max(200, min(boot[a], boot[b])), PAIRED_SEED)
                nums.update([comp["diff"], comp["a"], comp["b"], *comp["ci"]])
    return nums


def cited(token: str, nums: set[float]) -> bool:
    """Whether a number as written (``+0.012``, ``0.528``, ``123.4``) is one of ``nums`` at its precision."""
    token = token.lstrip("+")
    digits = len(token.split(".")[1]) if "." in token else 0
    return any(f"{v:.{digits}f}" == token for v in nums)
