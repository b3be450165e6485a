"""The federation on Flower's deployment engine, on this machine: TLS, node authentication.

:func:`deploy_local` starts, on loopback with free ports:

1. ``flower-superlink`` with TLS (a CA and server certificate made by
   :mod:`dfflab.federated.certs`, SANs localhost/127.0.0.1) and
   ``--enable-supernode-auth``;
2. registers one EC P-384 key per SuperNode with ``flwr supernode register`` (flwr
   1.42: the SuperLink admits a SuperNode only if its public key was registered; the
   node id is fixed at registration, so a restarted node rejoins as itself);
3. optionally a SuperNode with an unregistered key, which the SuperLink must refuse;
4. N ``flower-supernode`` processes, node i with ``--node-config "partition-id=i
   num-partitions=N"`` and its private key, trusting the CA;
5. ``flwr run . local-deploy --stream`` (a ``[superlink.local-deploy]`` entry in a temp
   ``FLWR_HOME/config.toml``), waits for the run and its ``summary.json``;

and stops every process it started by process id (each carries ``DFFLAB_DEPLOY=<id>``
in its environment, so SuperExec, ServerApp and ClientApp children are found too), on
success, failure, Ctrl-C or SIGTERM. ``kill=(node, round)`` SIGKILLs a SuperNode while
it trains in that round and restarts it once the SuperLink has marked it offline
(fault test; flwr refuses to re-activate a node id it still thinks online). Everything it made (certificates,
keys, logs) stays in ``<run>/deploy/``.

    dfflab federated deploy-local --preset tiny --set fl.num-partitions=3 --set fl.partitioning=iid
    dfflab federated deploy-local --preset tiny --kill 2@1 --set fl.min-nodes=2 --set fl.wait-nodes=60
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from dfflab.federated.certs import make_node_key, make_tls
from dfflab.federated.launcher import (
    _stream,
    _term_as_interrupt,
    app_dir,
    flower_log_tail,
    flwr_env,
    prepare_run,
)
from dfflab.federated.processes import alive, cmdline, free_port, processes_with_env, stop_processes
from dfflab.runs import Run

CONNECTION = "local-deploy"
MARK = "DFFLAB_DEPLOY"  # environment key every process of one deployment carries


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


class LocalFederation:
    """A SuperLink and its SuperNodes on loopback, all stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, n: int, *, progress: bool = True):
        self.dir, self.n, self.progress = Path(workdir), n, progress
        self.id = uuid.uuid4().hex
        self.home = Path(tempfile.mkdtemp(prefix="dfflab-deploy-"))  # FLWR_HOMEs: apps, CLI config
        self.port = free_port()
        self.tls = make_tls(self.dir / "certs")
        self.procs: dict[str, subprocess.Popen] = {}
        self.keys: dict[int, Path] = {}
        self.node_ids: dict[int, int] = {}  # partition id -> SuperNode id
        self.started: list[dict] = []  # every process seen, for the run record

    def say(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    # -- processes ------------------------------------------------------------------
    def env(self, home: str = "cli") -> dict[str, str]:
        env = flwr_env(self.home / home, free_port())
        env[MARK] = self.id
        return env

    def _spawn(self, name: str, cmd: list[str], home: str) -> subprocess.Popen:
        (self.home / home).mkdir(parents=True, exist_ok=True)
        log = open(self.dir / f"{name}.log", "a")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(home),
                                cwd=self.dir, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_superlink(self) -> None:
        self._spawn("superlink", [_bin("flower-superlink"), "--ssl-certfile", str(self.tls.cert),
                                  "--ssl-keyfile", str(self.tls.key), "--ssl-ca-certfile", str(self.tls.ca),
                                  "--enable-supernode-auth", "--disable-runtime-dependency-installation",
                                  "--host", "127.0.0.1", "--port", str(self.port)], "superlink")
        cli = self.home / "cli"
        cli.mkdir(parents=True, exist_ok=True)
        (cli / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.tls.ca}"\n')
        self._wait(lambda: self._flwr_json(["supernode", "list"], quiet=True) is not None, 60,
                   "the SuperLink did not answer", "superlink")
        self.say(f"SuperLink on https://127.0.0.1:{self.port} (CA {self.tls.ca}), SuperNode auth on")

    def register(self, pid: int) -> int:
        """Make partition ``pid``'s key pair and register it; returns its SuperNode id."""
        private, public = make_node_key(self.dir / "keys", f"node{pid}")
        out = self._flwr_json(["supernode", "register", str(public)])
        if not out or not out.get("success"):
            raise RuntimeError(f"flwr supernode register {public} failed: {out}")
        self.keys[pid], self.node_ids[pid] = private, int(out["node-id"])
        self.say(f"registered {public.name} as SuperNode {self.node_ids[pid]} (partition {pid})")
        return self.node_ids[pid]

    def start_supernode(self, pid: int, key: Path | None = None, name: str | None = None) -> subprocess.Popen:
        key = key or self.keys[pid]
        return self._spawn(name or f"node{pid}", [
            _bin("flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.tls.ca), "--auth-supernode-private-key", str(key),
            "--node-config", f"partition-id={pid} num-partitions={self.n}", "--port", str(free_port())],
            name or f"node{pid}")

    def start_unregistered(self) -> subprocess.Popen:
        """A SuperNode whose key was never registered: the SuperLink must refuse it."""
        private, _ = make_node_key(self.dir / "keys", "unregistered")
        return self.start_supernode(0, key=private, name="unregistered")

    def refused(self, proc: subprocess.Popen, timeout: float = 90) -> dict:
        """Whether the unregistered SuperNode ``proc`` was refused (and gave up)."""
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        log = (self.dir / "unregistered.log").read_text(errors="replace")
        link = (self.dir / "superlink.log").read_text(errors="replace")
        refused = code not in (None, 0) and "No SuperNode found with the given public key" in link
        return {"returncode": code, "refused": refused,
                "error": next((ln.strip() for ln in log.splitlines() if "Failed to" in ln), "")}

    def wait_online(self, timeout: float = 120) -> None:
        want = {str(i) for i in self.node_ids.values()}

        def online() -> bool:
            out = self._flwr_json(["supernode", "list"], quiet=True) or {}
            return want <= {n["node-id"] for n in out.get("nodes", []) if n.get("status") == "online"}

        self._wait(online, timeout, f"not all {self.n} SuperNodes came online", "node0")
        self.say(f"{self.n} SuperNodes online")

    def status(self, pid: int) -> str:
        """The SuperLink's status of partition ``pid``'s node (online, offline, registered)."""
        out = self._flwr_json(["supernode", "list"], quiet=True) or {}
        return next((n.get("status", "") for n in out.get("nodes", [])
                     if n.get("node-id") == str(self.node_ids[pid])), "")

    def kill_node(self, pid: int) -> list[int]:
        """SIGKILL SuperNode ``pid`` and its children (a crash); returns the pids killed."""
        root = self.procs[f"node{pid}"].pid
        victims = [root, *_descendants(root)]
        for p in victims:
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        self.procs[f"node{pid}"].wait(30)
        return victims

    def stop(self) -> list[int]:
        """Stop every process of this deployment; returns the pids still alive (none, normally)."""
        pids = sorted({p.pid for p in self.procs.values()} | set(processes_with_env(MARK, self.id)))
        self.started += [{"pid": p, "cmd": cmdline(p)} for p in pids if alive(p)]
        left = stop_processes(pids)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.wait(5)
        shutil.rmtree(self.home, ignore_errors=True)
        return left

    # -- helpers --------------------------------------------------------------------
    def _flwr_json(self, args: list[str], quiet: bool = False) -> dict | None:
        cmd = [_bin("flwr"), *args, CONNECTION, "--format", "json"]
        res = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=60, cwd=self.dir)
        start = res.stdout.find("{")
        try:
            return json.loads(res.stdout[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            if not quiet:
                raise RuntimeError(f"{' '.join(cmd)}: {res.stdout}{res.stderr}") from None
            return None

    def _wait(self, ok, timeout: float, what: str, log_name: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ok():
                return
            time.sleep(1.0)
        tail = (self.dir / f"{log_name}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{what} within {timeout:.0f} s; end of {self.dir / log_name}.log:\n{tail}")


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _chaos(fed: LocalFederation, log: Path, node: int, rnd: int, events: list, stop: threading.Event) -> None:
    """Kill SuperNode ``node`` once it runs a ClientApp in round ``rnd``; restart it."""
    marker = f"[ROUND {rnd}/"
    while not stop.is_set():
        text = log.read_text(errors="replace") if log.is_file() else ""
        if marker in text and any("clientapp" in cmdline(p) for p in _descendants(fed.procs[f"node{node}"].pid)):
            events.append({"event": "killed", "node": node, "round": rnd, "pids": fed.kill_node(node),
                           "time": time.time()})
            # the SuperLink re-admits a node id only once it has marked it offline (no
            # heartbeat for 2 x 30 s); a node restarted sooner is refused and exits
            while not stop.is_set() and fed.status(node) == "online":
                time.sleep(2.0)
            fed.start_supernode(node)
            events.append({"event": "restarted", "node": node, "round": rnd, "time": time.time()})
            return
        time.sleep(0.3)


def deploy_local(cfg, *, name: str | None = None, note: str = "", progress: bool = True,
                 check_unregistered: bool = True, kill: tuple[int, int] | None = None) -> Run:
    """One federated run on a local TLS + authenticated deployment; returns its run folder.

    Args:
        cfg: the resolved config; ``fl.num-partitions`` SuperNodes are started.
        name, note: the run's name and note.
        check_unregistered: also show that a SuperNode with an unregistered key is refused.
        kill: ``(partition id, round)``: SIGKILL that SuperNode while it trains in that
            round, then restart it (set ``fl.min-nodes`` < N and ``fl.round-timeout``
            so the round goes on without it).

    Raises:
        RuntimeError: a process failed to start, or the run ended without summary.json.
    """
    cfg, run, rc_path = prepare_run(cfg, name or f"deploy-{cfg.fl.strategy}-{cfg.fl.partitioning}", note, progress)
    fed = LocalFederation(run.path("deploy"), cfg.fl.num_partitions, progress=progress)
    record: dict = {"id": fed.id, "mark": MARK, "port": fed.port, "tls": {k: str(v) for k, v in vars(fed.tls).items()}}
    events: list[dict] = []
    stop = threading.Event()
    t0, code = time.time(), None
    cmd = [_bin("flwr"), "run", str(app_dir()), CONNECTION, "--stream", "--run-config", str(rc_path)]
    try:
        with _term_as_interrupt():
            fed.start_superlink()
            record["nodes"] = {str(p): fed.register(p) for p in range(fed.n)}
            rogue = fed.start_unregistered() if check_unregistered else None
            for p in range(fed.n):
                fed.start_supernode(p)
            fed.wait_online()
            if rogue is not None:
                record["unregistered"] = fed.refused(rogue)
            record["ready_seconds"] = round(time.time() - t0, 2)
            if kill is not None:
                threading.Thread(target=_chaos, args=(fed, run.path("flower.log"), *kill, events, stop),
                                 daemon=True).start()
            code = _stream(cmd, app_dir(), fed.env(), run.path("flower.log"), progress)
    finally:
        stop.set()
        left = fed.stop()
        run.update_record(deploy={**record, "command": cmd, "returncode": code, "events": events,
                                  "wall_seconds": round(time.time() - t0, 2), "stopped": fed.started,
                                  "still_running": left})
    if not run.finished:
        raise RuntimeError(f"deployed run {run.dir} ended without summary.json (flwr exit code {code}); "
                           f"logs in {fed.dir}; end of flower.log:\n{flower_log_tail(run)}")
    if progress:
        s = run.summary()
        print(f"{run.name}: test AUROC {s['test']['auroc']:.4f} after {s['rounds_run']} rounds on "
              f"{fed.n} SuperNodes (TLS, authenticated); {time.time() - t0:.1f} s; run folder {run.dir}")
    return run
