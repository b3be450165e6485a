"""train.freeze and train.layer-decay: which parameters train, at which learning rate."""

from __future__ import annotations

import pytest
import torch

from dfflab.config import ConfigError, load_config
from dfflab.models import build_detector
from dfflab.models.optim import layer_groups, optimizer_groups


def _model_and_groups(*overrides):
    cfg = load_config("tiny", list(overrides))
    model = build_detector(cfg.model)
    return model, optimizer_groups(model, cfg.train), cfg.train


def _step(model, groups, lr):
    opt = torch.optim.AdamW(groups, lr=lr)
    model.train()
    loss = model(torch.rand(8, 3, 32, 32)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_default_is_one_group_of_every_parameter():
    """freeze=none, no decay: the optimizer the trainers built before (all parameters, lr)."""
    model, groups, t = _model_and_groups()
    assert len(groups) == 1 and groups[0]["lr"] == t.lr
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}


def test_freeze_backbone_trains_only_the_head_and_keeps_bn_statistics():
    model, groups, t = _model_and_groups("train.freeze=backbone", "model.head=mlp")
    params = [p for g in groups for p in g["params"]]
    assert {id(p) for p in params} == {id(p) for p in model.head.parameters()}
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = [p.clone() for p in model.head.parameters()]
    _step(model, groups, t.lr)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen weight or BN statistic moved"
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.head.parameters(), strict=True))


def test_partial_freezes_the_lower_half_of_the_blocks():
    model, groups, t = _model_and_groups("train.freeze=partial")
    blocks = layer_groups(model.backbone)
    half = len(blocks) // 2
    assert all(not p.requires_grad for g in blocks[:half] for p in g)
    assert all(p.requires_grad for g in blocks[half:] for p in g)
    trained = {id(p) for g in groups for p in g["params"]}
    assert trained == {id(p) for g in blocks[half:] for p in g} | {id(p) for p in model.head.parameters()}


def test_layer_decay_rises_from_stem_to_head_and_covers_every_parameter_once():
    model, groups, t = _model_and_groups("train.layer-decay=0.5")
    lrs = [g["lr"] for g in groups]
    n = len(layer_groups(model.backbone))
    assert lrs == sorted(lrs) and lrs[-1] == t.lr and lrs[0] == pytest.approx(t.lr * 0.5 ** n)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_scheduler_scales_every_group_alike():
    from dfflab.train.core import warmup_cosine

    model, groups, t = _model_and_groups("train.layer-decay=0.5")
    opt = torch.optim.AdamW(groups, lr=t.lr)
    sched = warmup_cosine(opt, 2, 10)
    for _ in range(4):
        opt.step()
        sched.step()
    ratios = [g["lr"] / g0["lr"] for g, g0 in zip(opt.param_groups, groups, strict=True)]
    assert max(ratios) == pytest.approx(min(ratios))


@pytest.mark.parametrize("arch", ["vit_b_16", "convnext_tiny", "efficientnet_b0", "resnet50"])
def test_layer_groups_of_torchvision_backbones_are_ordered_and_complete(arch):
    model = build_detector(load_config("tiny", [f"model.backbone={arch}"]).model)
    groups = layer_groups(model.backbone)
    assert len(groups) >= 6
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.backbone.parameters()}


@pytest.mark.parametrize("overrides, match", [
    (["train.freeze=everything"], "train.freeze"),
    (["train.layer-decay=0"], "train.layer-decay"),
    (["train.layer-decay=1.5"], "train.layer-decay"),
])
def test_bad_settings_are_config_errors(overrides, match):
    cfg = load_config("tiny", overrides)
    with pytest.raises(ConfigError, match=match):
        optimizer_groups(build_detector(cfg.model), cfg.train)
