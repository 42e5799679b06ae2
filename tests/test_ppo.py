"""PPO's maths against references: GAE against a brute-force sum, the clip's zero gradients,
the KL penalty and where rewards land, KL estimators against an exact KL, whitening, controllers."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from nanollm.errors import ConfigError
from nanollm.logprobs import sequence_logprobs
from nanollm.model import GPT, GPTConfig
from nanollm.ppo import AdaptiveKLController, Critic, FixedKLController, entropy_from_logits, \
    gae, kl_k1, kl_k3, kl_penalised_rewards, masked_mean, ppo_clip_loss, state_values, \
    value_loss, whiten
from nanollm.reward import RewardModel
from nanollm.rollout import prompts_that_fit

TINY = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)
CLIP_EPS = 0.2

# A batch laid out like a rollout: left-padded prompts, responses of different lengths, padding
# after the responses that stopped early.
#                        pad/prompt      response           trailing pad
PAD_MASK = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
                         [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                         [0, 1, 1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
RESPONSE_MASK = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
                              [0, 0, 0, 0, 1, 1, 1, 0, 0, 0],
                              [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


def rollout_ids(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], PAD_MASK.shape, generator=g)


# -----------------------------------------------------------------------------
# GAE


def brute_force_gae(rewards, values, mask, gamma, lam):
    """A_t = sum_k (gamma * lam)^k * delta_{t+k} over the masked positions of each row, by loops."""
    advantages = torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        steps = mask[b].nonzero().flatten().tolist()  # the columns that are real time steps
        for i, t in enumerate(steps):
            total = 0.0
            for k, s in enumerate(steps[i:]):
                next_value = values[b, steps[i + k + 1]] if i + k + 1 < len(steps) else 0.0
                delta = rewards[b, s] + gamma * next_value - values[b, s]
                total += (gamma * lam) ** k * delta
            advantages[b, t] = total
    return advantages


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_brute_force_with_left_and_trailing_padding(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(PAD_MASK.shape, generator=g)
    values = torch.randn(PAD_MASK.shape, generator=g)
    advantages, returns = gae(rewards, values, RESPONSE_MASK, gamma, lam)
    expected = brute_force_gae(rewards, values, RESPONSE_MASK, gamma, lam)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, torch.where(RESPONSE_MASK, expected + values, 0.0))


def test_gae_ignores_whatever_sits_outside_the_mask():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(PAD_MASK.shape, generator=g)
    values = torch.randn(PAD_MASK.shape, generator=g)
    junk = torch.randn(PAD_MASK.shape, generator=g) * 100
    advantages, returns = gae(rewards, values, RESPONSE_MASK, 1.0, 0.95)
    dirty = gae(torch.where(RESPONSE_MASK, rewards, junk), torch.where(RESPONSE_MASK, values, junk),
                RESPONSE_MASK, 1.0, 0.95)
    torch.testing.assert_close(dirty[0], advantages)
    torch.testing.assert_close(dirty[1], returns)
    assert advantages[~RESPONSE_MASK].abs().max() == 0


def test_gae_with_lambda_one_and_gamma_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    values = torch.tensor([[5.0, 0.5, 0.25, 0.125]])
    mask = torch.tensor([[False, True, True, True]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # reward-to-go from columns 1, 2, 3: 6, 5, 3
    torch.testing.assert_close(advantages, torch.tensor([[0.0, 6 - 0.5, 5 - 0.25, 3 - 0.125]]))
    torch.testing.assert_close(returns, torch.tensor([[0.0, 6.0, 5.0, 3.0]]))


# -----------------------------------------------------------------------------
# The clipped policy loss and the value loss


def clip_loss_and_grad(ratio, advantage):
    logprobs = torch.tensor([[math.log(ratio)]], requires_grad=True)
    old_logprobs = torch.zeros(1, 1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss, clip_fraction = ppo_clip_loss(logprobs, old_logprobs, torch.tensor([[advantage]]),
                                        mask, CLIP_EPS)
    loss.backward()
    return loss.item(), logprobs.grad.item(), clip_fraction.item()


@pytest.mark.parametrize("ratio,advantage", [(1.5, 2.0), (0.5, -2.0)])
def test_clip_loss_is_flat_past_the_clip_in_the_advantages_direction(ratio, advantage):
    loss, grad, clip_fraction = clip_loss_and_grad(ratio, advantage)
    clipped_ratio = 1 + CLIP_EPS if ratio > 1 else 1 - CLIP_EPS
    assert loss == pytest.approx(-clipped_ratio * advantage)
    assert grad == 0.0
    assert clip_fraction == 1.0


@pytest.mark.parametrize("ratio,advantage", [(1.1, 2.0), (0.9, -2.0), (1.0, 1.0),
                                             (1.5, -2.0), (0.5, 2.0)])
def test_clip_loss_has_gradient_inside_the_clip_and_when_things_got_worse(ratio, advantage):
    # inside [1 - eps, 1 + eps], and outside it in the direction that lowers the objective
    loss, grad, clip_fraction = clip_loss_and_grad(ratio, advantage)
    assert loss == pytest.approx(-ratio * advantage)
    # d(-ratio * A) / d logp = -ratio * A
    assert grad == pytest.approx(-ratio * advantage)
    assert clip_fraction == 0.0


def test_clip_loss_averages_over_masked_tokens_only():
    logprobs = torch.tensor([[0.0, 0.0, 5.0]])
    advantages = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, False]])
    loss, _ = ppo_clip_loss(logprobs, torch.zeros(1, 3), advantages, mask, CLIP_EPS)
    assert loss.item() == pytest.approx(-2.0)


def test_value_loss_takes_the_larger_of_the_clipped_and_unclipped_errors():
    old_values = torch.tensor([[0.0, 0.0, 0.0, 9.0]])
    values = torch.tensor([[1.0, 1.0, 0.1, 9.0]], requires_grad=True)
    returns = torch.tensor([[2.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    loss = value_loss(values, old_values, returns, mask, CLIP_EPS)
    # column 0: V=1 moved towards R=2, clipped V=0.2 is further: (0.2 - 2)^2 = 3.24, no gradient
    # column 1: V=1 moved away from R=-1: (1 + 1)^2 = 4 beats (0.2 + 1)^2 = 1.44
    # column 2: inside the clip: 0.1^2 = 0.01; column 3 is masked out
    assert loss.item() == pytest.approx(0.5 * (3.24 + 4.0 + 0.01) / 3)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 2.0, 0.1, 0.0]]) / 3)


# -----------------------------------------------------------------------------
# Log-probabilities, values, and the KL-penalised reward


def test_sequence_logprobs_match_log_softmax_and_skip_padding():
    model, ids = tiny_model(), rollout_ids()
    with torch.no_grad():
        logprobs = sequence_logprobs(model, ids, PAD_MASK)
        log_softmax = F.log_softmax(model(ids, pad_mask=PAD_MASK), dim=-1)  # (B, T, V)
    B, T = ids.shape
    for b in range(B):
        for t in range(T):
            scored = t > 0 and PAD_MASK[b, t] and PAD_MASK[b, t - 1]
            expected = log_softmax[b, t - 1, ids[b, t]] if scored else 0.0
            assert logprobs[b, t].item() == pytest.approx(float(expected), abs=1e-6)


def test_sequence_logprobs_of_a_left_padded_row_equal_the_unpadded_row():
    model, ids = tiny_model(), rollout_ids()
    with torch.no_grad():
        padded = sequence_logprobs(model, ids, PAD_MASK)[0, 2:]
        alone = sequence_logprobs(model, ids[:1, 2:])[0]
    # the first real token has no context either way: both give it 0
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_the_critic_is_the_head_on_every_state_of_its_trunk():
    critic, ids = Critic(tiny_model()).eval(), rollout_ids()
    torch.nn.init.normal_(critic.head.weight)
    with torch.no_grad():
        values = critic(ids, PAD_MASK)  # (B, T)
        hidden = critic.gpt.hidden(ids, pad_mask=PAD_MASK)  # (B, T, C)
    torch.testing.assert_close(values, hidden @ critic.head.weight[0] + critic.head.bias[0])


def test_state_values_are_the_critic_values_shifted_onto_the_next_token():
    critic, ids = Critic(tiny_model()).eval(), rollout_ids()
    torch.nn.init.normal_(critic.head.weight)
    with torch.no_grad():
        values = state_values(critic, ids, PAD_MASK)
        per_state = critic(ids, pad_mask=PAD_MASK)
    torch.testing.assert_close(values[:, 1:], per_state[:, :-1])
    assert values[:, 0].abs().max() == 0


def test_a_critic_from_a_reward_model_copies_its_trunk_and_head_and_nothing_else():
    reward_model = RewardModel(tiny_model(), likelihood=True).eval()
    torch.nn.init.normal_(reward_model.head.weight)
    critic = Critic.from_reward_model(reward_model).eval()
    gpt_keys = {f"gpt.{k}" for k in tiny_model().state_dict()}
    assert set(critic.state_dict()) == gpt_keys | {"head.weight", "head.bias"}
    rm_state = reward_model.state_dict()
    assert all(torch.equal(v, rm_state[k]) for k, v in critic.state_dict().items())
    # its own copy: training the critic leaves the reward model as it was
    assert not {id(p) for p in critic.parameters()} & {id(p) for p in reward_model.parameters()}
    ids = rollout_ids()
    with torch.no_grad():
        at_end = critic(ids, PAD_MASK)[:, -1]
    # the values start as the reward: at a row's last token the critic reads what the head reads
    response_mask = torch.zeros_like(PAD_MASK)
    response_mask[0, -1] = True  # row 0 ends at the last column
    with torch.no_grad():
        reward = reward_model(ids[:1], PAD_MASK[:1], response_mask[:1])
    assert reward_model.likelihood_weight.bias.item() == 0.0  # w = 0: the head alone
    torch.testing.assert_close(at_end[0], reward[0])


def test_kl_penalty_is_zero_when_the_policy_is_the_reference():
    policy, ids = tiny_model(), rollout_ids()
    reference = copy.deepcopy(policy)
    score = torch.tensor([1.5, -0.5, 2.0])
    with torch.no_grad():
        logprobs = sequence_logprobs(policy, ids, PAD_MASK)
        ref_logprobs = sequence_logprobs(reference, ids, PAD_MASK)
    rewards, kl_per_token = kl_penalised_rewards(logprobs, ref_logprobs, score, RESPONSE_MASK,
                                                 beta=0.1)
    assert kl_per_token.abs().max() == 0
    expected = torch.zeros(PAD_MASK.shape)
    expected[0, 9], expected[1, 6], expected[2, 7] = score
    torch.testing.assert_close(rewards, expected)


def test_rewards_land_on_response_tokens_only_and_the_score_on_the_last_one():
    policy, ids = tiny_model(seed=0), rollout_ids()
    reference = tiny_model(seed=1)  # a different model: the KL is nonzero
    score, beta = torch.tensor([1.5, -0.5, 2.0]), 0.1
    with torch.no_grad():
        logprobs = sequence_logprobs(policy, ids, PAD_MASK)
        ref_logprobs = sequence_logprobs(reference, ids, PAD_MASK)
    rewards, kl_per_token = kl_penalised_rewards(logprobs, ref_logprobs, score, RESPONSE_MASK,
                                                 beta)
    assert rewards[~RESPONSE_MASK].abs().max() == 0  # prompt and padding
    assert kl_per_token[~RESPONSE_MASK].abs().max() == 0
    assert kl_per_token[RESPONSE_MASK].abs().min() > 0
    kl_reward = torch.where(RESPONSE_MASK, -beta * (logprobs - ref_logprobs), 0.0)
    torch.testing.assert_close(rewards - kl_reward, torch.where(
        torch.arange(10) == torch.tensor([[9], [6], [7]]), score[:, None], 0.0))


def test_rewards_placed_per_token_are_paid_where_they_stand_and_never_on_padding():
    # RewardModel.token_rewards (B, T): the (B,) score at the last token is one case of it
    policy, ids = tiny_model(seed=0), rollout_ids()
    reference = tiny_model(seed=1)
    score, beta = torch.tensor([1.5, -0.5, 2.0]), 0.1
    with torch.no_grad():
        logprobs = sequence_logprobs(policy, ids, PAD_MASK)
        ref_logprobs = sequence_logprobs(reference, ids, PAD_MASK)
    at_end = torch.zeros(PAD_MASK.shape)
    at_end[0, 9], at_end[1, 6], at_end[2, 7] = score
    as_score = kl_penalised_rewards(logprobs, ref_logprobs, score, RESPONSE_MASK, beta)[0]
    as_tokens = kl_penalised_rewards(logprobs, ref_logprobs, at_end, RESPONSE_MASK, beta)[0]
    torch.testing.assert_close(as_tokens, as_score)
    per_token = torch.randn(PAD_MASK.shape, generator=torch.Generator().manual_seed(0))
    rewards, kl_per_token = kl_penalised_rewards(logprobs, ref_logprobs, per_token,
                                                 RESPONSE_MASK, beta)
    torch.testing.assert_close(rewards, torch.where(RESPONSE_MASK, per_token, 0.0)
                               - beta * kl_per_token)
    assert rewards[~RESPONSE_MASK].abs().max() == 0


# -----------------------------------------------------------------------------
# KL estimators


def test_k1_and_k3_estimate_the_true_kl_and_k3_is_never_negative():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    p_ref = torch.tensor([0.4, 0.3, 0.2, 0.1])
    true_kl = (p * (p.log() - p_ref.log())).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=g)  # x ~ policy
    logprobs, ref_logprobs = p.log()[samples], p_ref.log()[samples]
    k1, k3 = kl_k1(logprobs, ref_logprobs), kl_k3(logprobs, ref_logprobs)
    assert (k3 >= 0).all()
    assert (k1 < 0).any()  # k1 is an unbiased average of numbers of both signs
    assert k1.mean().item() == pytest.approx(true_kl, rel=0.05)
    assert k3.mean().item() == pytest.approx(true_kl, rel=0.05)
    assert k3.var() < k1.var()  # the point of k3 when the distributions are close


def test_k3_is_exact_zero_for_identical_logprobs():
    logprobs = torch.log(torch.tensor([0.3, 0.7]))
    assert kl_k3(logprobs, logprobs).abs().max() == 0


# -----------------------------------------------------------------------------
# Whitening, masked statistics, entropy


def test_whiten_gives_mean_zero_std_one_over_masked_entries_and_ignores_the_rest():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(PAD_MASK.shape, generator=g) * 5 + 3
    white = whiten(x, RESPONSE_MASK)
    kept = white[RESPONSE_MASK]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert white[~RESPONSE_MASK].abs().max() == 0
    junk = torch.where(RESPONSE_MASK, x, 1e6)
    torch.testing.assert_close(whiten(junk, RESPONSE_MASK), white)


def test_whiten_without_shifting_keeps_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(PAD_MASK.shape, generator=g) + 2
    scaled = whiten(x, RESPONSE_MASK, shift_mean=False)[RESPONSE_MASK]
    assert scaled.mean().item() == pytest.approx(x[RESPONSE_MASK].mean().item(), abs=1e-5)
    assert scaled.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)


def test_masked_mean_ignores_nan_in_padding_and_survives_an_empty_mask():
    x = torch.tensor([1.0, 3.0, float("nan")])
    assert masked_mean(x, torch.tensor([True, True, False])).item() == 2.0
    assert masked_mean(x, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_entropy_from_logits_against_the_definition():
    uniform = torch.zeros(1, 2, 8)  # entropy log 8
    certain = torch.tensor([0.0, 0.0, 1e4] + [0.0] * 5).expand(1, 1, 8)  # entropy 0
    logits = torch.cat([uniform, certain], dim=1)  # (1, 3, 8)
    mask = torch.tensor([[True, False, True]])
    assert entropy_from_logits(logits, mask).item() == pytest.approx(math.log(8) / 2)


# -----------------------------------------------------------------------------
# KL controllers


def test_adaptive_kl_controller_raises_beta_above_target_and_lowers_it_below():
    controller = AdaptiveKLController(init_beta=0.1, target_kl=6.0, horizon=10_000)
    controller.update(current_kl=7.0, n_steps=100)
    assert controller.beta == pytest.approx(0.1 * (1 + (7 / 6 - 1) * 100 / 10_000))
    raised = controller.beta
    controller.update(current_kl=3.0, n_steps=100)
    assert controller.beta < raised
    assert controller.beta == pytest.approx(raised * (1 - 0.2 * 100 / 10_000))  # clipped error


def test_adaptive_kl_controller_error_is_clipped():
    controller = AdaptiveKLController(init_beta=1.0, target_kl=1.0, horizon=100)
    controller.update(current_kl=1000.0, n_steps=10)
    assert controller.beta == pytest.approx(1.0 + 0.2 * 10 / 100)


def test_fixed_kl_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=64)
    assert controller.beta == 0.05


def test_prompts_that_fit_keeps_room_for_the_answer_and_counts_the_rest(capsys):
    prompts = [([1] * 5, "short"), ([1] * 9, "long"), ([1] * 8, "exact")]
    kept = prompts_that_fit(prompts, max_new_tokens=4, block_size=12)
    assert [q for _, q in kept] == ["short", "exact"]
    assert "1 prompts skipped" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="context of 12 tokens with --max_new_tokens 8: lower"):
        prompts_that_fit(prompts, max_new_tokens=8, block_size=12)


def test_a_critic_from_a_frozen_reward_model_is_trainable():
    # PPO freezes the reward model; a critic copied from it must still learn, trunk included
    reward_model = RewardModel(tiny_model()).requires_grad_(False)
    critic = Critic.from_reward_model(reward_model)
    assert all(p.requires_grad for p in critic.parameters())
    assert not any(p.requires_grad for p in reward_model.parameters())
