"""The paired bootstrap interval of a gain, against cases whose answer is known."""

import numpy as np
import pytest

from nanollm.bootstrap import paired_bootstrap_interval


def test_a_constant_gain_has_a_zero_width_interval():
    baseline = np.random.default_rng(0).normal(size=50)
    gain, low, high = paired_bootstrap_interval(baseline, baseline + 0.3, n_boot=200, seed=1)
    assert gain == pytest.approx(0.3)
    assert low == pytest.approx(0.3) and high == pytest.approx(0.3)


def test_pairing_removes_the_spread_between_questions():
    # questions differ a lot (sd 10), the model gains a little (0.5 +- 0.1) on each: paired, the
    # interval is tight and clear of 0; the spread of the questions never enters it
    rng = np.random.default_rng(0)
    baseline = rng.normal(scale=10.0, size=200)
    treated = baseline + 0.5 + rng.normal(scale=0.1, size=200)
    gain, low, high = paired_bootstrap_interval(baseline, treated, n_boot=500, seed=0)
    assert 0.45 < low < gain < high < 0.55


def test_an_even_trade_straddles_zero():
    # better on half the questions by 1, worse on the other half by 1: no gain on the whole
    baseline = np.zeros(100)
    treated = np.array([1.0, -1.0] * 50)
    gain, low, high = paired_bootstrap_interval(baseline, treated, n_boot=1000, seed=0)
    assert gain == 0.0
    assert low < 0 < high


def test_matches_a_brute_force_loop_with_the_same_rng():
    rng = np.random.default_rng(3)
    baseline, treated = rng.normal(size=30), rng.normal(loc=0.2, size=30)
    n_boot, level = 300, 0.9
    draws = np.random.default_rng(7)
    gains = []
    for _ in range(n_boot):
        idx = draws.integers(30, size=30)
        gains.append(sum(treated[i] - baseline[i] for i in idx) / 30)
    want = np.quantile(gains, [0.05, 0.95])
    gain, low, high = paired_bootstrap_interval(baseline, treated, n_boot, seed=7, level=level)
    assert gain == pytest.approx(np.mean(treated - baseline))
    assert (low, high) == pytest.approx(tuple(want))


def test_agrees_with_the_normal_interval_on_a_normal_sample():
    # for a mean of n normal differences the analytic 95% interval is mean +- 1.96 sd / sqrt(n)
    rng = np.random.default_rng(0)
    n = 400
    differences = rng.normal(loc=0.1, scale=1.0, size=n)
    gain, low, high = paired_bootstrap_interval(np.zeros(n), differences, n_boot=4000, seed=0)
    half = 1.96 * differences.std(ddof=1) / np.sqrt(n)
    assert low == pytest.approx(gain - half, abs=0.1 * half)
    assert high == pytest.approx(gain + half, abs=0.1 * half)


def test_coverage_is_near_the_nominal_level():
    # over many fresh samples, the 95% interval holds the true gain about 95% of the time
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(200):
        differences = rng.normal(loc=0.2, scale=1.0, size=100)
        _, low, high = paired_bootstrap_interval(np.zeros(100), differences, 500, seed=trial)
        hits += low <= 0.2 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_rejects_unpaired_scores():
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap_interval([1.0, 2.0], [1.0], n_boot=10, seed=0)
