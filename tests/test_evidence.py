"""Bootstrap intervals, paired comparisons and the words the report uses for them."""

import math

import numpy as np
import pytest
import torch

from dfflab.evidence import Scored, intervals, paired_difference, stratified_counts, verdict, weighted_metrics
from dfflab.metrics import binary_metrics


def test_resamples_keep_the_class_counts():
    y = np.array([0] * 7 + [1] * 21)
    c = stratified_counts(y, 50, seed=3)
    assert c.shape == (50, 28)
    assert np.all(c[:, y == 0].sum(1) == 7) and np.all(c[:, y == 1].sum(1) == 21)
    assert len({tuple(r) for r in c}) > 40  # resamples differ
    assert np.array_equal(c, stratified_counts(y, 50, seed=3))  # seeded


@pytest.mark.parametrize("ties", [False, True])
def test_point_metrics_match_torchmetrics(ties):
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(6, 200))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = rng.random(n) + 0.4 * y * rng.random(n)
        if ties:
            s = np.round(s * 4) / 4
        s = np.clip(s, 0, 1).astype(np.float32)
        thr = float(rng.random())
        ref = binary_metrics(torch.tensor(s), torch.tensor(y), thr)
        got = weighted_metrics(s, y, np.ones((1, n)), thr)
        for k in ("auroc", "ap", "balanced_accuracy", "eer"):
            assert got[k][0] == pytest.approx(ref[k], abs=1e-5), k


def test_perfectly_separated_scores_give_degenerate_intervals():
    y = np.array([0] * 30 + [1] * 90)
    s = np.where(y == 1, 0.9, 0.1) + np.linspace(0, 0.05, 120)
    ci = intervals(s, y, threshold=0.5, n_resamples=300)
    assert ci["auroc_ci"] == [1.0, 1.0] and ci["ap_ci"] == [1.0, 1.0]
    assert ci["balanced_accuracy_ci"] == [1.0, 1.0] and ci["eer_ci"] == [0.0, 0.0]


def test_identical_detectors_differ_by_an_interval_around_zero():
    rng = np.random.default_rng(0)
    y = (np.arange(200) % 4 != 0).astype(int)
    p = np.clip(rng.random(200) * 0.6 + 0.3 * y, 0, 1)
    a = Scored(np.arange(200), y, p)
    out = paired_difference(a, Scored(np.arange(200), y, p.copy()), n_resamples=200)
    assert out["diff"] == 0 and out["ci"][0] <= 0 <= out["ci"][1]
    assert out["verdict"] == "no significant difference"


def test_a_clearly_better_detector_is_called_better_and_the_other_worse():
    rng = np.random.default_rng(0)
    y = (np.arange(400) % 4 != 0).astype(int)
    good = Scored(np.arange(400), y, np.clip(rng.normal(0.3 + 0.4 * y, 0.15), 0, 1))
    poor = Scored(np.arange(400), y, np.clip(rng.normal(0.45 + 0.1 * y, 0.15), 0, 1))
    assert paired_difference(good, poor, n_resamples=300)["verdict"] == "better"
    assert paired_difference(poor, good, n_resamples=300)["verdict"] == "worse"
    eer = paired_difference(good, poor, "eer", n_resamples=300)
    assert eer["diff"] < 0 and eer["verdict"] == "better"  # a lower EER is better
    with pytest.raises(ValueError, match="same test rows"):
        paired_difference(good, Scored(np.arange(1, 401), y, good.probs))


def test_seeds_are_resampled_with_their_pairs():
    y = (np.arange(300) % 4 != 0).astype(int)

    def det(shift, noise_seed):
        r = np.random.default_rng(noise_seed)
        return Scored(np.arange(300), y, np.clip(r.normal(0.3 + shift * y, 0.2), 0, 1))

    a, b = [det(0.3, s) for s in (1, 2, 3)], [det(0.3, s) for s in (11, 12, 13)]
    out = paired_difference(a, b, n_resamples=300)
    assert out["n_seeds"] == 3 and out["ci"][0] <= out["diff"] <= out["ci"][1]
    single = paired_difference(a[0], b[0], n_resamples=300)
    assert (out["ci"][1] - out["ci"][0]) < (single["ci"][1] - single["ci"][0]) * 1.5


def test_interval_covers_the_true_auroc_about_95_percent_of_the_time():
    """Reals ~ N(0, 1), fakes ~ N(d, 1): the true AUROC is Phi(d / sqrt 2)."""
    d = 1.0
    true = 0.5 * (1 + math.erf(d / 2))  # Phi(d / sqrt(2))
    rng = np.random.default_rng(42)
    y = np.array([0] * 112 + [1] * 336)
    hits, trials = 0, 160
    for t in range(trials):
        s = rng.normal(d * y, 1.0)
        lo, hi = intervals(s, y, n_resamples=400, seed=t)["auroc_ci"]
        hits += lo <= true <= hi
    assert 0.89 <= hits / trials <= 0.99, hits / trials


def test_verdict_words():
    assert verdict([0.01, 0.05]) == "better" and verdict([-0.05, -0.01]) == "worse"
    assert verdict([-0.01, 0.02]) == "no significant difference"
    assert verdict([0.01, 0.02], "eer") == "worse"
