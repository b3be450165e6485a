"""Launch a federated run: ``flwr run .`` as a subprocess, and stop what it started.

:func:`run_federated` makes the run folder, writes the Flower run config
(``flwr-run-config.toml``: the dfflab settings with absolute paths and ``run-dir``),
then runs, from the repository root::

    flwr run . --stream --run-config <run>/flwr-run-config.toml \\
        --federation-config "num-supernodes=N client-resources-num-cpus=C client-resources-num-gpus=G"

with its own ``FLWR_HOME`` (a temp folder) and SuperLink port, so runs of several
people on one machine don't meet. flwr 1.42's ``flwr run`` always talks to a
SuperLink and starts a local one for a simulation, which keeps running afterwards;
this module stops every process that carries its ``FLWR_HOME`` (SuperLink, SuperExec,
simulation, Ray) by process id when the run ends, fails or is interrupted.

Several runs can share one SuperLink (:func:`flower_session`: the pipeline's federated
stage, a recipe search, the robustness table): a ``flwr run`` that finds the session's
SuperLink healthy on its port submits to it instead of starting one, which saves the
SuperLink and SuperExec start-up of every run after the first; everything stops when the
session ends.
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` keeps the SuperLink from building a
fresh virtual environment (``uv sync``: torch again) for each run.

    dfflab federated run --preset quick --set fl.strategy=fedprox
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dfflab.config import ConfigError
from dfflab.federated.config import check_names, default_name, run_stage
from dfflab.federated.processes import cmdline, free_port, processes_with_env, stop_processes
from dfflab.federated.records import FINISHED
from dfflab.federated.runconfig import absolute_paths, declared_keys, to_run_config
from dfflab.files import atomic_write_text
from dfflab.runs import Run, open_or_resume

STAGE = "federated"
# Lines of flwr's log stream worth echoing to the console (the whole stream goes to flower.log).
SHOWN = re.compile(r"\[ROUND|aggregate_(train|evaluate): Received|Global evaluation|dfflab run folder"
                   r"|ERROR|Traceback|Error|finished in")


# -- processes --------------------------------------------------------------------------
def app_dir() -> Path:
    """The repository root: the Flower app (its pyproject.toml declares the apps)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{root} has no pyproject.toml: `flwr run` needs dfflab's source "
                                "tree (an editable install), not an installed wheel")
    return root


def flwr_env(home: Path, port: int) -> dict[str, str]:
    """Environment of ``flwr run``: private FLWR_HOME and SuperLink port, no installs or phoning home."""
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
    })
    return env


# -- federated run ------------------------------------------------------------------------
def check_source_n(cfg, store) -> None:
    """``source`` partitioning needs N to be a multiple of the fake sources trained on."""
    k = len([s for s in cfg.train.train_sources or store.fake_sources if s in store.fake_sources])
    if cfg.fl.partitioning == "source" and (k == 0 or cfg.fl.num_partitions % k):
        raise ConfigError(f"fl.num-partitions={cfg.fl.num_partitions}: source partitioning needs a "
                          f"multiple of the {k} fake sources in train.train-sources")


def flwr_command(app: Path, run_config: Path, cfg) -> list[str]:
    """The ``flwr run`` command line for ``cfg``: N clients, their CPU/GPU shares.

    Ray is told the machine has ``fl.parallel-clients`` x ``fl.client-cpus`` CPUs
    (default: enough for all N clients at once, at least the real core count): on 2
    cores, 3 one-thread clients side by side finish a round about a quarter sooner
    than two side by side and the third alone.
    """
    n, cpus = cfg.fl.num_partitions, cfg.fl.client_cpus
    ray_cpus = cfg.fl.parallel_clients * cpus if cfg.fl.parallel_clients > 0 else max(os.cpu_count() or 1, n * cpus)
    fed = (f"num-supernodes={n} client-resources-num-cpus={cpus} client-resources-num-gpus={cfg.fl.client_gpus} "
           f"init-args-num-cpus={ray_cpus}")
    flwr = shutil.which("flwr") or str(Path(sys.executable).parent / "flwr")
    return [flwr, "run", str(app), "--stream", "--run-config", str(run_config), "--federation-config", fed]


class FlowerSession:
    """A private ``FLWR_HOME`` and SuperLink port that several ``flwr run`` calls share."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="dfflab-flwr-"))
        self.env = flwr_env(self.home, free_port())
        self.runs = 0

    def close(self) -> dict:
        """Stop every process that carries this session's FLWR_HOME; returns what was stopped and left."""
        started: list[dict] = []
        left: list[int] = []
        for _ in range(3):  # a process that was starting up (a Ray worker) may appear after the first pass
            found = [{"pid": pid, "cmd": cmdline(pid)} for pid in processes_with_env("FLWR_HOME", str(self.home))]
            if not found:
                break
            started += found
            left = stop_processes([p["pid"] for p in found])
        shutil.rmtree(self.home, ignore_errors=True)
        return {"stopped": started, "still_running": left}


_ACTIVE: list[FlowerSession] = []  # the innermost open flower_session(), used by run_federated


@contextlib.contextmanager
def flower_session():
    """Run every :func:`run_federated` inside the block against one SuperLink; stop it at the end."""
    session = FlowerSession()
    _ACTIVE.append(session)
    try:
        with _term_as_interrupt():
            yield session
    finally:
        _ACTIVE.remove(session)
        session.close()


def run_federated(cfg, *, name: str | None = None, parent: str | None = None, note: str = "",
                  progress: bool = True, resume: bool = True, extra: dict | None = None) -> Run:
    """Run one federated training with Flower's simulation engine; returns its run folder.

    Args:
        cfg: the resolved config (``fl`` section plus the shared data/model/train).
        name: run name (default ``<strategy>-<partitioning>``).
        parent, note: recorded in config.json.
        extra: further config.json fields (an evolution step's record, say).
        progress: echo the rounds and results to the console.
        resume: continue a crashed run of this name and settings from its ``last.pt``
            (the global model after its last finished round).

    Raises:
        RuntimeError: the run ended without a summary (the ServerApp failed); the
            message holds the end of ``flower.log``.
    """
    return run_batch([Job(cfg, name, parent, note, extra)], progress=progress, resume=resume)[0]


@dataclass
class Job:
    """One federated run of a :func:`run_batch`: the arguments of :func:`run_federated`
    (``parent`` may also be the ``name`` of an earlier job of the batch: that run's folder)."""

    cfg: Any
    name: str | None = None
    parent: str | None = None
    note: str = ""
    extra: dict | None = None


def run_batch(jobs: list[Job], *, progress: bool = True, resume: bool = True) -> list[Run]:
    """Several federated runs, one after another in **one** Flower run; their run folders, in order.

    Each run gets its own folder, config, partition, strategy and results, exactly as
    :func:`run_federated` gives it; what they share is the Flower run around them: the
    simulation process, the ServerApp's imports, Ray and its client actors start once
    (about 15 s per run on 2 cores) instead of once per run. The ServerApp runs the folders
    its ``batch`` setting lists in order; a client forgets what it kept for one run (FedBN
    layers, AdamW state, SSL state) when the next run's first message arrives. Runs whose
    federations differ (N, client CPUs/GPUs) go into separate Flower runs, in order.

    Raises:
        RuntimeError: after the whole batch, naming every run that ended without a summary
            (the others are finished and kept).
    """
    prepared, made = [], {}
    for j in jobs:
        name = j.name or default_name(j.cfg)
        parent = made.get(j.parent, j.parent) if j.parent else None  # an earlier job's name: its folder
        cfg, run, rc_path = prepare_run(j.cfg, name, j.note, progress, parent=parent, resume=resume, extra=j.extra)
        prepared.append(_Prepared(cfg, run, rc_path, name))
        made[name] = run.name
    groups: list[list[_Prepared]] = []
    for item in prepared:  # consecutive runs with the same federation share one Flower run
        if groups and _federation(item) == _federation(groups[-1][0]):
            groups[-1].append(item)
        else:
            groups.append([item])
    for group in groups:
        _launch(group, progress)
    failed = [(p.run, p.name) for p in prepared if not p.run.finished]
    if failed:
        raise RuntimeError("; ".join(
            f"federated run {run.dir} ended without summary.json; end of {run.path('flower.log')}:\n"
            f"{flower_log_tail(run)}" if run.dir.is_dir() else f"batched run {name} never began (folder removed)"
            for run, name in failed))
    if progress:
        from dfflab.federated.records import result_line

        for p in prepared:
            print(f"{p.name}: {result_line(p.run.summary())}; {p.run.record['flower']['wall_seconds']:.1f} s "
                  f"wall; run folder {p.run.dir}")
    return [p.run for p in prepared]


class _Prepared(NamedTuple):
    cfg: Any
    run: Run
    rc_path: Path  # its flwr-run-config.toml
    name: str


BATCH_MARK = re.compile(r"dfflab batch: run (\d+) of (\d+)")
FINISHED_LINE = re.compile(re.escape(FINISHED) + r"(.+)$")


def _federation(p: _Prepared) -> str:
    """The ``--federation-config`` of a prepared run (runs with the same one can share a Flower run)."""
    return flwr_command(app_dir(), p.rc_path, p.cfg)[-1]


def _launch(group: list[_Prepared], progress: bool) -> None:
    """One ``flwr run`` for the prepared runs of ``group`` (a single run, or a batch of several)."""
    cfg, first, rc_path, _ = group[0]
    if len(group) > 1:  # the first run's settings, plus the folders the ServerApp runs in order
        import tomllib

        import tomli_w

        rc = tomllib.loads(rc_path.read_text())
        rc["batch"] = ";".join(str(p.run.dir) for p in group)
        rc_path = first.path("flwr-batch-config.toml")
        atomic_write_text(rc_path, tomli_w.dumps(rc))
    app = app_dir()
    cmd = flwr_command(app, rc_path, cfg)
    shared = _ACTIVE[-1] if _ACTIVE else None
    session = shared or FlowerSession()
    reused = session.runs > 0
    session.runs += 1
    t0 = time.time()
    ended: dict = {}
    marks = [t0]
    try:
        with _term_as_interrupt():
            code = _stream(cmd, app, session.env, [p.run.path("flower.log") for p in group], progress,
                           marks=marks, finished=[p.run.dir for p in group])
    finally:  # flwr leaves its SuperLink running: a run of its own stops everything it started
        if shared is None:
            ended = session.close()
        for p in group[1:]:  # batched runs that never began (a crash before them) leave no folder
            if not p.run.finished and not p.run.path("metrics.csv").is_file():
                shutil.rmtree(p.run.dir, ignore_errors=True)
    t1 = time.time()
    bounds = marks + [t1] * (len(group) + 1 - len(marks))
    names = [p.name for p in group]
    for k, run in enumerate(p.run for p in group):
        if not run.dir.is_dir():
            continue
        rec = {"command": cmd, "returncode": code, "wall_seconds": round(bounds[k + 1] - bounds[k], 2),
               "flwr_home": str(session.home), "shared_superlink": shared is not None, "superlink_reused": reused,
               **ended}
        if len(group) > 1:
            rec.update({"batch": names, "batch_wall_seconds": round(t1 - t0, 2)})
        run.update_record(flower=rec)


def prepare_run(cfg, name: str, note: str = "", progress: bool = True, *, parent: str | None = None,
                resume: bool = False, extra: dict | None = None) -> tuple[object, Run, Path]:
    """(cfg with absolute paths, run folder, its ``flwr-run-config.toml``) of a Flower run.

    Prepares the store and the clients' shares (``partition.npz``) once, here, so the
    ServerApp and ClientApps find them ready, and checks N before Flower starts. With
    ``resume``, a crashed run of ``name`` with the same settings is continued instead of a
    new folder.
    """
    from dfflab.data import ensure_store
    from dfflab.federated import shares

    cfg = absolute_paths(copy.deepcopy(cfg))
    check_names(cfg.fl)
    store = ensure_store(cfg, progress=progress)
    check_source_n(cfg, store)  # a bad N fails now, not inside Flower
    run, _ = open_or_resume(cfg, run_stage(cfg.fl), name, fingerprint=store.fingerprint, parent=parent, note=note,
                            resume=resume, extra=extra, quiet=not progress)
    shares.prepare(run.dir, store, cfg)  # partitioned once, here: the ServerApp and the clients read the file
    rc = to_run_config(cfg, declared_keys(app_dir()), **{"run-dir": str(run.dir), "name": name, "note": note})
    import tomli_w  # ships with flwr

    atomic_write_text(run.path("flwr-run-config.toml"), tomli_w.dumps(rc))
    return cfg, run, run.path("flwr-run-config.toml")


@contextlib.contextmanager
def _term_as_interrupt():
    """SIGTERM raises KeyboardInterrupt meanwhile, so a killed launcher still stops its SuperLink."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _stream(cmd: list[str], cwd: Path, env: dict, log: Path | list[Path], progress: bool,
            marks: list[float] | None = None, finished: list[Path] | None = None) -> int:
    """Run ``cmd``, teeing its output to ``log`` (and its key lines to the console).

    With several logs (a batch), the output moves to log k when the ServerApp announces
    run k; ``marks`` gets the time of each announcement after the first. With ``finished``
    (the run folders), ``flwr run`` is stopped (exit code 0) once the ServerApp has announced
    every one of them finished and their summaries exist: Flower's own shutdown (actors, Ray,
    the log stream: 3-4 s) then happens without anyone waiting, and the session stops it.
    """
    logs = [log] if isinstance(log, Path | str) else list(log)
    pending = {str(d) for d in finished or []}
    current = 0
    f = open(logs[0], "w")  # noqa: SIM115 (switched below)
    try:
        with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              bufsize=1) as proc:
            try:
                for line in proc.stdout:
                    m = BATCH_MARK.search(line) if len(logs) > 1 else None
                    if m and 0 < int(m.group(1)) - 1 < len(logs) and int(m.group(1)) - 1 != current:
                        current = int(m.group(1)) - 1
                        f.close()
                        f = open(logs[current], "w")  # noqa: SIM115
                        if marks is not None:
                            marks.append(time.time())
                    f.write(line)
                    f.flush()  # others watch the log (deploy's fault injection)
                    if progress and (SHOWN.search(line) or m):
                        print(_plain(line), end="", flush=True)
                    done = FINISHED_LINE.search(_plain(line))
                    if done and pending:
                        pending.discard(done.group(1).strip())
                        if not pending and all((Path(d) / "summary.json").is_file() for d in finished):
                            proc.terminate()
                            proc.wait(timeout=30)
                            return 0
                return proc.wait()
            except BaseException:
                proc.kill()  # interrupted: the finally of the caller stops the SuperLink
                raise
    finally:
        f.close()


def _plain(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def flower_log_tail(run, lines: int = 30) -> str:
    """The last ``lines`` lines of a run's ``flower.log`` (for the error of a run that died)."""
    return "".join(run.path("flower.log").read_text(errors="replace").splitlines(True)[-lines:])
