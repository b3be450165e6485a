"""The leak audit: partner-aware SynthDFF splits sit at the baseline, a path-only split does not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfflab.cli import main
from dfflab.data.leaks import cluster_share, leak_audit, store_embedding
from dfflab.data.links import read_partners
from dfflab.data.prepare import prepare
from dfflab.data.reader import list_entries
from dfflab.data.splits import assign_splits, plan_splits, write_splits
from dfflab.data.store import Store
from dfflab.data.synth import SynthSpec, synthesize

# 200 reals: with under ~100 the audit's intervals come out too narrow (3 false alarms in 40 seeds at 96)
SPEC = SynthSpec(n_real=200, seed=2, difficulty=1.0, fake_size=48, real_min=40, real_max=96)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("leaks") / "synthdff", SPEC, progress=False, workers=1)


def test_path_only_split_leaks_partner_aware_split_does_not(synth, tmp_path):
    entries = [(e.relpath, e.source) for e in list_entries(synth)]
    write_splits(synth / "splits.csv", assign_splits(entries, 0.2, 0.2, seed=0))  # ignores the partners
    leaky = Store(prepare(synth, tmp_path / "leaky", 32, workers=1, progress=False))
    report = leaky.meta["leaks"]
    assert report["leak_free"] is False and "WARNING: not leak-free" in report["message"]
    assert report["cross_split"]["near_duplicate_share"] > 0.2 > report["within_train"]["near_duplicate_share"]
    (synth / "splits.csv").unlink()  # now prepare splits by partner components itself
    clean = Store(prepare(synth, tmp_path / "clean", 32, workers=1, progress=False, val_frac=0.2, test_frac=0.2))
    assert clean.meta["leaks"]["leak_free"] is True, clean.meta["leaks"]["message"]
    full = json.loads((clean.path / "leaks.json").read_text())
    assert set(full["cross_split"]["per_source"]) == {"wiki", "inpainting", "insight", "text2img"}
    assert (clean.path / "leaks.png").is_file() and len(full["closest"]) == 16
    # over split seeds: path-only splits always leak; partner-aware ones sit at the baseline (no
    # false alarm in 40 seeds on this data; one of eight is allowed)
    emb, _ = store_embedding(clean.images)
    links = read_partners(synth / "partners.csv")
    verdicts = {"path": [], "partner": []}
    for seed in range(8):
        for kind, lk in (("path", []), ("partner", links)):
            sp = plan_splits(entries, 0.2, 0.2, seed, lk).splits
            split = np.array([sp[r] for r in clean.relpaths])
            verdicts[kind].append(leak_audit(emb, clean.labels, clean.sources, split, clean.groups)["leak_free"])
    assert verdicts["path"] == [False] * 8 and sum(verdicts["partner"]) >= 7, verdicts


def test_identical_copies_across_splits_are_caught():
    rng = np.random.default_rng(0)
    emb = 40 * rng.normal(size=(400, 32)).astype(np.float32)  # thumbnail-like scale: ~57 of 255 apart
    labels = np.tile([0, 1], 200)
    split = np.array(["train"] * 300 + ["test"] * 100)
    groups = np.arange(400).astype(str)
    clean = leak_audit(emb, labels, labels.astype(str), split, groups)
    assert clean["leak_free"] is True
    emb[300:] = emb[:100] + 1e-3  # every test image has a near-copy in train, with the other label
    labels[300:] = 1 - labels[:100]
    leak = leak_audit(emb, labels, labels.astype(str), split, groups)
    assert leak["leak_free"] is False and leak["cross_split"]["near_duplicate_share"] == 1.0
    assert leak["cross_split"]["label_agreement"] == 0.0 and leak["cross_split"]["copies"] == 100
    # a single copy across splits is a leak, however clean the statistics
    emb, labels = 40 * rng.normal(size=(400, 32)).astype(np.float32), np.tile([0, 1], 200)
    emb[350] = emb[10] + 0.5
    one = leak_audit(emb, labels, labels.astype(str), split, groups)
    assert one["cross_split"]["copies"] == 1 and one["leak_free"] is False and "1 val/test images have a copy" in \
        one["message"]
    assert leak_audit(emb, labels, labels.astype(str), split, groups, copy_distance=None)["leak_free"] is True


def test_clustered_shares_have_wider_intervals():
    hit = np.array([1, 0] * 50, bool)
    p, se_free = cluster_share(hit, np.arange(100))  # 100 independent images
    assert p == 0.5 and se_free == pytest.approx(np.sqrt(0.25 / 99), rel=1e-6)
    _, se_clustered = cluster_share(np.repeat(hit[:25], 4), np.repeat(np.arange(25), 4))  # 25 groups of 4 alike
    assert se_clustered > 1.9 * se_free
    assert np.isnan(cluster_share(hit, np.zeros(100))[1])  # one group: no error estimate


def test_data_cli_pairs_and_leaks(synth, tmp_path, capsys):
    st = tmp_path / "st"
    for f in ("splits.csv",):
        (synth / f).unlink(missing_ok=True)
    assert main(["data", "prepare", "--preset", "tiny", "--data", str(synth), "--out", str(st)]) == 0
    assert main(["data", "leaks", "--preset", "tiny", "--store", str(st), "--out", str(tmp_path / "l")]) == 0
    out = capsys.readouterr().out
    assert "near-dup val/test" in out and "leak audit:" in out and (tmp_path / "l" / "leaks.json").is_file()
    assert main(["data", "pairs", "--preset", "tiny", "--store", str(st), "--out", str(tmp_path / "p"),
                 "--truth", str(synth / "partners.csv")]) == 0
    out = capsys.readouterr().out
    assert "precision 1.0000 at the confident threshold" in out and (tmp_path / "p" / "pairs.csv").is_file()
    assert main(["data", "leaks", "--preset", "tiny", "--store", str(tmp_path / "nothing")]) == 1
    # an SSL backbone's features instead of thumbnails (here an untrained one: only the plumbing)
    from dfflab.config import ModelConfig
    from dfflab.models import save_backbone
    from dfflab.models.backbones import build_backbone

    mcfg = ModelConfig(backbone="resnet-narrow", width=4)
    ckpt = save_backbone(tmp_path / "backbone.pt", build_backbone(mcfg.backbone, mcfg.width), mcfg, 32)
    assert main(["data", "leaks", "--preset", "tiny", "--store", str(st), "--out", str(tmp_path / "f"),
                 "--features", str(ckpt)]) == 0
    r = json.loads((tmp_path / "f" / "leaks.json").read_text())
    assert r["embedding"].startswith("resnet-narrow features") and "copies" not in r["cross_split"]
