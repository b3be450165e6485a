"""Cost of federation: the same data, model and sample passes, centralized vs Flower.

Runs, each as a fresh process (so both pay their start-up and imports):
  * centralized  ``dfflab centralized train`` for E epochs (no early stopping, no audit);
  * federated    ``dfflab federated run``: FedAvg, IID partition, E rounds of 1 local
                 epoch, so the clients together see the same images as E epochs.
                 ``--clients sequential`` (default) trains one client at a time on all
                 cores, as the centralized run does, so the ratio isolates Flower's cost;
                 ``--clients parallel`` keeps the preset's N one-thread clients side by
                 side (what ``dfflab federated run`` does);
and prints the wall time of each, the ratio, and where the federated time went
(Flower start-up: SuperLink, simulation process, Ray and its actors; client training;
messaging and client validation; the server's evaluation).

``--pipeline`` measures what the pipeline pays instead: in one process, the centralized run,
then ``--batch`` K federated runs of the same settings batched into one Flower run
(``run_batch``, as the pipeline's federated stage runs its baselines and DP points): the
batch's wall time over K against the centralized run is the per-run cost the pipeline pays
(the Flower start -- simulation process, ServerApp, Ray and its actors -- is paid once per
batch); the runs must end with the same AUROC.

Goals: ratio <= 1.5 at the quick preset on 2 CPU cores; <= 1.15 at DFF scale on a GPU
(``--preset full --set fl.client-gpus=0.3``). Timings on a shared machine are noisy:
run it on an idle one, and more than once (``--repeat``).

    python benchmarks/fl_overhead.py                      # quick preset, E = fl.rounds
    python benchmarks/fl_overhead.py --epochs 4 --preset tiny
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dfflab.config import load_config
from dfflab.runs import list_runs


def run_cli(args: list[str]) -> float:
    """Wall seconds of ``python -m dfflab <args>`` (raises if it fails)."""
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "dfflab", *args], check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


def newest(results: Path, stage: str):
    runs = list_runs(results, stage)
    if not runs or not runs[-1].finished:
        raise RuntimeError(f"no finished {stage} run in {results}")
    return runs[-1]


def one(preset: str, epochs: int, sets: list[str], results: Path, clients: str) -> dict:
    common = ["--preset", preset, "--set", f"results={results}"] + [a for s in sets for a in ("--set", s)]
    fed_only = []
    if clients == "sequential":
        cores = os.cpu_count() or 1
        fed_only = ["--set", f"fl.client-cpus={cores}", "--set", "fl.parallel-clients=1"]
    central = run_cli(["centralized", "train", *common, "--set", f"train.epochs={epochs}",
                       "--set", f"train.patience={epochs + 1}", "--set", "train.audit=false",
                       "--name", "overhead", "--no-resume"])
    fed = run_cli(["federated", "run", *common, "--set", f"fl.rounds={epochs}", "--set", "fl.local-epochs=1",
                   "--set", "fl.partitioning=iid", "--set", "fl.strategy=fedavg", "--name", "overhead",
                   "--quiet", *fed_only])
    c, f = newest(results, "centralized"), newest(results, "federated")
    rows = [r for r in f.metrics() if r["round"] > 0]
    phases = {k: sum(float(r.get(k) or 0) for r in rows)
              for k in ("train_phase_s", "client_compute_s", "eval_phase_s", "server_eval_s")}
    first_round = rows[0]["train_phase_s"] - rows[0]["client_compute_s"] if rows else 0.0
    later = [r["train_phase_s"] - r["client_compute_s"] for r in rows[1:]]
    return {"central_wall": central, "fed_wall": fed,
            "central_samples": c.summary().get("samples"), "fed_samples": f.summary()["samples"],
            "central_loop": c.summary().get("seconds"), "fed_rounds": rows[-1]["seconds"] if rows else 0.0,
            "fed_setup": fed - (rows[-1]["seconds"] if rows else 0.0),
            "actor_warmup": first_round - (sum(later) / len(later) if later else 0.0), **phases,
            "central_auroc": c.summary()["test"]["auroc"], "fed_auroc": f.summary()["test"]["auroc"]}


PIPELINE = """
import json, sys, time
from dfflab.config import load_config
from dfflab.detector.trainer import train_detector
from dfflab.federated.launcher import Job, flower_session, run_batch
preset, epochs, k, sets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
cfg = load_config(preset, sets + [f"train.epochs={epochs}", f"train.patience={epochs + 1}", "train.audit=false",
                                  f"fl.rounds={epochs}", "fl.local-epochs=1", "fl.partitioning=iid",
                                  "fl.strategy=fedavg"])
t0 = time.time(); c = train_detector(cfg, name="overhead-central", progress=False, resume=False); t1 = time.time()
with flower_session():
    runs = run_batch([Job(cfg, f"overhead-fed-{i}") for i in range(k)], progress=False, resume=False)
t2 = time.time()
print(json.dumps({"central": t1 - t0, "batch": t2 - t1, "walls": [r.record["flower"]["wall_seconds"] for r in runs],
                  "central_auroc": c.summary()["test"]["auroc"],
                  "fed_aurocs": [r.summary()["test"]["auroc"] for r in runs],
                  "fed_rounds": runs[-1].metrics()[-1]["seconds"]}))
"""


def pipeline_mode(preset: str, epochs: int, sets: list[str], results: Path, k: int) -> dict:
    """Centralized, then a batch of ``k`` federated runs in one Flower run, in one process (as the pipeline)."""
    import json

    out = subprocess.run([sys.executable, "-c", PIPELINE, preset, str(epochs), str(k), f"results={results}", *sets],
                         check=True, capture_output=True, text=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    walls = m["walls"]
    print(f"\npipeline mode ({epochs} epochs-equivalent, in one process; {k} federated runs of the same "
          "settings batched into one Flower run, as the pipeline's federated stage runs its baselines)")
    print(f"  centralized                {m['central']:7.1f} s   test AUROC {m['central_auroc']:.4f}")
    print(f"  federated batch of {k}       {m['batch']:7.1f} s   per run {m['batch'] / k:.1f} s "
          f"(first {walls[0]:.1f} s with the Flower start, then {', '.join(f'{w:.1f}' for w in walls[1:])})")
    print(f"  test AUROC of each batched run: {', '.join(f'{a:.4f}' for a in m['fed_aurocs'])} "
          f"({'identical' if len(set(m['fed_aurocs'])) == 1 else 'NOT identical'})")
    if k > 1:
        print(f"  ratio a later batched run / centralized: {sum(walls[1:]) / (k - 1) / m['central']:.2f}")
    print(f"  ratio federated per run (batch / {k}) / centralized: {m['batch'] / k / m['central']:.2f}   "
          "(goal <= 1.5 quick)")
    return m


def report(m: dict, epochs: int, clients: str) -> None:
    print(f"\nsame data, model and sample passes ({epochs} epochs-equivalent); federated clients {clients}")
    print(f"  centralized  wall {m['central_wall']:7.1f} s   training loop {m['central_loop']:7.1f} s   "
          f"samples {m['central_samples']}   test AUROC {m['central_auroc']:.4f}")
    print(f"  federated    wall {m['fed_wall']:7.1f} s   rounds        {m['fed_rounds']:7.1f} s   "
          f"samples {m['fed_samples']}   test AUROC {m['fed_auroc']:.4f}")
    print(f"    Flower start-up + launcher (before round 0 is scored, and clean-up)  {m['fed_setup']:6.1f} s")
    print(f"    first-round actor start (Ray workers import torch and dfflab)        {m['actor_warmup']:6.1f} s")
    print(f"    client training phases {m['train_phase_s']:6.1f} s (slowest client's compute "
          f"{m['client_compute_s']:.1f} s), client validation phases {m['eval_phase_s']:.1f} s, "
          f"server evaluation {m['server_eval_s']:.1f} s")
    print(f"  ratio federated / centralized wall: {m['fed_wall'] / m['central_wall']:.2f}   "
          f"(goal <= 1.5 quick on 2 CPU cores, <= 1.15 at DFF scale on a GPU)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--epochs", type=int, help="epochs = rounds (default: the preset's fl.rounds)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra settings for both runs")
    ap.add_argument("--clients", choices=("sequential", "parallel"), default="sequential",
                    help="federated clients one at a time on all cores (default) or the preset's setting")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--pipeline", action="store_true", help="measure as the pipeline runs: one process, the "
                    "federated runs batched into one Flower run")
    ap.add_argument("--batch", type=int, default=5, help="--pipeline: federated runs in the batch (default 5: the "
                    "quick pipeline's four baselines and its DP point)")
    ap.add_argument("--results", help="where the run folders go (default: a temp folder)")
    args = ap.parse_args()
    epochs = args.epochs or load_config(args.preset, args.sets).fl.rounds
    results = Path(args.results or tempfile.mkdtemp(prefix="fl-overhead-"))
    for _ in range(args.repeat):
        if args.pipeline:
            pipeline_mode(args.preset, epochs, args.sets, results, args.batch)
            continue
        m = one(args.preset, epochs, args.sets, results, args.clients)
        report(m, epochs, args.clients)
    print(f"run folders: {results / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
