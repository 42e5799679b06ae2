"""How sure is a gain? A paired bootstrap interval for the difference of two models' scores.

    gain, low, high = paired_bootstrap_interval(sft_scores, dpo_scores, n_boot=1000, seed=0)

Two models answer the same questions and a judge scores every answer. The gain is the mean of
the per-question differences. Questions differ far more from each other than the two models do
on one question, so the comparison is paired: each bootstrap draw resamples questions (with
replacement) and keeps both models' scores of a drawn question together. The spread of the
resampled mean gains stands in for the spread we would see on a fresh set of questions.

Simplifications compared to a statistics package:
1. The percentile interval, not the bias-corrected (BCa) one; with a few hundred questions and a
   mean the two agree closely.
2. The questions are the only source of chance; greedy answers make the models' side fixed.
"""

import numpy as np


def paired_bootstrap_interval(baseline, treated, n_boot=1000, seed=0, level=0.95):
    """(mean gain, low, high): the mean of treated - baseline over the questions and its
    percentile bootstrap interval at `level`.

        d_i = treated_i - baseline_i,   gain = mean_i d_i
        gain*_b = mean_i d_{I_bi},  I_bi ~ Uniform{1..n} with replacement,  b = 1..n_boot
        [low, high] = quantiles (1 - level) / 2 and (1 + level) / 2 of gain*

    baseline[i] and treated[i] score the same question i.
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    treated = np.asarray(treated, dtype=np.float64)
    if baseline.shape != treated.shape or baseline.ndim != 1 or len(baseline) == 0:
        raise ValueError(f"need two equal-length lists of per-question scores, got "
                         f"{baseline.shape} and {treated.shape}")
    differences = treated - baseline                                   # (n,)
    rng = np.random.default_rng(seed)
    rows = rng.integers(len(differences), size=(n_boot, len(differences)))  # (n_boot, n)
    gains = differences[rows].mean(axis=1)                              # (n_boot,)
    low, high = np.quantile(gains, [(1 - level) / 2, (1 + level) / 2])
    return float(differences.mean()), float(low), float(high)
