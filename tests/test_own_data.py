"""A user's own folder: real/ + fake/<name>/, optional groups.csv, read-only dataset, no --set needed."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from dfflab.cli import main
from dfflab.config import load_config
from dfflab.data.prepare import prepare
from dfflab.data.reader import DataError
from dfflab.data.store import Store


def jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def own_folder(root, people: int = 12, photos: int = 3, fake_name: str = "faceswap"):
    """Each person in several photos (alice_0.jpg, alice_1.jpg ...), one fake per photo."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(people):
        face = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        for k in range(photos):
            name = f"p{i:02d}_{k}.jpg"
            real = np.clip(face.repeat(10, 0).repeat(10, 1) + rng.integers(-8, 8, (40, 40, 3)), 0, 255)
            fake = real.copy()
            fake[::2, ::2] = 255 - fake[::2, ::2]  # a blatant, learnable artifact
            for sub, img in (("real", real), (f"fake/{fake_name}", fake)):
                p = root / sub / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(jpeg(img.astype(np.uint8)))
            rows += [(f"real/{name}", f"person{i}"), (f"fake/{fake_name}/{name}", f"person{i}")]
    return root, rows


def write_groups(path, rows, header=("path", "group")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_a_group_never_spans_two_splits(tmp_path):
    root, rows = own_folder(tmp_path / "mine", people=20)
    write_groups(root / "groups.csv", rows[::2])  # the reals alone name each group: their fakes follow by path
    store = Store(prepare(root, tmp_path / "s", 16, workers=1, progress=False))
    person = {r.split("/")[-1]: g for r, g in rows}
    split_of: dict[str, set] = {}
    for rel, sp in zip(store.relpaths, store.split, strict=True):
        split_of.setdefault(person[rel], set()).add(sp)
    assert all(len(s) == 1 for s in split_of.values()) and len(split_of) == 20
    assert {sp for s in split_of.values() for sp in s} == {"train", "val", "test"}
    with open(store.path / "index.csv", newline="") as f:
        assert {"relpath", "source", "split"} <= set(csv.DictReader(f).fieldnames)
    assert store.meta["links"]["groups"] == 20 and store.meta["splits"]["components"] == 20


@pytest.mark.parametrize("body, error", [
    ("file,person\nreal/p00_0.jpg,a\n", "expected a CSV with columns path,group"),
    ("path,group\nelsewhere/p00_0.jpg,a\n", r"groups.csv:2: path 'elsewhere/p00_0.jpg' is not under real/"),
    ("path,group\nreal/p00_0.jpg,a\nfake/faceswap/p00_0.jpg,b\n", r"groups.csv:3: .* same relative path"),
])
def test_bad_groups_file_fails_naming_file_and_line(tmp_path, body, error):
    root, _ = own_folder(tmp_path / "mine", people=2)
    (root / "groups.csv").write_text(body)
    with pytest.raises(DataError, match=error):
        prepare(root, tmp_path / "s", 16, workers=1, progress=False)


def test_own_folder_trains_with_no_source_settings_and_leaves_the_dataset_alone(tmp_path, capsys):
    root, _ = own_folder(tmp_path / "mine", people=16, fake_name="myfakes")
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    results = tmp_path / "results"
    args = ["--preset", "tiny", "--set", f"data.root={root}", "--set", f"results={results}", "--set", "train.threads=1"]
    assert main(["centralized", "train", *args]) == 0
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before  # nothing written there
    cfg = load_config("tiny", [f"data.root={root}", f"results={results}"])
    assert cfg.train.train_sources == [] and cfg.store_dir == results / "data" / "mine-store-32"
    store = Store(cfg.store_dir)
    assert store.fake_sources == ["myfakes"] and store.resolve_sources([]) == ["myfakes"]
    summary = __import__("json").loads(next(results.glob("runs/*/summary.json")).read_text())
    assert summary["train_sources"] == summary["test_sources"] == ["myfakes"]
    assert 0 <= summary["test"]["auroc"] <= 1
