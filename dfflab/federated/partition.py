"""Client partitions of the store's train + val rows, with flwr-datasets partitioners.

The index of the store (columns ``row, relpath, source, label, split``) becomes a
``datasets.Dataset``; a partitioner splits it into N client shares and each client's
share is then cut into its local train and val rows by the ``split`` column, so a
client's validation data is distributed like its training data.

``fl.partitioning``:

* ``source`` (:class:`SourcePartitioner`, flwr-datasets has none that fits): client
  ``p`` holds the fakes of one generator (``p // (N / K)`` for K fake sources) and a
  disjoint share of the reals, each real on the client that holds its own fake of
  that generator (the real and its fakes share a relative path). With N > K each
  generator's fakes are split by relative path over N / K clients.
* ``iid``: a seeded shuffle, then flwr-datasets' ``IidPartitioner``.
* ``dirichlet``: flwr-datasets' ``DirichletPartitioner`` over the ``source`` column
  (reals are one more class) with concentration ``fl.alpha``.

Plot the partition of the quick preset (``partition.png``)::

    dfflab federated partition-plot --preset quick --set fl.partitioning=dirichlet
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from dfflab.config import ConfigError
from dfflab.data.layout import source_order
from dfflab.federated.config import PARTITIONINGS

SPLITS = ("train", "val")


class SourcePartitioner(Partitioner):
    """One fake source per client, reals shared out with their own fakes.

    Args:
        num_partitions: N, a multiple of the number K of fake sources in the dataset.
        partition_by: column naming each row's source.
        group_by: column of the group key (a real and its fakes share it).
        label_by: column of the 0 (real) / 1 (fake) label.
        seed: seed of the shuffle that deals groups to clients.
    """

    def __init__(self, num_partitions: int, partition_by: str = "source", group_by: str = "relpath",
                 label_by: str = "label", seed: int = 0) -> None:
        super().__init__()
        if num_partitions <= 0:
            raise ValueError("The number of partitions must be greater than zero.")
        self._num_partitions = num_partitions
        self._partition_by, self._group_by, self._label_by = partition_by, group_by, label_by
        self._seed = seed
        self._partition_id_to_indices: dict[int, np.ndarray] | None = None
        self.fake_sources: list[str] = []

    @property
    def num_partitions(self) -> int:
        return self._num_partitions

    def load_partition(self, partition_id: int) -> Dataset:
        """The rows of client ``partition_id``."""
        if not 0 <= partition_id < self._num_partitions:
            raise ValueError(f"partition_id {partition_id} is not in [0, {self._num_partitions})")
        return self.dataset.select(self.partition_indices()[partition_id])

    def partition_indices(self) -> dict[int, np.ndarray]:
        """``{partition_id: dataset row indices}``, computed once."""
        if self._partition_id_to_indices is None:
            self._partition_id_to_indices = self._assign()
        return self._partition_id_to_indices

    def _assign(self) -> dict[int, np.ndarray]:
        sources = np.asarray(self.dataset[self._partition_by])
        groups = np.asarray(self.dataset[self._group_by])
        fake = np.asarray(self.dataset[self._label_by]) == 1
        self.fake_sources = source_order(set(sources[fake].tolist()))
        k = len(self.fake_sources)
        if k == 0 or self._num_partitions % k:
            raise ValueError(f"source partitioning needs N to be a multiple of the {k} fake sources "
                             f"({', '.join(self.fake_sources)}); got N={self._num_partitions}")
        m = self._num_partitions // k  # clients per fake source
        # Deal shuffled groups round-robin: group i's real goes to generator i % k,
        # and all of group i's rows to that generator's sub-client (i // k) % m.
        unique = np.unique(groups)
        order = np.random.default_rng(self._seed).permutation(len(unique))
        pos = np.empty(len(unique), dtype=np.int64)
        pos[order] = np.arange(len(unique))
        gi = np.searchsorted(unique, groups)  # group index of each row
        slot = (pos[gi] // k) % m
        lookup = {s: i for i, s in enumerate(self.fake_sources)}
        source_idx = np.array([lookup.get(s, -1) for s in sources.tolist()])
        owner = np.where(fake, source_idx, pos[gi] % k)  # fakes: their generator; reals: dealt
        client = owner * m + slot
        return {p: np.flatnonzero(client == p) for p in range(self._num_partitions)}


class SplitView(Partitioner):
    """The rows of one split (``train`` or ``val``) of another partitioner's partitions.

    Lets flwr-datasets' plotting helpers show a client's training data alone.
    """

    def __init__(self, base: Partitioner, split: str) -> None:
        super().__init__()
        self._base, self._split = base, split
        self.dataset = base.dataset

    @property
    def num_partitions(self) -> int:
        return self._base.num_partitions

    def load_partition(self, partition_id: int) -> Dataset:
        part = self._base.load_partition(partition_id)
        keep = np.flatnonzero(np.asarray(part["split"]) == self._split)
        return part.select(keep)


def index_dataset(store, sources: list[str]) -> Dataset:
    """The store's train + val rows (reals and the named fake sources) as a Dataset."""
    rows = np.concatenate([store.select(split, sources) for split in SPLITS])
    return Dataset.from_dict({
        "row": rows, "relpath": store.relpaths[rows].tolist(), "source": store.sources[rows].tolist(),
        "label": store.labels[rows], "split": store.split[rows].tolist(),
    })


def make_partitioner(store, cfg, num_partitions: int | None = None) -> Partitioner:
    """The partitioner ``cfg.fl`` names, with the store's index assigned to it.

    Raises:
        ConfigError: unknown ``fl.partitioning`` or an N it can't serve.
    """
    fl = cfg.fl
    n = num_partitions or fl.num_partitions
    if n < 1:
        raise ConfigError(f"fl.num-partitions must be at least 1, got {n}")
    if fl.partitioning not in PARTITIONINGS:
        raise ConfigError(f"fl.partitioning: unknown '{fl.partitioning}' (known: {', '.join(PARTITIONINGS)})")
    ds = index_dataset(store, list(cfg.train.train_sources))
    if fl.partitioning == "source":
        part: Partitioner = SourcePartitioner(n, seed=fl.partition_seed)
    elif fl.partitioning == "iid":
        ds = ds.shuffle(seed=fl.partition_seed)  # IidPartitioner cuts contiguous shards
        part = IidPartitioner(n)
    else:  # dirichlet
        part = DirichletPartitioner(n, partition_by="source", alpha=fl.alpha,
                                    min_partition_size=fl.min_partition_size, seed=fl.partition_seed)
    part.dataset = ds
    if fl.partitioning == "source":
        try:
            part.partition_indices()
        except ValueError as e:
            raise ConfigError(f"fl.num-partitions: {e}") from None
    return part


_CACHE: dict[tuple, dict[int, dict[str, np.ndarray]]] = {}


def client_rows(store, cfg, partition_id: int, num_partitions: int | None = None) -> dict[str, np.ndarray]:
    """Store rows of one client: ``{"train": rows, "val": rows}``.

    Cached per process (a simulated client's actor serves many rounds).
    """
    n = num_partitions or cfg.fl.num_partitions
    fl = cfg.fl
    key = (str(store.path), store.fingerprint, fl.partitioning, n, fl.alpha, fl.min_partition_size,
           fl.partition_seed, tuple(cfg.train.train_sources))
    if key not in _CACHE:
        _CACHE[key] = all_client_rows(make_partitioner(store, cfg, n))
    return _CACHE[key][partition_id]


def all_client_rows(part: Partitioner) -> dict[int, dict[str, np.ndarray]]:
    """``{partition_id: {"train": store rows, "val": store rows}}`` for every client."""
    out = {}
    for p in range(part.num_partitions):
        d = part.load_partition(p)
        rows, split = np.asarray(d["row"], dtype=np.int64), np.asarray(d["split"])
        out[p] = {s: np.sort(rows[split == s]) for s in SPLITS}
    return out


def plot_partition(part: Partitioner, path: Path | str, title: str = "") -> Path:
    """Bar chart of training images per client and source (flwr-datasets' helper)."""
    from flwr_datasets.visualization import plot_label_distributions

    from dfflab.files import pyplot, save_figure

    pyplot()  # the Agg backend before flwr-datasets draws

    fig, ax, _ = plot_label_distributions(
        SplitView(part, "train"), label_name="source", plot_type="bar", size_unit="absolute",
        legend=True, legend_title="source", verbose_labels=False,
        legend_kwargs={"loc": "center left", "bbox_to_anchor": (1.0, 0.5)},
        title=title or "Training images per client and source",
        figsize=(max(5.0, 1.0 + 0.6 * part.num_partitions), 4.0))
    ax.set_xlabel("client (partition id)")
    ax.set_ylabel("images")
    return save_figure(fig, path, dpi=120, bbox_inches="tight")  # the legend sits outside the axes
