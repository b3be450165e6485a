"""The GPU readiness check runs end to end at toy size on a CPU (so the script a GPU session gets
one try at is known to work before it gets there), and the GAN step benchmark prints its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _figures(stdout: str) -> dict[str, dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {f["figure"]: f for f in lines}


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_section():
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=900)
    figs = _figures(out.stdout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert figs["failed_sections"]["value"] == []
    for name in ("synth_img_per_s", "prepare_img_per_s", "store_to_device_img_per_s", "detector_loop_img_per_s",
                 "ssl_loop_img_per_s", "gan_step_img_per_s", "fl_over_central_wall"):
        assert name in figs, f"{name} missing from {sorted(figs)}"
        assert figs[name]["value"] > 0


def test_gpu_check_reports_a_crashed_section_and_exits_nonzero():
    # no CUDA here: without --cpu-smoke the check refuses to measure a CPU as if it were the GPU
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0
    assert "no CUDA device" in _figures(out.stdout)["device"]["error"]
