from collections import Counter

import pytest

from dfflab.data.splits import assign_splits, components, plan_splits, read_splits, write_splits


def groups(n):
    out = []
    for i in range(n):
        rel = f"{i % 100:02d}/{i}_1980-01-01_2010.jpg"
        out += [(rel, s) for s in ("wiki", "inpainting", "insight", "text2img")]
    return out


def test_splits_are_grouped_stratified_and_deterministic():
    g = groups(200) + [("99/extra.jpg", "wiki")]  # a group with only a real: its own stratum
    a = assign_splits(g, 0.15, 0.15, seed=0)
    assert a == assign_splits(list(reversed(g)), 0.15, 0.15, seed=0)  # order-independent
    assert a != assign_splits(g, 0.15, 0.15, seed=1)
    assert set(a) == {rel for rel, _ in g}  # every group assigned exactly once (dict keys)
    counts = Counter(a[rel] for rel, s in g if s == "wiki" and rel != "99/extra.jpg")
    assert counts == {"train": 140, "val": 30, "test": 30}


def test_adding_groups_moves_few_existing_ones():
    a = assign_splits(groups(200), seed=0)
    b = assign_splits(groups(210), seed=0)
    moved = sum(a[k] != b[k] for k in a)
    assert moved < 20


def test_bad_fractions_and_bad_files(tmp_path):
    with pytest.raises(ValueError):
        assign_splits(groups(4), 0.6, 0.5)
    p = tmp_path / "s.csv"
    write_splits(p, {"a": "train", "b": "test"})
    assert read_splits(p) == {"a": "train", "b": "test"}
    p.write_text("relpath,split\na,training\n")
    with pytest.raises(ValueError, match=r"s.csv:2"):
        read_splits(p)


def rel(i):
    return f"{i % 100:02d}/{i}_1980-01-01_2010.jpg"


def test_components_join_linked_paths():
    comp = components(["a", "b", "c", "d", "e"], [("b", "a"), ("c", "b"), ("d", "zz")])
    assert comp == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "e"}  # unknown paths ignored


def test_linked_paths_share_a_split_and_fractions_hold():
    g = groups(400)
    links = [(rel(i), rel(i + 1)) for i in range(0, 400, 2)]  # DFF's pairs: 200 components of two
    plan = plan_splits(g, 0.15, 0.15, seed=0, links=links)
    a = plan.splits
    assert all(a[x] == a[y] for x, y in links)
    counts = Counter(a.values())
    assert abs(counts["test"] - 60) <= 2 and abs(counts["val"] - 60) <= 2 and plan.n_components == 200
    assert a != assign_splits(g, 0.15, 0.15, seed=1, links=links)
    # a component too large for val or test is kept whole in train, never cut
    chain = [(rel(i), rel(i + 1)) for i in range(100)]
    plan = plan_splits(g, 0.15, 0.15, seed=0, links=chain)
    assert {plan.splits[rel(i)] for i in range(101)} == {"train"} and plan.largest == 101
    assert len(plan.train_only) == 1 and Counter(plan.splits.values())["test"] >= 55


def test_synthdff_partners_never_cross_splits(synth_root):
    from dfflab.data.links import read_partners

    splits = read_splits(synth_root / "splits.csv")
    pairs = read_partners(synth_root / "partners.csv")
    assert len(pairs) == 24 and all(a != b for a, b in pairs)
    assert all(splits[a] == splits[b] for a, b in pairs)
    assert set(splits.values()) == {"train", "val", "test"}
