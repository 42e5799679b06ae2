"""The reward model: the Bradley-Terry loss and its gradient, and where the score is read."""

import pytest
import torch
import torch.nn.functional as F

from nanollm.model import GPT, GPTConfig
from nanollm.reward import bradley_terry_loss, last_token_index, pair_sequence_scores, \
    preference_accuracy, sequence_rewards

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


def test_sequence_rewards_read_the_score_at_the_last_response_token():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    torch.nn.init.normal_(model.scalar_head.weight)  # the head starts at 0: make positions differ
    ids = torch.randint(0, TINY["vocab_size"], (3, 7), generator=torch.Generator().manual_seed(1))
    #                 pad  pad  prompt   response     pad
    pad_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1, 0, 0],
                             [0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    response_mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1],
                                  [0, 0, 1, 1, 0, 0, 0],
                                  [0, 0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        rewards = sequence_rewards(model, ids, pad_mask, response_mask)
        scores = model.score(ids, pad_mask=pad_mask)
    expected = torch.stack([scores[0, 6], scores[1, 3], scores[2, 5]])
    torch.testing.assert_close(rewards, expected)
    assert len(set(scores[1].tolist())) == ids.size(1)  # a wrong column would give another value


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
