"""GRPO: PPO without a critic, each answer judged against the other answers to the same prompt.

Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath", section 4.1; the RL step of
DeepSeek-R1). For every prompt the policy samples a group of G answers; each answer's advantage is
its reward measured against its group,

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)        the same for every token of answer i

and the policy maximises PPO's clipped surrogate with that advantage, minus a KL penalty to the
reference written into the loss (k3, never negative), averaged over each answer's tokens and then
over the answers:

    J = 1/G sum_i 1/|o_i| sum_t [ min(ratio_t A_i, clip(ratio_t, 1 - eps, 1 + eps) A_i)
                                  - beta * k3_t ]

Why no critic: PPO's value function exists to say what reward to expect from a state; the group's
mean reward says the same for the prompt, for free. That drops a whole model (and its optimizer)
from memory, at the price of sampling G answers per prompt. A group whose answers all score the
same (all right, or all wrong) has every advantage 0 and teaches nothing: `silent_groups` counts
them, as the share of such groups says when a task is too easy or too hard for the policy.

One iteration in train_rlhf.py --algo grpo:

    rollout    B = N * G answers: N prompts, each repeated G times in a row
    credit     advantages = group_advantages(scores, G)                         # (B,)
    update     loss, clip_fraction = grpo_loss(logprobs, old_logprobs, ref_logprobs,
                                               advantages, response_mask, clip_eps, beta)

Where it simplifies:
1. The standard deviation is the population one (divide by G), so a group of one has advantage 0
   rather than NaN; implementations that use the sample one (G - 1) scale advantages by
   sqrt(G / (G - 1)), a constant the learning rate absorbs.
2. Outcome supervision only (one reward per answer); the paper's process supervision, which
   rewards each reasoning step, needs a step-level reward model the world does not have.
"""

import torch

from nanollm.ppo import kl_k3, masked_mean

# Dividing by the group's std fails when every answer scored the same; eps keeps it finite.
GROUP_STD_EPS = 1e-4


def group_advantages(scores, group_size, eps=GROUP_STD_EPS):
    """(B,) scores of answers grouped by prompt, G = group_size consecutive rows per prompt ->
    (B,) advantages: (score - the group's mean) / (the group's std + eps)."""
    if scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} answers do not split into groups of {group_size}")
    grouped = scores.float().view(-1, group_size)  # (N, G)
    mean = grouped.mean(dim=1, keepdim=True)  # (N, 1)
    std = grouped.std(dim=1, correction=0, keepdim=True)  # (N, 1), population std
    return ((grouped - mean) / (std + eps)).view(-1)  # (B,)


def silent_groups(scores, group_size):
    """How many groups of G answers scored all the same: their advantages are all 0."""
    grouped = scores.view(-1, group_size)  # (N, G)
    return int((grouped.amax(dim=1) == grouped.amin(dim=1)).sum())


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps, beta):
    """GRPO's objective, negated: the clipped surrogate with one advantage per answer, minus
    beta * k3 to the reference, averaged over each answer's tokens, then over the answers.

    logprobs, old_logprobs, ref_logprobs, mask: (B, T); advantages: (B,). Returns (loss,
    clip_fraction) as ppo_clip_loss does. The per-answer mean is the paper's 1 / |o_i|: every
    answer weighs the same, however long (PPO here averages over all tokens of the batch).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    advantage = advantages[:, None]  # (B, 1): every token of an answer shares it
    unclipped = ratio * advantage  # (B, T)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage  # (B, T)
    objective = torch.minimum(unclipped, clipped) - beta * kl_k3(logprobs, ref_logprobs)  # (B, T)
    per_answer = torch.where(mask, objective, 0.0).sum(1) / mask.sum(1).clamp(min=1)  # (B,)
    clip_fraction = masked_mean((clipped < unclipped).float(), mask).detach()
    return -per_answer.mean(), clip_fraction
