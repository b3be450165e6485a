"""Shared fixtures: a tiny SynthDFF dataset and its prepared store, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
