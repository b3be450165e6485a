"""Processes this machine runs for a federation: a free port, which live processes carry an
environment variable, and stopping them by process id (Linux ``/proc``).

The launcher and the deployment runner start Flower's SuperLink, SuperNodes, simulation
and Ray; flwr 1.42 leaves some of them running, so both stop what they started by the
private ``FLWR_HOME`` (or marker variable) every one of those processes inherits.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_with_env(key: str, value: str) -> list[int]:
    """Live (non-zombie) process ids whose environment has ``key=value`` (Linux /proc)."""
    needle = f"{key}={value}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0") and not _zombie(d):
                pids.append(int(d.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _zombie(proc_dir: Path) -> bool:
    stat = (proc_dir / "stat").read_text()
    return stat[stat.rindex(")") + 2] in "ZX"


def stop_processes(pids: list[int], timeout: float = 15.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL what is left after ``timeout``; returns those still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + timeout
        while time.time() < deadline:
            pids = [p for p in pids if alive(p)]
            if not pids:
                return []
            time.sleep(0.2)
    return [p for p in pids if alive(p)]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return not _zombie(Path(f"/proc/{pid}"))
    except OSError:
        return False
