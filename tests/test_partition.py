"""Client partitions: disjoint, complete, reals with their own fakes, composition as specified."""

import numpy as np
import pytest

from dfflab.config import ConfigError, load_config
from dfflab.federated.partition import (
    SourcePartitioner,
    all_client_rows,
    client_rows,
    index_dataset,
    make_partitioner,
    plot_partition,
)
from dfflab.federated.shares import composition


def cfg_for(store, **fl):
    overrides = [f"data.store={store.path}", "fl.min-partition-size=2"]
    overrides += [f"fl.{k.replace('_', '-')}={v}" for k, v in fl.items()]
    return load_config("tiny", overrides)


def partition(store, **fl):
    cfg = cfg_for(store, **fl)
    return cfg, all_client_rows(make_partitioner(store, cfg))


def expected_rows(store, cfg) -> np.ndarray:
    sources = cfg.train.train_sources
    return np.sort(np.concatenate([store.select(s, sources) for s in ("train", "val")]))


def check_disjoint_and_complete(store, cfg, parts):
    every = np.concatenate([r[s] for r in parts.values() for s in ("train", "val")])
    assert len(every) == len(set(every.tolist())), "a row is on two clients"
    np.testing.assert_array_equal(np.sort(every), expected_rows(store, cfg))
    for rows in parts.values():  # local splits come from the global split
        for split in ("train", "val"):
            assert (store.split[rows[split]] == split).all()


@pytest.mark.parametrize("n", [3, 6])
def test_source_partition_one_generator_per_client_reals_with_their_fakes(store, n):
    cfg, parts = partition(store, partitioning="source", num_partitions=n)
    check_disjoint_and_complete(store, cfg, parts)
    fakes = store.fake_sources
    m = n // len(fakes)  # clients per generator
    for p, rows in parts.items():
        mine = np.concatenate([rows["train"], rows["val"]])
        fake_rows = mine[store.labels[mine] == 1]
        assert set(store.sources[fake_rows]) == {fakes[p // m]}  # one generator, client p // m's
        real_groups = set(store.relpaths[mine[store.labels[mine] == 0]])
        fake_groups = set(store.relpaths[fake_rows])
        assert real_groups <= fake_groups, "a real photo sits apart from its own fake"
        assert real_groups, "every client gets reals"
    for k, src in enumerate(fakes):  # a generator's fakes all go to its m clients, split by group
        clients = range(k * m, (k + 1) * m)
        got = np.concatenate([np.concatenate([parts[p]["train"], parts[p]["val"]]) for p in clients])
        all_src = expected_rows(store, cfg)
        assert set(got[store.sources[got] == src]) == set(all_src[store.sources[all_src] == src])
        sizes = [len(parts[p]["train"]) for p in clients]
        assert max(sizes) - min(sizes) <= 0.5 * max(sizes)
    table = composition(store, parts)
    assert [row["partition"] for row in table] == list(range(n))
    assert sum(row["images"] for row in table) == sum(len(r["train"]) for r in parts.values())


def test_source_partition_needs_a_multiple_of_the_generators(store):
    with pytest.raises(ConfigError, match="multiple of the 3 fake sources"):
        make_partitioner(store, cfg_for(store, partitioning="source", num_partitions=4))


def test_source_partitioner_in_flwr_datasets_style(store):
    part = SourcePartitioner(3, seed=1)
    part.dataset = index_dataset(store, store.fake_sources)
    sizes = [part.load_partition(p).num_rows for p in range(part.num_partitions)]
    assert sum(sizes) == part.dataset.num_rows
    with pytest.raises(ValueError):
        part.load_partition(3)
    other = SourcePartitioner(3, seed=2)
    other.dataset = index_dataset(store, store.fake_sources)
    assert part.load_partition(0)["row"] != other.load_partition(0)["row"]  # the seed deals reals


def test_iid_partition_is_balanced_and_mixed(store):
    cfg, parts = partition(store, partitioning="iid", num_partitions=3)
    check_disjoint_and_complete(store, cfg, parts)
    total = [len(r["train"]) + len(r["val"]) for r in parts.values()]
    assert max(total) - min(total) <= 1
    for row in composition(store, parts):
        assert sum(row[s] > 0 for s in store.source_names) >= 3  # not one source per client


def test_dirichlet_over_sources_skews_with_small_alpha(store):
    def skew(parts):
        props = []
        for row in composition(store, parts):
            counts = np.array([row[s] for s in store.source_names], dtype=float)
            props.append(counts / counts.sum())
        return float(np.abs(np.array(props) - np.mean(props, axis=0)).max())

    cfg, skewed = partition(store, partitioning="dirichlet", num_partitions=3, alpha=0.1)
    check_disjoint_and_complete(store, cfg, skewed)
    _, even = partition(store, partitioning="dirichlet", num_partitions=3, alpha=100.0)
    assert skew(skewed) > skew(even)
    _, again = partition(store, partitioning="dirichlet", num_partitions=3, alpha=0.1)
    for p in skewed:  # seeded
        np.testing.assert_array_equal(skewed[p]["train"], again[p]["train"])


def test_unknown_partitioning_names_the_setting(store):
    with pytest.raises(ConfigError, match="fl.partitioning"):
        make_partitioner(store, cfg_for(store, partitioning="by-age"))


def test_client_rows_cached_and_plot(store, tmp_path):
    cfg = cfg_for(store, partitioning="source", num_partitions=3)
    rows = client_rows(store, cfg, 1, 3)
    assert client_rows(store, cfg, 1, 3) is rows
    png = plot_partition(make_partitioner(store, cfg), tmp_path / "p.png")
    assert png.stat().st_size > 1000


def test_shares_file_holds_the_partition_and_is_read_only_for_its_own_settings(store, tmp_path, monkeypatch):
    from dfflab.federated import shares

    cfg, parts = partition(store, partitioning="dirichlet", num_partitions=3, alpha=0.3)
    got = shares.prepare(tmp_path, store, cfg)
    assert (tmp_path / shares.FILE).is_file() and (tmp_path / "partition.png").is_file()
    shares._READ.clear()  # what a fresh client process sees: the file alone
    back = shares.read(tmp_path / shares.FILE, store, cfg)
    for p in parts:
        for split in ("train", "val"):
            np.testing.assert_array_equal(got[p][split], parts[p][split])
            np.testing.assert_array_equal(back[p][split], parts[p][split])
    other = cfg_for(store, partitioning="dirichlet", num_partitions=3, alpha=0.9)
    assert shares.read(tmp_path / shares.FILE, store, other) is None  # made for other settings
    # a client that can't use the file partitions itself, and gets the same rows
    from dfflab.federated import partition as partition_module

    calls = []
    monkeypatch.setattr(partition_module, "client_rows", lambda *a, **k: calls.append(a) or parts[a[2]])
    np.testing.assert_array_equal(shares.client(tmp_path / shares.FILE, store, cfg, 1)["train"], parts[1]["train"])
    assert calls == []  # read from the file
    shares.client(tmp_path / "missing.npz", store, other, 1)
    assert len(calls) == 1
