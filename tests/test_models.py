import pytest
import torch

from dfflab.config import load_config
from dfflab.models import BACKBONES, build_backbone, build_detector, load_backbone_weights


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbones_give_features(name):
    net = build_backbone(name, 8)
    net.eval()
    with torch.no_grad():
        f = net(torch.rand(2, 3, 32, 32))
    assert f.shape == (2, net.out_dim)


def test_detector_logits_and_backbone_loading():
    cfg = load_config("tiny")
    det = build_detector(cfg.model)
    assert det(torch.rand(4, 3, 32, 32)).shape == (4,)
    other = build_detector(cfg.model)
    load_backbone_weights(other, det.backbone.state_dict())
    for a, b in zip(det.backbone.state_dict().values(), other.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    wrong = build_backbone("resnet-narrow", 16).state_dict()
    with pytest.raises(ValueError, match="ckpt.pt"):
        load_backbone_weights(other, wrong, "ckpt.pt")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg", 8)
