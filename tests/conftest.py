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
    from dfflab.data.store import Store, prepare

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
