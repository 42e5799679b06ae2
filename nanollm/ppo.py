"""PPO for language models: the maths of the reinforcement-learning step of RLHF, in pure functions.

Every generated token is an action, the prompt plus the tokens so far is the state, and an episode
ends with the end-of-turn token (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences"; InstructGPT, Ouyang et al. 2022; Huang et al., "The N Implementation Details of RLHF
with PPO"). One PPO iteration, step by step:

    rollout    out = generate(policy, prompts, ..., temperature=1.0)
               with torch.no_grad():
                   old_logprobs = sequence_logprobs(policy, out.ids, out.pad_mask)     # (B, T)
                   ref_logprobs = sequence_logprobs(reference, out.ids, out.pad_mask)  # (B, T)
                   old_values = state_values(critic, out.ids, out.pad_mask)            # (B, T)
                   score = reward_model.token_rewards(out.ids, out.pad_mask,
                                                      out.response_mask)               # (B, T)
    credit     rewards, kl_per_token = kl_penalised_rewards(old_logprobs, ref_logprobs, score,
                                                            out.response_mask, kl_ctl.beta)
               advantages, returns = gae(rewards, old_values, out.response_mask, gamma, lam)
               advantages = whiten(advantages, out.response_mask)
    update     a few epochs over minibatches of the rollout:
               loss = ppo_clip_loss(new_logprobs, old_logprobs, advantages, mask, clip_eps)[0]
                      + vf_coef * value_loss(new_values, old_values, returns, mask, clip_eps)
    adapt      kl_ctl.update(kl_per_token.sum(1).mean().item(), n_steps=B)

(sequence_logprobs lives in nanollm/logprobs.py, shared with DPO; the reward model in reward.py.)

Alignment: the log-probability and the value of token t both sit at position t, although the
logits and the state that produce them come out of position t - 1 (see sequence_logprobs and
state_values). So one mask, response_mask, selects every quantity of the generated tokens.

Where it simplifies compared with the papers and production trainers:
1. The critic is its own GPT trunk with a value head (Critic); no trunk is shared with the policy.
2. No pretraining-gradient mix ("PPO-ptx" in InstructGPT), no reward whitening or clipping of the
   score, no penalty for answers that never emit the end-of-turn token.
3. Whitening uses the masked entries of the one process's batch; with DDP the statistics are not
   gathered across processes.
4. Everything is computed over the full padded (B, T) grid and masked; production code slices out
   the response columns to save memory.
"""

import copy

import torch
import torch.nn as nn

from nanollm.optim import weight_decay_groups
from nanollm.reward import last_token_index

# Whitening divides by a standard deviation, which is 0 when every advantage is equal.
WHITEN_EPS = 1e-8
# Ziegler et al.'s adaptive KL controller never moves beta by more than 20% of n_steps / horizon.
KL_ERROR_CLIP = 0.2


# -----------------------------------------------------------------------------
# Masked statistics: padding and prompt tokens must never count


def masked_mean(x, mask):
    """Mean of x over the entries where mask is True; 0 (not NaN) when nothing is masked in.

    where() rather than x * mask: a NaN or inf sitting in a padded position would survive the
    multiplication (0 * inf = NaN) and spread into the mean.
    """
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def whiten(x, mask, shift_mean=True):
    """(x - mean) / std over the masked entries only; masked-out entries come back as 0.

    Why: advantages whose scale drifts from batch to batch would change the effective learning
    rate; whitened advantages always have mean 0 and std 1. shift_mean=False keeps the mean
    (rescaling only), which is what one wants for rewards, whose sign carries meaning.
    """
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)  # population variance: std of exactly 1
    whitened = (x - mean) * torch.rsqrt(variance + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0.0)


# -----------------------------------------------------------------------------
# The critic and its values, aligned with the log-probabilities


class Critic(nn.Module):
    """The value function V(state): a GPT trunk and a (C -> 1) head, one value per position.

    The state ending at position t (the prompt and the answer up to token t) is read from the
    trunk's state at t. Built with from_reward_model, trunk and head start as the reward model's,
    so the first values already predict the reward at the end of the answer.
    """

    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_reward_model(cls, reward_model):
        """A critic with a copy of the reward model's trunk and head (not of its other heads),
        trainable even when the reward model is frozen."""
        critic = cls(copy.deepcopy(reward_model.gpt))
        critic.head.load_state_dict(reward_model.head.state_dict())
        return critic.to(next(reward_model.parameters()).device).requires_grad_(True)

    def forward(self, ids, pad_mask=None):
        """V of the state ending at each position, (B, T)."""
        return self.head(self.gpt.hidden(ids, pad_mask=pad_mask)).squeeze(-1)  # (B, T)

    def configure_optimizer(self, weight_decay, lr, betas=(0.9, 0.95), fused=False):
        """AdamW over trunk and head, matrices decayed (optim.weight_decay_groups)."""
        groups = weight_decay_groups(self.parameters(), weight_decay)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def state_values(critic, ids, pad_mask=None):
    """V(state before token t) placed at position t, (B, T); position 0 gets 0.

    The state in which token t was chosen is ids[:, :t], whose last position is t - 1, so the
    critic's value at t - 1 is the value of choosing token t. The shift is the same one
    sequence_logprobs makes, so values, log-probabilities and rewards of a token share a column.
    """
    values = critic(ids, pad_mask=pad_mask).float()  # (B, T)
    first = values.new_zeros(ids.size(0), 1)  # (B, 1)
    return torch.cat([first, values[:, :-1]], dim=1)  # (B, T)


# -----------------------------------------------------------------------------
# KL to the reference, and the reward it enters


def kl_k1(logprobs, ref_logprobs):
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy:

        k1 = log p(x) - log p_ref(x)        (Schulman, "Approximating KL Divergence", 2020)

    Unbiased (its mean over samples x ~ p is exactly the KL) but noisy, and negative for about
    half the tokens. It is the estimate put in PPO's reward, where only its sum over a response
    matters and that sum is the log-ratio of whole sequences.
    """
    return logprobs - ref_logprobs


def kl_k3(logprobs, ref_logprobs):
    """Per-token estimate of KL(policy || reference) that is never negative:

        k3 = (r - 1) - log r,   r = p_ref(x) / p(x)   (Schulman, "Approximating KL Divergence")

    Still unbiased, because E_p[r - 1] = 0 is added to k1 = -log r, and that control variate makes
    it much less noisy when the two distributions are close; it is >= 0 token by token, since
    log r <= r - 1. Used where the KL is a term of the loss rather than of the reward (GRPO), and
    as a low-variance number to log.
    """
    log_ratio = ref_logprobs - logprobs  # log r
    return torch.expm1(log_ratio) - log_ratio  # expm1: exact for the tiny r - 1 of close models


def kl_penalised_rewards(logprobs, ref_logprobs, score, response_mask, beta):
    """Per-token rewards (B, T): a KL penalty on every response token, plus the reward model's
    score. Returns (rewards, kl_per_token), both (B, T).

        R(x, y) = r(x, y) - beta * log(pi(y | x) / pi_ref(y | x))    (InstructGPT eq. 2)
        rewards_t = -beta * (log pi(y_t) - log pi_ref(y_t))   (+ r(x, y) at the last token)

    score is r(x, y) of each answer (B,), paid on its last response token, or the reward model's
    rewards already placed on the tokens (B, T), from RewardModel.token_rewards.

    Why the KL sits in the reward: the reward model is only right about answers like the ones it
    was trained on. Without a leash the policy finds answers that score absurdly well and read
    badly ("reward hacking"). Paying beta for every nat of drift from the reference keeps the
    policy where the reward model can be trusted, and, as a per-token reward, tells PPO exactly
    which tokens drifted. The sum over a response is beta times the sequence's log-ratio.

    Positions outside response_mask (prompt, padding) get exactly 0 in both outputs.
    """
    kl_per_token = torch.where(response_mask, kl_k1(logprobs, ref_logprobs), 0.0)  # (B, T)
    if score.dim() == 1:  # the score judges the whole answer, so it arrives when it is complete
        last = last_token_index(response_mask)  # (B,)
        score = torch.zeros_like(kl_per_token).scatter(1, last[:, None], score.float()[:, None])
    rewards = -beta * kl_per_token + torch.where(response_mask, score.float(), 0.0)  # (B, T)
    return rewards, kl_per_token


# -----------------------------------------------------------------------------
# Credit assignment: which tokens earned the reward


def gae(rewards, values, mask, gamma, lam):
    """Generalised advantage estimation over the masked (response) positions of each row.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE", eqs. 11-16:
        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}  =  sum_k (gamma * lam)^k * delta_{t+k}
        returns_t = A_t + V_t                       (the critic's regression target)

    rewards, values, mask: (B, T). Returns (advantages, returns), both (B, T), 0 where mask is
    False. "t + 1" means the next masked position of the row: masked-out columns are skipped, so
    padding never enters the sums, and after the last response token the episode is over (V = 0,
    A = 0). lam trades bias (small lam leans on the critic) for variance (lam = 1 sums the actual
    rewards). Advantages are targets, not something to differentiate, so values are detached.
    """
    values = values.detach()
    B, T = rewards.shape
    next_value = rewards.new_zeros(B)  # V_{t+1}: 0 once the episode has ended
    next_advantage = rewards.new_zeros(B)  # A_{t+1}
    advantages = [None] * T
    for t in reversed(range(T)):  # backwards: A_t needs A_{t+1}
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        advantage = delta + gamma * lam * next_advantage  # (B,)
        valid = mask[:, t]  # (B,)
        advantages[t] = torch.where(valid, advantage, 0.0)
        # a masked-out column leaves the carried values alone: it is skipped, not a step
        next_value = torch.where(valid, values[:, t], next_value)
        next_advantage = torch.where(valid, advantage, next_advantage)
    advantages = torch.stack(advantages, dim=1)  # (B, T)
    returns = torch.where(mask, advantages + values, 0.0)  # (B, T)
    return advantages, returns


# -----------------------------------------------------------------------------
# The losses of the update phase


def ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip_eps):
    """PPO's clipped surrogate objective, negated, as a masked mean over tokens.

    Schulman et al. 2017, eq. 7:
        ratio_t = pi(a_t | s_t) / pi_old(a_t | s_t)
        L_CLIP  = E_t[ min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t) ]

    Why the clip: the rollout was sampled by pi_old, so its advantages only say something about
    policies close to pi_old. Once the ratio has moved past 1 +- eps in the direction the
    advantage rewards, the min picks the flat clipped term and that token's gradient is zero;
    moves that make things worse are never clipped (the min is a pessimistic bound).

    All (B, T). Returns (loss, clip_fraction): the share of tokens whose gradient the clip
    removed, a health signal (values far above ~0.2 mean the updates are too large).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    unclipped_loss = -ratio * advantages  # (B, T)
    clipped_loss = -torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages  # (B, T)
    loss = masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)  # max of losses = min
    clip_fraction = masked_mean((clipped_loss > unclipped_loss).float(), mask).detach()
    return loss, clip_fraction


def value_loss(values, old_values, returns, mask, clip_eps):
    """The critic's loss: squared error to the returns, with PPO-style clipping, masked mean.

        V_clipped = V_old + clip(V - V_old, -eps, +eps)
        loss      = 0.5 * E_t[ max((V - R)^2, (V_clipped - R)^2) ]

    Not in the PPO paper: it comes from OpenAI's baselines code, which InstructGPT-style trainers
    kept (see "The N Implementation Details of RLHF with PPO"). Like the policy clip, it stops one
    rollout from dragging the critic far from the values it was collected with. All (B, T).
    """
    values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)  # (B, T)
    squared_error = torch.maximum((values - returns) ** 2, (values_clipped - returns) ** 2)
    return 0.5 * masked_mean(squared_error, mask)


def entropy_from_logits(logits, mask):
    """Mean entropy (nats) of the next-token distributions (B, T, V) at the masked positions.

        H = -sum_v p_v log p_v = logsumexp(logits) - sum_v p_v * logits_v

    A falling entropy shows the policy becoming deterministic, often the first sign of reward
    hacking. logits[:, t] is the distribution of token t + 1, so to measure the distributions the
    response was sampled from pass entropy_from_logits(logits[:, :-1], response_mask[:, 1:]).
    """
    logits = logits.float()  # the sum of many small p * logit terms is inaccurate in bf16
    probs = torch.softmax(logits, dim=-1)  # (B, T, V)
    entropy = torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)  # (B, T)
    return masked_mean(entropy, mask)


# -----------------------------------------------------------------------------
# How strong the KL leash is


class AdaptiveKLController:
    """Adjusts beta so the measured KL tracks a target (Ziegler et al. 2019, section 2.2):

        error = clip(KL_current / KL_target - 1, -0.2, 0.2)
        beta <- beta * (1 + error * n_steps / horizon)

    A proportional controller: KL above target strengthens the penalty, below weakens it.
    current_kl is the KL of whole responses (kl_per_token summed over a response, averaged over
    the batch); n_steps is the number of episodes since the last update (the batch size).
    """

    def __init__(self, init_beta, target_kl, horizon):
        self.beta, self.target_kl, self.horizon = init_beta, target_kl, horizon

    def update(self, current_kl, n_steps):
        error = min(max(current_kl / self.target_kl - 1.0, -KL_ERROR_CLIP), KL_ERROR_CLIP)
        self.beta *= 1.0 + error * n_steps / self.horizon


class FixedKLController:
    """A constant beta, with the adaptive controller's interface so the loop does not change."""

    def __init__(self, beta):
        self.beta = beta

    def update(self, current_kl, n_steps):
        pass
