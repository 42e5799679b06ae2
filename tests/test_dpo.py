"""DPO and its variants against values worked out by hand, and the log-probabilities they read."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from nanollm.dpo import (chosen_nll, dpo_loss, dpo_metrics, format_token_logratios,
                         implied_reward, ipo_loss, response_logprob, token_logratios)
from nanollm.model import GPT, GPTConfig

TINY = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)

#                        pad  prompt     response     pad
PAD_MASK = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1, 1, 0, 0, 0],
                         [0, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
RESPONSE_MASK = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 0],
                              [0, 0, 0, 0, 1, 1, 0, 0, 0],
                              [0, 0, 0, 0, 1, 1, 1, 1, 1]], dtype=torch.bool)

# One pair worked out by hand, beta = 0.1:
#   chosen_logratio   = -10 - (-11) =  1
#   rejected_logratio = -12 - (-11) = -1
#   z = beta * (1 - (-1)) = 0.2
#   DPO:  -log sigmoid(0.2) = log(1 + e^-0.2) = log(1.8187308) = 0.5981389
#   implied rewards: chosen 0.1 * 1 = 0.1, rejected 0.1 * -1 = -0.1
#   conservative DPO, eps = 0.1: 0.9 * log(1 + e^-0.2) + 0.1 * log(1 + e^0.2)
#                                = 0.9 * 0.5981389 + 0.1 * 0.7981389 = 0.6181389
#   IPO: (2 - 1 / (2 * 0.1))^2 = (2 - 5)^2 = 9;  with beta = 0.5: (2 - 1)^2 = 1
POLICY_CHOSEN, POLICY_REJECTED = torch.tensor([-10.0]), torch.tensor([-12.0])
REF_CHOSEN, REF_REJECTED = torch.tensor([-11.0]), torch.tensor([-11.0])
LOGPS = (POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**TINY))


def random_ids(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], PAD_MASK.shape, generator=g)


def test_dpo_loss_worked_out_by_hand():
    losses, chosen_rewards, rejected_rewards = dpo_loss(*LOGPS, beta=0.1)
    assert losses.item() == pytest.approx(0.5981389, abs=1e-6)
    assert chosen_rewards.item() == pytest.approx(0.1)
    assert rejected_rewards.item() == pytest.approx(-0.1)


def test_conservative_dpo_worked_out_by_hand():
    losses, _, _ = dpo_loss(*LOGPS, beta=0.1, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.6181389, abs=1e-6)


@pytest.mark.parametrize("beta,expected", [(0.1, 9.0), (0.5, 1.0)])
def test_ipo_loss_worked_out_by_hand(beta, expected):
    assert ipo_loss(*LOGPS, beta=beta).item() == pytest.approx(expected)


def test_dpo_loss_is_log_two_when_the_policy_is_the_reference():
    policy = tiny_model()
    reference = copy.deepcopy(policy)
    chosen, rejected = random_ids(1), random_ids(2)
    policy_chosen = response_logprob(policy, chosen, PAD_MASK, RESPONSE_MASK)
    policy_rejected = response_logprob(policy, rejected, PAD_MASK, RESPONSE_MASK)
    with torch.no_grad():
        ref_chosen = response_logprob(reference, chosen, PAD_MASK, RESPONSE_MASK)
        ref_rejected = response_logprob(reference, rejected, PAD_MASK, RESPONSE_MASK)
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected,
                                                        ref_chosen, ref_rejected, beta=0.1)
    torch.testing.assert_close(losses, torch.full((3,), math.log(2)))
    assert chosen_rewards.abs().max() == 0 and rejected_rewards.abs().max() == 0
    # label smoothing mixes log 2 with log 2
    smoothed, _, _ = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                              beta=0.1, label_smoothing=0.2)
    torch.testing.assert_close(smoothed, torch.full((3,), math.log(2)))


def test_one_gradient_step_raises_the_chosen_minus_rejected_margin():
    policy = tiny_model()
    reference = copy.deepcopy(policy).eval()
    chosen, rejected = random_ids(1), random_ids(2)
    beta = 0.5
    with torch.no_grad():
        ref_chosen = response_logprob(reference, chosen, PAD_MASK, RESPONSE_MASK)
        ref_rejected = response_logprob(reference, rejected, PAD_MASK, RESPONSE_MASK)

    def margin_and_loss():
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            response_logprob(policy, chosen, PAD_MASK, RESPONSE_MASK),
            response_logprob(policy, rejected, PAD_MASK, RESPONSE_MASK),
            ref_chosen, ref_rejected, beta)
        return dpo_metrics(chosen_rewards, rejected_rewards)["margin"], losses.mean()

    margin_before, loss = margin_and_loss()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    margin_after, loss_after = margin_and_loss()
    assert margin_before == 0.0
    assert margin_after > 1e-3
    assert loss_after.item() < loss.item()


def test_response_logprob_is_the_sum_over_response_tokens_only():
    model, ids = tiny_model().eval(), random_ids(1)
    with torch.no_grad():
        total = response_logprob(model, ids, PAD_MASK, RESPONSE_MASK)
        mean = response_logprob(model, ids, PAD_MASK, RESPONSE_MASK, average=True)
        log_softmax = F.log_softmax(model(ids, pad_mask=PAD_MASK), dim=-1)  # (B, T, V)
    for b in range(ids.size(0)):
        positions = RESPONSE_MASK[b].nonzero().flatten().tolist()
        # the token at t is predicted by the logits at t - 1
        expected = sum(log_softmax[b, t - 1, ids[b, t]].item() for t in positions)
        assert total[b].item() == pytest.approx(expected, abs=1e-5)
        assert mean[b].item() == pytest.approx(expected / len(positions), abs=1e-5)


def test_response_logprob_ignores_padding_ids_and_prompt_scores():
    model, ids = tiny_model().eval(), random_ids(1)
    other_padding = torch.where(PAD_MASK, ids, random_ids(7))
    with torch.no_grad():
        total = response_logprob(model, ids, PAD_MASK, RESPONSE_MASK)
        repadded = response_logprob(model, other_padding, PAD_MASK, RESPONSE_MASK)
        with_prompt = response_logprob(model, ids, PAD_MASK, PAD_MASK)
    assert (other_padding != ids).any()
    torch.testing.assert_close(repadded, total)
    # scoring the prompt too gives a different (more negative) number: the mask is what keeps it out
    assert (with_prompt < total - 1e-3).all()


def test_token_logratios_sum_to_the_log_ratio_of_each_answer():
    policy, reference, ids = tiny_model(seed=1).eval(), tiny_model(seed=2).eval(), random_ids(3)
    ratios = token_logratios(policy, reference, ids, PAD_MASK, RESPONSE_MASK)  # (B, T)
    with torch.no_grad():
        log_ratio = (response_logprob(policy, ids, PAD_MASK, RESPONSE_MASK)
                     - response_logprob(reference, ids, PAD_MASK, RESPONSE_MASK))  # (B,)
        policy_lsm = F.log_softmax(policy(ids, pad_mask=PAD_MASK), dim=-1)  # (B, T, V)
        ref_lsm = F.log_softmax(reference(ids, pad_mask=PAD_MASK), dim=-1)
    torch.testing.assert_close(ratios.sum(dim=1), log_ratio)
    assert (ratios[~RESPONSE_MASK] == 0).all()  # prompt and padding carry nothing
    b, t = 2, 7  # one answer token, by hand: predicted by the logits at t - 1
    expected = (policy_lsm[b, t - 1, ids[b, t]] - ref_lsm[b, t - 1, ids[b, t]]).item()
    assert ratios[b, t].item() == pytest.approx(expected, abs=1e-5)
    assert (ratios[RESPONSE_MASK] != 0).all()  # two different models: every answer token moved


def test_format_token_logratios_reads_sum_then_each_token():
    class Letters:  # a tokenizer whose token i is the i-th letter
        def decode(self, ids):
            return "".join(chr(ord("a") + i) for i in ids)
    line = format_token_logratios(Letters(), torch.tensor([0, 2]), torch.tensor([-1.25, 0.5]))
    assert line == "   -0.8 = 'a'-1.2 'c'+0.5"  # the sum -0.75, 7 wide; then each token


def test_dpo_metrics():
    metrics = dpo_metrics(torch.tensor([0.3, -0.1]), torch.tensor([0.1, 0.2]))
    assert metrics["accuracy"] == 0.5
    assert metrics["margin"] == pytest.approx(((0.3 - 0.1) + (-0.1 - 0.2)) / 2)
    assert metrics["chosen"] == pytest.approx(0.1)
    assert metrics["rejected"] == pytest.approx(0.15)


def test_implied_reward_is_detached():
    policy_logps = torch.tensor([-3.0], requires_grad=True)
    reward = implied_reward(policy_logps, torch.tensor([-4.0]), beta=0.2)
    assert reward.item() == pytest.approx(0.2) and not reward.requires_grad


def test_chosen_nll_is_the_mean_token_nll_of_the_chosen_answers():
    # -10 nats over 4 tokens and -3 over 1: 2.5 and 3 nats per token
    nll = chosen_nll(torch.tensor([-10.0, -3.0]), torch.tensor([4, 1]))
    assert torch.allclose(nll, torch.tensor([2.5, 3.0]))


def test_chosen_nll_equals_cross_entropy_on_the_answer_tokens():
    model, ids = tiny_model().eval(), random_ids(1)
    with torch.no_grad():
        logps = response_logprob(model, ids, PAD_MASK, RESPONSE_MASK)
        logits = model(ids, pad_mask=PAD_MASK)
    nll = chosen_nll(logps, RESPONSE_MASK.sum(1))
    for row in range(ids.shape[0]):
        # position t predicts token t + 1: the answer tokens' predictions sit one to the left
        targets = RESPONSE_MASK[row, 1:]
        expected = F.cross_entropy(logits[row, :-1][targets], ids[row, 1:][targets])
        assert nll[row].item() == pytest.approx(expected.item(), abs=1e-5)
