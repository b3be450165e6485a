"""The bundled ImageNet Inception as a backbone: frozen with a feature cache, and fine-tunable."""

from __future__ import annotations

import pytest
import torch

from dfflab.config import load_config
from dfflab.models import build_detector, load_detector
from dfflab.models.feature_cache import FeatureCache, image_keys
from dfflab.models.optim import optimizer_groups

SMALL = ["model.pretrained=imagenet", "model.input-size=80"]  # 80 px: the smallest side that runs fast


def test_feature_cache_computes_once_and_persists(tmp_path):
    calls = []

    def extractor(x):
        calls.append(len(x))
        return x.mean((2, 3)) * torch.tensor([1.0, 10.0, 100.0])

    x = torch.rand(5, 3, 8, 8)
    cache = FeatureCache(tmp_path, "toy")
    first = cache.features(x, extractor)
    again = cache.features(x, extractor)
    assert calls == [5] and torch.equal(first, again)
    # float16-rounded whether computed or read: a run sees the same numbers either way
    assert torch.equal(first, (x.mean((2, 3)) * torch.tensor([1.0, 10.0, 100.0])).half().float())
    cache.flush()
    fresh = FeatureCache(tmp_path, "toy")
    assert torch.equal(fresh.features(x, extractor), first) and calls == [5]
    fresh.features(x.flip(3), extractor)  # a flipped image is another image
    assert calls == [5, 5]


def test_image_keys_depend_on_values_not_memory_layout():
    u8 = torch.randint(0, 256, (3, 3, 6, 6), dtype=torch.uint8)
    x = u8.float() / 255
    assert image_keys(x) == image_keys(x.contiguous(memory_format=torch.channels_last))
    assert len(set(image_keys(x))) == 3
    assert image_keys(x)[0] != image_keys(x.flip(3))[0]
    assert image_keys(x)[0] != image_keys(x.double())[0]


def test_inception_frozen_trains_and_evaluates_with_the_faces_preset(store, synth_root, tmp_path):
    """--preset faces on tiny data: the cache fills in epoch 1 and serves epoch 2; the detector
    checkpoint holds only the head and rebuilds offline to the same scores."""
    from dfflab.detector.scoring import score_checkpoint
    from dfflab.detector.trainer import train_detector
    from dfflab.train.core import predict

    cache_dir = tmp_path / "cache"
    cfg = load_config("faces", [f"data.root={synth_root}", f"data.store={store.path}", "data.image-size=32",
                                f"results={tmp_path / 'res'}", f"model.feature-cache={cache_dir}",
                                "model.input-size=80", "model.head-hidden=16", "train.epochs=2",
                                "train.batch-size=16", "train.audit=false", "train.threads=2"])
    run = train_detector(cfg, name="faces-tiny", store=store, progress=False)
    s = run.summary()
    assert 0 <= s["test"]["auroc"] <= 1 and s["epochs_run"] == 2
    assert list(cache_dir.rglob("*.npz")), "no features were cached"
    ckpt = torch.load(run.path("detector.pt"), weights_only=True)
    assert all(k.startswith(("head.", "dropout.")) for k in ckpt["model"]), "frozen Inception weights were saved"
    rows = store.select("test")
    model, _ = load_detector(run.path("detector.pt"))
    pred = predict(model, store.batches(rows, 64), torch.device("cpu"))
    cache = model.backbone.cache
    assert cache.misses == 0 and cache.hits == len(rows), "test features were not read from the cache"
    scored = score_checkpoint(run.path("detector.pt"), store, rows, "cpu")
    overall, again = scored.overall, scored.pred
    assert torch.allclose(pred.logits, again.logits)
    assert overall["auroc"] == pytest.approx(s["test"]["auroc"])


def test_inception_fine_tunes_weights_but_not_its_bn_statistics():
    cfg = load_config("tiny", ["model.backbone=inception", *SMALL, "train.layer-decay=0.8", "train.freeze=partial"])
    model = build_detector(cfg.model)
    groups = optimizer_groups(model, cfg.train)
    assert len(groups) >= 3 and groups[-1]["lr"] == cfg.train.lr
    net = model.backbone.net
    top, stem = net.layers[-1], net.layers[0]
    before = {n: p.clone() for n, p in top.named_parameters()}
    stem_w = stem.weight.clone()
    opt = torch.optim.AdamW(groups, lr=cfg.train.lr)
    model.train()
    loss = model(torch.rand(4, 3, 32, 32)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = {n for n, p in top.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.endswith("weight") for n in moved)
    assert not any(n.endswith(("mean", "var")) for n in moved)
    assert torch.equal(stem.weight, stem_w)  # the stem is in the frozen lower half
