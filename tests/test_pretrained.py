"""Pretrained backbones: every architecture with a replaced weight loader, the offline errors,
the input adapter, and the full preset's pretrained choice. Nothing downloads here."""

from __future__ import annotations

import importlib.util
import urllib.error

import pytest
import torch

from dfflab.config import ConfigError, load_config
from dfflab.models import build_detector
from dfflab.models import pretrained as P
from dfflab.models.pretrained import SPECS, WeightsUnavailable

HAS_CLIP = importlib.util.find_spec("open_clip") is not None
TORCHVISION = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16"]
_NO_CLIP = pytest.mark.skipif(not HAS_CLIP, reason="open_clip not installed (.[clip])")
# ViT-L/14: 300M parameters, ~80 GFLOPs a forward pass; the slowest test here by far
CLIP = [pytest.param("clip-vit-b-32", marks=_NO_CLIP),
        pytest.param("clip-vit-l-14", marks=[_NO_CLIP, pytest.mark.slow])]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch cache and a network that refuses every download."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def refuse(url, *a, **k):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(P, "_reachable", lambda *a, **k: False)
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture
def fake_loader(monkeypatch):
    """Replace the weight loader: a fresh network's weights with one tensor set to 0.125."""
    calls = []

    def fetch(arch, pretrained):
        net = P.ClipVisual(arch) if pretrained == "clip" else P.torchvision_features(arch)
        state = net.state_dict()
        key = next(k for k, v in state.items() if v.dtype.is_floating_point and v.ndim > 1)
        state[key] = torch.full_like(state[key], 0.125)
        calls.append((arch, pretrained, key))
        return state

    monkeypatch.setattr(P, "fetch_state_dict", fetch)
    return calls


@pytest.mark.parametrize("arch", TORCHVISION + CLIP)
def test_every_architecture_loads_weights_and_runs_at_its_resolution(arch, fake_loader):
    spec = SPECS[arch]
    cfg = load_config("tiny", [f"model.backbone={arch}", f"model.pretrained={spec.weights}"])
    model = build_detector(cfg.model).eval()
    (_, _, key), = fake_loader
    assert torch.all(model.backbone.net.state_dict()[key] == 0.125), "the loaded weights are not the loader's"
    seen = []
    model.backbone.net.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    x = torch.rand(1, 3, 32, 32)  # a 32 px store image in [0, 1]
    with torch.no_grad():
        logit = model(x)
    assert logit.shape == (1,) and torch.isfinite(logit).all()
    inp = seen[0]
    assert inp.shape[-2:] == (spec.size, spec.size)
    # normalised with the network's own statistics: a mid-grey image maps to (0.5 - mean) / std
    with torch.no_grad():
        grey = model.backbone.adapt(torch.full((1, 3, 8, 8), 0.5))
    want = (0.5 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    assert torch.allclose(grey[0, :, 0, 0], want, atol=1e-5)


def test_scratch_backbones_keep_their_state_dict_keys():
    """No adapter for a scratch backbone at the store's size: old checkpoints still load."""
    for name in ("resnet-narrow", "resnet18", "resnet50"):
        bb = build_detector(load_config("tiny", [f"model.backbone={name}"]).model).backbone
        assert not isinstance(bb, P.InputAdapter)
    bb = build_detector(load_config("tiny", ["model.input-size=48"]).model).backbone
    assert isinstance(bb, P.InputAdapter) and bb.size == 48


def test_imagenet_offline_is_a_one_line_error_naming_file_and_folder(offline, store, synth_root, tmp_path, capsys):
    from dfflab.cli import main

    rc = main(["centralized", "train", "--preset", "tiny", "--set", f"data.root={synth_root}",
               "--set", f"data.store={store.path}", "--set", f"results={tmp_path / 'res'}",
               "--set", "model.backbone=resnet50", "--set", "model.pretrained=imagenet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert "Traceback" not in "\n".join(err)
    line = err[-1]
    name, folder, _ = P.weight_file("resnet50")
    assert line.startswith("dfflab: config error: model.pretrained=imagenet")
    assert name in line and str(folder) == str(offline) and str(offline) in line


def test_full_preset_names_imagenet_weights_and_fails_clearly_offline(offline):
    cfg = load_config("full")
    assert cfg.model.pretrained == "imagenet" and cfg.model.backbone in SPECS
    with pytest.raises(WeightsUnavailable, match=P.weight_file(cfg.model.backbone)[0]):
        build_detector(cfg.model)


def test_a_corrupt_cached_file_says_delete_it(offline):
    name, _, _ = P.weight_file("resnet18")
    offline.mkdir(parents=True)
    (offline / name).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="unreadable; delete it"):
        P.fetch_state_dict("resnet18", "imagenet")


def test_checkpoints_rebuild_without_fetching_weights(fake_loader, offline, tmp_path):
    """load_detector builds the architecture only: a saved pretrained detector loads offline."""
    from dfflab.models import load_detector, save_detector

    cfg = load_config("tiny", ["model.backbone=resnet18", "model.pretrained=imagenet", "model.input-size=64"])
    model = build_detector(cfg.model).eval()
    save_detector(tmp_path / "d.pt", model, cfg.model, 32)
    monkeypatch_calls = len(fake_loader)
    loaded, _ = load_detector(tmp_path / "d.pt")
    assert len(fake_loader) == monkeypatch_calls
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


@pytest.mark.skipif(not HAS_CLIP, reason="open_clip not installed (.[clip])")
def test_clip_offline_is_one_line(offline):
    with pytest.raises(WeightsUnavailable, match="open_clip_ViT-B-32_openai.bin") as e:
        P.fetch_state_dict("clip-vit-b-32", "clip")
    assert "\n" not in str(e.value) and str(offline) in str(e.value)


def test_clip_without_open_clip_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[clip\]"'):
        build_detector(load_config("tiny", ["model.backbone=clip-vit-b-32", "model.pretrained=clip"]).model)


@pytest.mark.parametrize("overrides, match", [
    (["model.pretrained=imagenet"], "no such weights for backbone 'resnet-narrow'"),
    (["model.backbone=resnet50", "model.pretrained=clip"], "no such weights"),
    (["model.pretrained=instagram"], "unknown 'instagram'"),
    (["model.backbone=vit_b_16", "model.input-size=128"], "runs only at 224"),
    (["model.backbone=inception"], "set model.pretrained=imagenet"),
    (["model.head=transformer"], "model.head"),
])
def test_bad_combinations_fail_before_building(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_detector(load_config("tiny", overrides).model)


def test_ssl_backbone_with_other_pretrained_setting_is_refused(tmp_path):
    from dfflab.models import init_backbone, save_backbone

    made = load_config("tiny", ["model.input-size=48"]).model
    save_backbone(tmp_path / "b.pt", build_detector(made).backbone, made, 32)
    other = load_config("tiny").model
    with pytest.raises(ValueError, match="model.input-size=48"):
        init_backbone(build_detector(other), str(tmp_path / "b.pt"), other)
    init_backbone(build_detector(made), str(tmp_path / "b.pt"), made)  # the same settings load


def test_ssl_pretrain_init_imagenet_reaches_the_weight_loader(offline, store, synth_root, tmp_path, capsys):
    from dfflab.cli import main

    base = ["--preset", "tiny", "--set", f"data.root={synth_root}", "--set", f"data.store={store.path}",
            "--set", f"results={tmp_path / 'res'}", "--set", "model.backbone=resnet18", "--set", "model.input-size=32"]
    rc = main(["ssl", "pretrain", "--init", "imagenet", *base])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)
    assert P.weight_file("resnet18")[0] in err[-1]


def test_ssl_from_imagenet_weights_then_fine_tune(fake_loader, store, synth_root, tmp_path):
    from dfflab.runs import load_checkpoint
    from dfflab.ssl.pretrain import pretrain

    cfg = load_config("tiny", [f"data.root={synth_root}", f"data.store={store.path}", f"results={tmp_path}",
                               "model.backbone=resnet18", "model.pretrained=imagenet", "model.input-size=32",
                               "ssl.epochs=1", "train.threads=2"])
    run = pretrain(cfg, store=store, progress=False)
    ckpt = load_checkpoint(run.path("backbone.pt"))
    assert ckpt["model_cfg"]["pretrained"] == "imagenet" and fake_loader[0][:2] == ("resnet18", "imagenet")
    model = build_detector(cfg.model)
    from dfflab.models import init_backbone

    assert init_backbone(model, str(run.dir), cfg.model)  # same settings: the SSL weights load
    key = next(iter(ckpt["backbone"]))
    assert torch.equal(model.backbone.state_dict()[key], ckpt["backbone"][key])
