"""Compute budgets: how a number of FLOPs splits into a model size and a number of tokens.

Training a transformer of N parameters on D tokens costs about 6 N D floating-point operations:
2 N per token for the forward pass (a multiply and an add per weight) and twice that for the
backward pass (Kaplan et al. 2020). Generating one token costs the forward pass alone, 2 N. So at
a fixed training budget C, the model size decides the data: D = C / (6 N).

Hoffmann et al. 2022 (Chinchilla) trained many sizes at each of several budgets, found the loss
against log N to be close to a parabola at each budget (an "IsoFLOP profile"), and read the
best size off its minimum; at their scale the best model saw about 20 tokens per parameter.

    steps = steps_for_budget(3e11, n_params=20_000, tokens_per_step=512)
    best_n = isoflop_minimum([7e3, 2e4, 3e4, 7e4], [1.47, 1.33, 1.47, 1.72])

N here counts every weight the forward pass multiplies by: the blocks and the (tied) token
embedding, which is also the output layer; not the position table, which is only looked up
(GPT.num_params()). The attention scores' own FLOPs, 12 * layers * T * width per token, are left
out, as in the papers: at a context this short they are a few percent.
"""

import numpy as np


def training_flops(n_params, n_tokens):
    """FLOPs to train n_params parameters on n_tokens tokens: 6 N D."""
    return 6 * n_params * n_tokens


def tokens_for_budget(flops, n_params):
    """The tokens a budget of `flops` buys a model of n_params parameters: C / (6 N)."""
    return flops / (6 * n_params)


def steps_for_budget(flops, n_params, tokens_per_step):
    """Optimizer steps of tokens_per_step tokens that spend `flops` on n_params parameters,
    rounded to the nearest whole step (at least one)."""
    return max(1, round(tokens_for_budget(flops, n_params) / tokens_per_step))


def generation_flops_per_token(n_params):
    """FLOPs of one generated token: the forward pass alone, 2 N."""
    return 2 * n_params


def isoflop_minimum(n_params, losses):
    """The model size at the minimum of the parabola through (log N, loss), least squares, as
    Chinchilla's IsoFLOP profiles; raises when the points do not curve upwards."""
    log_n = np.log(np.asarray(n_params, dtype=float))
    a, b, _ = np.polyfit(log_n, np.asarray(losses, dtype=float), 2)  # loss ~ a x^2 + b x + c
    if a <= 0:
        raise ValueError("the losses do not curve upwards against log N: no minimum to read off")
    return float(np.exp(-b / (2 * a)))
