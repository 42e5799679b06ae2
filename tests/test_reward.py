"""The reward model: the Bradley-Terry loss and its gradient, and where the score is read."""

import pytest
import torch
import torch.nn.functional as F

from nanollm.logprobs import sequence_logprobs
from nanollm.model import GPT, GPTConfig, LIKELIHOOD_LR
from nanollm.reward import (LIKELIHOOD_FLOOR, answer_token_logprobs, bradley_terry_loss,
                            last_token_index, normalise_reward_head, pair_sequence_scores,
                            preference_accuracy, sequence_rewards, token_rewards)
from nanollm.optim import set_lr

TINY = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16, scalar_head=True)


def test_bradley_terry_loss_is_softplus_of_minus_margin_with_the_right_gradient():
    g = torch.Generator().manual_seed(0)
    chosen = (torch.randn(6, generator=g) * 3).requires_grad_()
    rejected = torch.randn(6, generator=g) * 3
    loss = bradley_terry_loss(chosen, rejected)
    margin = (chosen - rejected).detach()
    torch.testing.assert_close(loss, torch.log1p(torch.exp(-margin)).mean())
    torch.testing.assert_close(loss, -F.logsigmoid(margin).mean())
    loss.backward()
    # d/dr_c of mean(-log sigmoid(r_c - r_r)) = -(1 - sigmoid(m)) / B = -sigmoid(-m) / B
    torch.testing.assert_close(chosen.grad, -torch.sigmoid(-margin) / len(margin))


def test_bradley_terry_loss_stays_finite_for_huge_margins():
    loss = bradley_terry_loss(torch.tensor([-200.0, 200.0]), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(loss, torch.tensor(100.0))  # (200 + ~0) / 2


def test_last_token_index_left_right_and_both_padded():
    mask = torch.tensor([[0, 0, 1, 1, 1],   # left-padded
                         [1, 1, 1, 0, 0],   # right-padded
                         [0, 1, 1, 0, 0],   # both
                         [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert last_token_index(mask).tolist() == [4, 2, 2, 4]


def test_last_token_index_rejects_an_empty_row():
    with pytest.raises(ValueError, match="empty"):
        last_token_index(torch.tensor([[True, False], [False, False]]))


def padded_batch():
    """Token ids (3, 7) with a left-, a right- and a both-padded row, and their masks."""
    ids = torch.randint(0, TINY["vocab_size"], (3, 7), generator=torch.Generator().manual_seed(1))
    #                 pad  pad  prompt   response     pad
    pad_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1, 0, 0],
                             [0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    response_mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1],
                                  [0, 0, 1, 1, 0, 0, 0],
                                  [0, 0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    return ids, pad_mask, response_mask


def test_sequence_rewards_read_the_score_at_the_last_response_token():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    torch.nn.init.normal_(model.scalar_head.weight)  # the head starts at 0: make positions differ
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        rewards = sequence_rewards(model, ids, pad_mask, response_mask)
        scores = model.score(ids, pad_mask=pad_mask)
    expected = torch.stack([scores[0, 6], scores[1, 3], scores[2, 5]])
    torch.testing.assert_close(rewards, expected)
    assert len(set(scores[1].tolist())) == ids.size(1)  # a wrong column would give another value


def test_answer_token_logprobs_are_the_response_tokens_logprobs_and_0_elsewhere():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        got = answer_token_logprobs(model, model.hidden(ids, pad_mask=pad_mask), ids,
                                    response_mask)  # (B, T)
        every_token = sequence_logprobs(model, ids, pad_mask)  # (B, T), the reference
        logits = model(ids[1:2, :5])[0]  # (5, V): row 1 has no padding before its answer
    torch.testing.assert_close(got, every_token * response_mask)
    assert (got[response_mask] < 0).all() and (got[~response_mask] == 0).all()
    # and by hand: row 1's answer tokens 2 and 3 are predicted from positions 1 and 2
    torch.testing.assert_close(got[1, 2], logits[1].log_softmax(-1)[ids[1, 2]])
    torch.testing.assert_close(got[1, 3], logits[2].log_softmax(-1)[ids[1, 3]])


def test_token_rewards_pay_w_times_each_logprob_and_the_score_at_the_end():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    torch.nn.init.normal_(model.scalar_head.weight)
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        head_only = sequence_rewards(model, ids, pad_mask, response_mask)  # w starts at 0
        model.scalar_head.likelihood_weight.bias.fill_(0.7)  # the same weight on every token
        per_token = token_rewards(model, ids, pad_mask, response_mask)  # (B, T)
        both = sequence_rewards(model, ids, pad_mask, response_mask)
        logprobs = sequence_logprobs(model, ids, pad_mask) * response_mask  # (B, T)
        scores = model.score(ids, pad_mask=pad_mask)  # (B, T)
    expected = 0.7 * logprobs
    for row, last in enumerate([6, 3, 5]):
        expected[row, last] += scores[row, last]
    torch.testing.assert_close(per_token, expected)
    torch.testing.assert_close(both, per_token.sum(1))
    torch.testing.assert_close(both, head_only + 0.7 * logprobs.sum(1))
    assert (per_token[~response_mask] == 0).all()  # nothing on the prompt or on padding


def test_a_tokens_log_likelihood_counts_down_to_the_floor_only():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(40.0)  # sharp logits: most tokens far below the floor
        model.scalar_head.likelihood_weight.bias.fill_(0.7)
        per_token = token_rewards(model, ids, pad_mask, response_mask)  # (B, T), head score 0
        logprobs = sequence_logprobs(model, ids, pad_mask) * response_mask  # (B, T)
    assert (logprobs < LIKELIHOOD_FLOOR).any()
    assert (logprobs[response_mask] > LIKELIHOOD_FLOOR).any()
    torch.testing.assert_close(per_token, 0.7 * logprobs.clamp(min=LIKELIHOOD_FLOOR))


def test_each_tokens_likelihood_weight_is_read_from_the_state_before_it():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    weight = model.scalar_head.likelihood_weight
    torch.nn.init.normal_(weight.weight)
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        weight.bias.fill_(0.3)
        per_token = token_rewards(model, ids, pad_mask, response_mask)  # (B, T)
        model.scalar_head.weight.zero_()  # no head score: only the likelihood part is left
        model.scalar_head.bias.zero_()
        likelihood_only = token_rewards(model, ids, pad_mask, response_mask)
        hidden = model.hidden(ids, pad_mask=pad_mask)  # (B, T, C)
        logprobs = sequence_logprobs(model, ids, pad_mask)  # (B, T)
    assert (per_token[~response_mask] == 0).all()
    for row, col in response_mask.nonzero().tolist():  # a loop over answer tokens, by hand
        w = 0.3 + hidden[row, col - 1] @ weight.weight[0]
        torch.testing.assert_close(likelihood_only[row, col], w * logprobs[row, col])


def test_the_likelihood_weight_has_its_own_rate_on_the_trunks_schedule():
    model = GPT(GPTConfig(**TINY))
    optimizer = model.configure_optimizer(0.1, 1e-4)
    weight_group = optimizer.param_groups[-1]
    assert weight_group["params"] == [model.scalar_head.likelihood_weight.bias]
    assert weight_group["weight_decay"] == 0.0
    assert weight_group["lr"] == pytest.approx(LIKELIHOOD_LR)  # whatever the trunk's rate
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    set_lr(optimizer, 2e-5)  # warm-up or decay to a fifth of the peak: the same for it
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [2e-5, 2e-5, LIKELIHOOD_LR / 5])


def test_normalising_rescales_the_likelihood_term_too():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    torch.nn.init.normal_(model.scalar_head.weight)
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        model.scalar_head.likelihood_weight.bias.fill_(0.5)
        torch.nn.init.normal_(model.scalar_head.likelihood_weight.weight)
        before = sequence_rewards(model, ids, pad_mask, response_mask)
        normalise_reward_head(model, before)
        after = sequence_rewards(model, ids, pad_mask, response_mask)
    torch.testing.assert_close(after, (before - before.mean()) / before.std())


def test_preference_accuracy_counts_ties_as_wrong():
    chosen = torch.tensor([2.0, 1.0, 0.0, -1.0])
    rejected = torch.tensor([1.0, 1.0, 1.0, -2.0])
    assert preference_accuracy(chosen, rejected) == 0.5


def test_pair_scores_equal_each_answer_scored_alone():
    # Pairs of different lengths, padded into one batch of 2B rows: every reward must equal the
    # reward of that answer run through the model alone, unpadded.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    torch.nn.init.normal_(model.scalar_head.weight)  # a head that reads something
    g = torch.Generator().manual_seed(1)

    def answer(prompt_len, answer_len):
        ids = torch.randint(1, 60, (prompt_len + answer_len,), generator=g).tolist()
        return ids, [False] * prompt_len + [True] * answer_len

    rendered = [(answer(3, 2), answer(3, 7)), (answer(9, 4), answer(9, 1)),
                (answer(5, 6), answer(5, 6))]
    chosen, rejected = pair_sequence_scores(model, rendered, pad_id=0, batch_size=2)
    for i, pair in enumerate(rendered):
        for side, got in zip(pair, (chosen[i], rejected[i])):
            ids, mask = (torch.tensor([x]) for x in side)
            alone = sequence_rewards(model, ids, torch.ones_like(mask), mask)
            torch.testing.assert_close(got, alone[0], rtol=1e-5, atol=1e-5)
    assert model.training is False and not chosen.requires_grad
