"""GRPO's maths against values worked out by hand and against a loop over answers."""

import math

import pytest
import torch

from nanollm.grpo import GROUP_STD_EPS, group_advantages, grpo_loss, silent_groups
from nanollm.ppo import kl_k3


def test_group_advantages_by_hand():
    # group 1: rewards 1, 0, 0, 1 -> mean 0.5, population std 0.5 -> +-1
    # group 2: rewards 3, 3, 3, 3 -> all equal: advantage 0, not NaN
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    advantages = group_advantages(scores, group_size=4)
    expected = torch.tensor([1, -1, -1, 1, 0, 0, 0, 0]) * 0.5 / (0.5 + GROUP_STD_EPS)
    torch.testing.assert_close(advantages, expected.float())
    assert silent_groups(scores, 4) == 1


def test_group_of_one_has_advantage_zero():
    advantages = group_advantages(torch.tensor([0.3, -2.0, 5.0]), group_size=1)
    assert torch.equal(advantages, torch.zeros(3))
    assert silent_groups(torch.tensor([0.3, -2.0, 5.0]), 1) == 3


def test_group_advantages_three_values():
    # 0, 1, 2: mean 1, population std sqrt(2/3)
    advantages = group_advantages(torch.tensor([0.0, 1.0, 2.0]), group_size=3)
    std = math.sqrt(2 / 3)
    torch.testing.assert_close(advantages, torch.tensor([-1, 0, 1]) / (std + GROUP_STD_EPS))


def test_groups_must_divide_the_batch():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)


def test_grpo_loss_against_a_loop_over_answers():
    torch.manual_seed(0)
    B, T, eps, beta = 4, 6, 0.2, 0.04
    logprobs = -torch.rand(B, T) * 2
    old = logprobs + torch.randn(B, T) * 0.3
    ref = logprobs + torch.randn(B, T) * 0.3
    advantages = torch.tensor([1.5, -0.5, 0.0, -1.0])
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, (start, end) in enumerate([(1, 6), (2, 4), (0, 1), (3, 6)]):
        mask[b, start:end] = True
    loss, clip_fraction = grpo_loss(logprobs, old, ref, advantages, mask, eps, beta)
    per_answer = []
    for b in range(B):  # 1/|o_i| sum_t [min(r A, clip(r) A) - beta k3], then 1/G sum_i
        terms = []
        for t in range(T):
            if mask[b, t]:
                r = math.exp(logprobs[b, t].item() - old[b, t].item())
                a = advantages[b].item()
                surrogate = min(r * a, min(max(r, 1 - eps), 1 + eps) * a)
                log_r = ref[b, t].item() - logprobs[b, t].item()
                k3 = math.exp(log_r) - 1 - log_r
                terms.append(surrogate - beta * k3)
        per_answer.append(sum(terms) / len(terms))
    assert loss.item() == pytest.approx(-sum(per_answer) / B, rel=1e-5)
    assert 0 <= clip_fraction.item() <= 1


def test_grpo_loss_weighs_answers_not_tokens():
    # two answers, one of 1 token and one of 4, advantages +1 and -1, at ratio 1: the per-answer
    # means cancel exactly; a mean over all tokens would not
    logprobs = torch.zeros(2, 4)
    mask = torch.tensor([[True, False, False, False], [True, True, True, True]])
    loss, _ = grpo_loss(logprobs, logprobs, logprobs, torch.tensor([1.0, -1.0]), mask, 0.2, 0.1)
    assert loss.item() == 0.0


def test_grpo_gradient_raises_the_better_answer():
    logprobs = torch.log(torch.full((2, 3), 0.5)).requires_grad_()
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, _ = grpo_loss(logprobs, logprobs.detach(), logprobs.detach(),
                        group_advantages(torch.tensor([1.0, 0.0]), 2), mask, 0.2, 0.04)
    loss.backward()
    assert (logprobs.grad[0] < 0).all() and (logprobs.grad[1] > 0).all()  # descent raises row 0
    # at the reference itself, k3 and its gradient are 0: only the surrogate acts
    assert kl_k3(logprobs, logprobs).abs().max() == 0
