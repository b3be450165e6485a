from importlib.util import find_spec

import pytest
import torch
from torch import nn

from dfflab.config import load_config
from dfflab.models import BACKBONES, build_backbone, build_detector, load_backbone_weights


# CLIP towers need open_clip (.[clip]); ViT-L/14 is covered (marked slow) in test_pretrained
@pytest.mark.parametrize("name", [n for n in BACKBONES if n != "clip-vit-l-14"
                                  and (not n.startswith("clip-") or find_spec("open_clip"))])
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


def test_prepare_model_swaps_strided_pointwise_convs_for_an_exact_equivalent():
    """Same outputs, gradients and state-dict keys as nn.Conv2d (see SubsampledPointwiseConv)."""
    import copy

    from dfflab.device import SubsampledPointwiseConv, prepare_model

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, stride=2, bias=False), torch.nn.Conv2d(16, 4, 3))
    fixed = prepare_model(copy.deepcopy(ref), torch.device("cpu"))
    assert type(fixed[0]) is SubsampledPointwiseConv and type(fixed[1]) is torch.nn.Conv2d
    assert fixed.state_dict().keys() == ref.state_dict().keys()
    x = torch.rand(17, 8, 16, 16)
    ref(x).square().sum().backward()
    fixed(x.contiguous(memory_format=torch.channels_last)).square().sum().backward()
    assert torch.allclose(fixed[0].weight.grad, ref[0].weight.grad, atol=1e-4)
    assert torch.allclose(fixed(x), ref(x), atol=1e-5)


def test_odd_batches_train_with_two_threads():
    """torch 2.14.1 on CPU corrupted the heap here before prepare_model's swap (run apart: it crashes)."""
    import subprocess
    import sys

    code = ("import torch\nfrom dfflab.config import load_config\nfrom dfflab.models import build_detector\n"
            "from dfflab.device import prepare_model\ntorch.set_num_threads(2)\n"
            "m = prepare_model(build_detector(load_config('tiny').model), torch.device('cpu'))\n"
            "for bs in (17, 33, 3):\n"
            "    m(torch.rand(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()\n"
            "print('trained')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "trained" in out.stdout, out.stderr[-2000:]


def test_basic_block_is_torchvisions():
    """The local BasicBlock (no torchvision import in Flower clients) is torchvision's, weight for weight."""
    from torchvision.models.resnet import BasicBlock as TorchvisionBlock

    from dfflab.models.backbones import BasicBlock

    for stride, c_out in ((1, 8), (2, 16)):
        blocks = []
        for cls in (TorchvisionBlock, BasicBlock):
            torch.manual_seed(0)
            down = nn.Sequential(nn.Conv2d(8, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)) if stride > 1 else None
            blocks.append(cls(8, c_out, stride, down))
        a, b = (blk.state_dict() for blk in blocks)
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        x = torch.randn(3, 8, 8, 8)
        assert torch.allclose(blocks[0](x), blocks[1](x))
