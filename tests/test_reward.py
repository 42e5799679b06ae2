"""The reward model: the Bradley-Terry loss and its gradient, where the reward is read, the
likelihood variant, and the stage on disk (its trunk is the SFT model's, GPT-2 export included)."""

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from nanollm.gpt2 import read_safetensors, save_hf_gpt2
from nanollm.logprobs import sequence_logprobs
from nanollm.model import GPT, GPTConfig
from nanollm.optim import set_lr
from nanollm.pairs import render_pairs
from nanollm.reward import (LIKELIHOOD_FLOOR, LIKELIHOOD_LR, RewardModel, answer_token_logprobs,
                            bradley_terry_loss, label_pairs, last_token_index, load_reward_model,
                            normalise_reward_head, pair_rewards, preference_accuracy,
                            save_reward_model)
from nanollm.tokenizer import Tokenizer

TINY = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)


@dataclass
class TrainConfig:  # what a checkpoint stores of the script that wrote it
    steps: int = 7


def save(out_dir, model):
    tokenizer = Tokenizer.train("the capital of Peru is Lima. " * 4, vocab_size=270)
    save_reward_model(out_dir, model, tokenizer, TrainConfig(), step=7)


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**TINY))


def reward_model(seed=0, likelihood=False, head_std=1.0):
    """A reward model on a random trunk, its head made non-zero so that positions differ."""
    model = RewardModel(tiny_gpt(seed), likelihood=likelihood).eval()
    torch.nn.init.normal_(model.head.weight, std=head_std)
    return model


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


LAST_ANSWER_TOKEN = [6, 3, 5]  # of padded_batch's rows


# -----------------------------------------------------------------------------
# The reward model: a GPT trunk and its own head


def test_state_dict_is_the_gpts_under_a_prefix_plus_the_heads():
    gpt_keys = {f"gpt.{k}" for k in tiny_gpt().state_dict()}
    assert set(RewardModel(tiny_gpt()).state_dict()) == gpt_keys | {"head.weight", "head.bias"}
    assert set(RewardModel(tiny_gpt(), likelihood=True).state_dict()) == gpt_keys | {
        "head.weight", "head.bias", "likelihood_weight.weight", "likelihood_weight.bias"}


def test_the_reward_is_the_head_on_the_state_at_the_last_answer_token():
    model = reward_model()
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        rewards = model(ids, pad_mask, response_mask)  # (3,)
        hidden = model.gpt.hidden(ids, pad_mask=pad_mask)  # (3, 7, C)
    w, b = model.head.weight[0], model.head.bias[0]
    by_hand = torch.stack([hidden[row, col] @ w + b for row, col in enumerate(LAST_ANSWER_TOKEN)])
    torch.testing.assert_close(rewards, by_hand)
    # a wrong column would give another value: every position's state scores differently
    assert len({round(x, 6) for x in (hidden[1] @ w).tolist()}) == ids.size(1)
    # and each row, cut out of its padding and scored alone, gets the same reward
    for row in range(3):
        real = pad_mask[row]
        with torch.no_grad():
            alone = model(ids[row][real][None], None, response_mask[row][real][None])
        torch.testing.assert_close(alone[0], rewards[row], atol=1e-5, rtol=1e-5)


def test_a_fresh_reward_model_scores_every_answer_0():
    model = RewardModel(tiny_gpt()).eval()
    with torch.no_grad():
        assert model(*padded_batch()).abs().max() == 0  # no preference before training


def test_plain_token_rewards_are_the_reward_on_the_last_answer_token_and_0_elsewhere():
    model = reward_model()
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        per_token = model.token_rewards(ids, pad_mask, response_mask)  # (3, 7)
        rewards = model(ids, pad_mask, response_mask)
    expected = torch.zeros(3, 7)
    expected[torch.arange(3), LAST_ANSWER_TOKEN] = rewards
    torch.testing.assert_close(per_token, expected)


def test_the_trunk_exports_to_gpt2_exactly_as_the_sft_model_it_came_from(tmp_path):
    # through a saved and reloaded stage "reward": nothing of the heads reaches the GPT-2 folder
    sft = tiny_gpt(seed=3)
    model = RewardModel(copy.deepcopy(sft))
    torch.nn.init.normal_(model.head.weight)
    save(tmp_path, model)
    loaded, _, _ = load_reward_model(tmp_path)
    save_hf_gpt2(sft, tmp_path / "sft")
    save_hf_gpt2(loaded.gpt, tmp_path / "reward")
    assert (tmp_path / "sft" / "config.json").read_text() == (
        tmp_path / "reward" / "config.json").read_text()
    sft_tensors = read_safetensors(tmp_path / "sft" / "model.safetensors")
    reward_tensors = read_safetensors(tmp_path / "reward" / "model.safetensors")
    assert sft_tensors.keys() == reward_tensors.keys()
    assert all(torch.equal(sft_tensors[k], reward_tensors[k]) for k in sft_tensors)


def test_preference_accuracy_counts_ties_as_wrong():
    chosen = torch.tensor([2.0, 1.0, 0.0, -1.0])
    rejected = torch.tensor([1.0, 1.0, 1.0, -2.0])
    assert preference_accuracy(chosen, rejected) == 0.5


def test_normalising_gives_mean_0_std_1_and_keeps_the_ranking():
    model = reward_model()
    torch.nn.init.constant_(model.head.bias, 3.0)
    ids = torch.randint(0, 60, (12, 9), generator=torch.Generator().manual_seed(0))
    response_mask = torch.zeros(12, 9, dtype=torch.bool)
    response_mask[:, 5:] = True
    with torch.no_grad():
        before = model(ids, None, response_mask)
        normalise_reward_head(model, before)
        after = model(ids, None, response_mask)
    assert abs(after.mean().item()) < 1e-4 and abs(after.std().item() - 1) < 1e-4
    assert torch.equal(before.argsort(), after.argsort())


def test_pair_rewards_equal_each_answer_scored_alone():
    # Pairs of different lengths, padded into one batch of 2B rows: every reward must equal the
    # reward of that answer run through the model alone, unpadded.
    model = reward_model().train()
    g = torch.Generator().manual_seed(1)

    def answer(prompt_len, answer_len):
        ids = torch.randint(1, 60, (prompt_len + answer_len,), generator=g).tolist()
        return ids, [False] * prompt_len + [True] * answer_len

    rendered = [(answer(3, 2), answer(3, 7)), (answer(9, 4), answer(9, 1)),
                (answer(5, 6), answer(5, 6))]
    chosen, rejected = pair_rewards(model, rendered, pad_id=0, batch_size=2)
    assert model.training and not chosen.requires_grad  # eval mode only while scoring
    model.eval()
    for i, pair in enumerate(rendered):
        for side, got in zip(pair, (chosen[i], rejected[i])):
            ids, mask = (torch.tensor([x]) for x in side)
            with torch.no_grad():
                alone = model(ids, torch.ones_like(mask), mask)
            torch.testing.assert_close(got, alone[0], rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# The variant: each answer token's log-likelihood, times a weight read from the state before it


def test_answer_token_logprobs_are_the_response_tokens_logprobs_and_0_elsewhere():
    gpt = tiny_gpt().eval()
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        got = answer_token_logprobs(gpt, gpt.hidden(ids, pad_mask=pad_mask), ids,
                                    response_mask)  # (B, T)
        every_token = sequence_logprobs(gpt, ids, pad_mask)  # (B, T), the reference
        logits = gpt(ids[1:2, :5])[0]  # (5, V): row 1 has no padding before its answer
    torch.testing.assert_close(got, every_token * response_mask)
    assert (got[response_mask] < 0).all() and (got[~response_mask] == 0).all()
    # and by hand: row 1's answer tokens 2 and 3 are predicted from positions 1 and 2
    torch.testing.assert_close(got[1, 2], logits[1].log_softmax(-1)[ids[1, 2]])
    torch.testing.assert_close(got[1, 3], logits[2].log_softmax(-1)[ids[1, 3]])


def test_token_rewards_pay_w_times_each_logprob_and_the_score_at_the_end():
    model = reward_model(likelihood=True)
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        head_only = model(ids, pad_mask, response_mask)  # w starts at 0
        model.likelihood_weight.bias.fill_(0.7)  # the same weight on every token
        per_token = model.token_rewards(ids, pad_mask, response_mask)  # (B, T)
        both = model(ids, pad_mask, response_mask)
        logprobs = sequence_logprobs(model.gpt, ids, pad_mask) * response_mask  # (B, T)
    expected = 0.7 * logprobs
    expected[torch.arange(3), LAST_ANSWER_TOKEN] += head_only
    torch.testing.assert_close(per_token, expected)
    torch.testing.assert_close(both, per_token.sum(1))
    torch.testing.assert_close(both, head_only + 0.7 * logprobs.sum(1))
    assert (per_token[~response_mask] == 0).all()  # nothing on the prompt or on padding


def test_a_tokens_log_likelihood_counts_down_to_the_floor_only():
    model = RewardModel(tiny_gpt(), likelihood=True).eval()  # head score 0
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        model.gpt.transformer.wte.weight.mul_(40.0)  # sharp logits: most tokens below the floor
        model.likelihood_weight.bias.fill_(0.7)
        per_token = model.token_rewards(ids, pad_mask, response_mask)  # (B, T)
        logprobs = sequence_logprobs(model.gpt, ids, pad_mask) * response_mask  # (B, T)
    assert (logprobs < LIKELIHOOD_FLOOR).any()
    assert (logprobs[response_mask] > LIKELIHOOD_FLOOR).any()
    torch.testing.assert_close(per_token, 0.7 * logprobs.clamp(min=LIKELIHOOD_FLOOR))


def test_each_tokens_likelihood_weight_is_read_from_the_state_before_it():
    model = RewardModel(tiny_gpt(), likelihood=True).eval()  # head score 0: likelihood only
    weight = model.likelihood_weight
    torch.nn.init.normal_(weight.weight)
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        weight.bias.fill_(0.3)
        per_token = model.token_rewards(ids, pad_mask, response_mask)  # (B, T)
        hidden = model.gpt.hidden(ids, pad_mask=pad_mask)  # (B, T, C)
        logprobs = sequence_logprobs(model.gpt, ids, pad_mask)  # (B, T)
    assert (per_token[~response_mask] == 0).all()
    for row, col in response_mask.nonzero().tolist():  # a loop over answer tokens, by hand
        w = 0.3 + hidden[row, col - 1] @ weight.weight[0]
        torch.testing.assert_close(per_token[row, col], w * logprobs[row, col])


def test_the_likelihood_weight_has_its_own_rate_on_the_trunks_schedule():
    model = RewardModel(tiny_gpt(), likelihood=True)
    optimizer = model.configure_optimizer(0.1, 1e-4)
    weight_group = optimizer.param_groups[-1]
    assert weight_group["params"] == [model.likelihood_weight.bias]
    assert weight_group["weight_decay"] == 0.0
    assert weight_group["lr"] == pytest.approx(LIKELIHOOD_LR)  # whatever the trunk's rate
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    set_lr(optimizer, 2e-5)  # warm-up or decay to a fifth of the peak: the same for it
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [2e-5, 2e-5, LIKELIHOOD_LR / 5])
    # the plain model has no such group: the trunk and its head, decayed or not
    plain = RewardModel(tiny_gpt()).configure_optimizer(0.1, 1e-4)
    assert [g["weight_decay"] for g in plain.param_groups] == [0.1, 0.0]


def test_normalising_rescales_the_likelihood_term_too():
    model = reward_model(likelihood=True)
    ids, pad_mask, response_mask = padded_batch()
    with torch.no_grad():
        model.likelihood_weight.bias.fill_(0.5)
        torch.nn.init.normal_(model.likelihood_weight.weight)
        before = model(ids, pad_mask, response_mask)
        normalise_reward_head(model, before)
        after = model(ids, pad_mask, response_mask)
    torch.testing.assert_close(after, (before - before.mean()) / before.std())


def test_a_saved_reward_model_loads_with_its_heads_and_variant(tmp_path):
    model = reward_model(likelihood=True)
    torch.nn.init.normal_(model.likelihood_weight.weight)
    save(tmp_path, model)
    loaded, _, state = load_reward_model(tmp_path)
    assert loaded.likelihood and state["stage"] == "reward" and state["step"] == 7
    saved = model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    assert loaded.state_dict().keys() == saved.keys()


def test_label_pairs_orders_each_pair_by_the_models_rewards():
    tokenizer = Tokenizer.train("", vocab_size=256)
    torch.manual_seed(0)
    model = RewardModel(GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=1,
                                      n_head=2, n_embd=16))).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    words = ["yes", "no", "maybe", "Lima", "woof", "7", "I am not sure", "Paris"]
    pairs = [{"prompt": f"question {i}?", "chosen": words[i % 8], "rejected": words[(i + 3) % 8],
              "chosen_style": "a", "rejected_style": "b"} for i in range(40)]
    relabelled, kept = label_pairs(model, tokenizer, pairs)
    rendered, _ = render_pairs(tokenizer, pairs, 64)
    chosen, rejected = pair_rewards(model, rendered, tokenizer.pad)
    assert kept == pytest.approx((chosen >= rejected).float().mean().item())
    assert 0 < kept < 1  # a random head: some labels kept, some swapped
    for pair, new, c, r in zip(pairs, relabelled, chosen.tolist(), rejected.tolist()):
        assert {new["chosen"], new["rejected"]} == {pair["chosen"], pair["rejected"]}
        assert new["chosen"] == (pair["chosen"] if c >= r else pair["rejected"])
        assert new["chosen_style"] == ("a" if new["chosen"] == pair["chosen"] else "b")
    with pytest.raises(ValueError, match="could not be scored"):
        label_pairs(model, tokenizer, pairs + [{"prompt": "q", "chosen": "x", "rejected": "x"}])
