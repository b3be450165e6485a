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


def test_checkpoint_round_trips(tmp_path):
    from dfflab.models import init_backbone, load_detector, save_backbone, save_detector

    cfg = load_config("tiny")
    det = build_detector(cfg.model)
    save_detector(tmp_path / "d.pt", det, cfg.model, 32, threshold=0.3, source_names=["wiki", "a"])
    back, info = load_detector(tmp_path / "d.pt")
    x = torch.rand(2, 3, 32, 32)
    det.eval()
    assert torch.allclose(back(x), det(x)) and info["threshold"] == 0.3
    run = tmp_path / "sslrun"
    run.mkdir()
    save_backbone(run / "backbone.pt", det.backbone, cfg.model, 32, method="simclr")
    fresh = build_detector(cfg.model)
    assert init_backbone(fresh, str(run), cfg.model).endswith("backbone.pt")
    fresh.eval()
    assert torch.allclose(fresh.backbone(x), det.backbone(x))
    assert init_backbone(fresh, "scratch") is None
    with pytest.raises(ValueError, match="does not match"):
        init_backbone(fresh, str(run), load_config("quick").model)
    with pytest.raises(ValueError, match="not a detector"):
        load_detector(run / "backbone.pt")
