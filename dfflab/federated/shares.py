"""Each client's share of the store, partitioned once per run and kept in its folder.

:mod:`dfflab.federated.partition` partitions with flwr-datasets (which imports
``datasets``, pandas, scipy and seaborn: about 1.6 s per process on 2 cores). A run
partitions once -- the launcher before Flower starts, or the ServerApp of a bare
``flwr run .`` -- and writes ``partition.npz`` (each client's train and val store rows,
under the key of the settings that made them) with ``partition.png`` beside it. The
ServerApp and every simulated client read their rows from that file with numpy alone;
a client that can't see the file (a SuperNode on another machine) or finds it made for
other settings partitions itself, which gives the same rows (every partitioner is seeded).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

FILE = "partition.npz"
SPLITS = ("train", "val")
_READ: dict[tuple[str, str], dict[int, dict[str, np.ndarray]]] = {}  # per process: (file, key) -> shares


def key(store, cfg, n: int | None = None) -> str:
    """What the shares depend on: the store's contents and the partitioning settings."""
    fl = cfg.fl
    return json.dumps({"fingerprint": store.fingerprint, "partitioning": fl.partitioning,
                       "n": int(n or fl.num_partitions), "alpha": fl.alpha,
                       "min_partition_size": fl.min_partition_size, "seed": fl.partition_seed,
                       "train_sources": list(cfg.train.train_sources)}, sort_keys=True)


def read(path: Path | str, store, cfg, n: int | None = None) -> dict[int, dict[str, np.ndarray]] | None:
    """The shares in ``path`` if it holds those of these settings, else None."""
    path, k = Path(path), key(store, cfg, n)
    if (str(path), k) in _READ:
        return _READ[(str(path), k)]
    if not path.is_file():
        return None
    with np.load(path) as z:
        if str(z["key"]) != k:
            return None
        m = int(json.loads(k)["n"])
        shares = {p: {s: z[f"{p}_{s}"].astype(np.int64) for s in SPLITS} for p in range(m)}
    _READ[(str(path), k)] = shares
    return shares


def prepare(run_dir: Path | str, store, cfg, n: int | None = None) -> dict[int, dict[str, np.ndarray]]:
    """The run's shares: read from ``<run_dir>/partition.npz``, or partitioned and written there
    (with ``partition.png``) when the folder has none for these settings."""
    path = Path(run_dir) / FILE
    shares = read(path, store, cfg, n)
    if shares is not None:
        return shares
    from dfflab.federated.partition import all_client_rows, make_partitioner, plot_partition
    from dfflab.files import atomic_write_bytes

    m, k = int(n or cfg.fl.num_partitions), key(store, cfg, n)
    part = make_partitioner(store, cfg, m)
    shares = all_client_rows(part)
    plot_partition(part, path.with_suffix(".png"),
                   f"{cfg.fl.partitioning} partition, N={m} (training images)")
    buf = io.BytesIO()
    np.savez(buf, key=np.array(k), **{f"{p}_{s}": rows[s] for p, rows in shares.items() for s in SPLITS})
    atomic_write_bytes(path, buf.getvalue())
    _READ[(str(path), k)] = shares
    return shares


def client(path: Path | str | None, store, cfg, partition_id: int, n: int | None = None) -> dict[str, np.ndarray]:
    """One client's ``{"train": rows, "val": rows}``: from the run's file, else partitioned here."""
    shares = read(path, store, cfg, n) if path else None
    if shares is not None:
        return shares[partition_id]
    from dfflab.federated.partition import client_rows

    return client_rows(store, cfg, partition_id, n)


def composition(store, shares: dict[int, dict[str, np.ndarray]], split: str = "train") -> list[dict]:
    """Per client: image count per source of one split (for logs, summaries and tests)."""
    table = []
    for p, rows in sorted(shares.items()):
        counts = {s: int((store.sources[rows[split]] == s).sum()) for s in store.source_names}
        table.append({"partition": p, "images": int(len(rows[split])), **counts})
    return table
