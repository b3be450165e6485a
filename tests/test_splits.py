from collections import Counter

import pytest

from dfflab.data.splits import assign_splits, read_splits, write_splits


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
