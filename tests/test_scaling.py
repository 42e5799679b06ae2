"""Compute-budget arithmetic and the IsoFLOP fit (nanollm/scaling.py), and the small in-process
runs the lessons train (nanollm/small_runs.py)."""

import copy
import math

import numpy as np
import pytest
import torch

from nanollm.dpo import response_logprob
from nanollm.losses import cross_entropy
from nanollm.model import GPTConfig
from nanollm.pairs import render_pairs, score_pairs
from nanollm.scaling import (generation_flops_per_token, isoflop_minimum, steps_for_budget,
                             tokens_for_budget, training_flops)
from nanollm.small_runs import (dpo_small, held_out_loss, mixed_batches, sft_small,
                                token_stream, train_small)
from nanollm.sft import sft_batch, sft_examples
from nanollm.tokenizer import Tokenizer


def test_a_budget_splits_into_the_steps_it_says():
    # 6 * 1,000 parameters * 512 tokens * 50 steps = 153.6 MFLOPs, worked by hand
    assert training_flops(1_000, 512 * 50) == 153_600_000
    assert tokens_for_budget(153_600_000, 1_000) == 25_600
    assert steps_for_budget(153_600_000, 1_000, tokens_per_step=512) == 50
    for n_params, tokens_per_step, steps in [(7_504, 512, 8_676), (166_848, 1024, 7)]:
        budget = training_flops(n_params, tokens_per_step * steps)
        assert steps_for_budget(budget, n_params, tokens_per_step) == steps
    assert steps_for_budget(1.0, 1_000, 512) == 1  # never zero steps


def test_a_generated_token_costs_a_third_of_a_trained_one():
    assert generation_flops_per_token(20_000) == 40_000
    assert 3 * generation_flops_per_token(20_000) == training_flops(20_000, 1)


def test_isoflop_minimum_recovers_a_known_parabola():
    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    losses = 0.2 * (np.log(n) - math.log(5e4)) ** 2 + 1.5  # minimum at N = 50,000
    assert isoflop_minimum(n, losses) == pytest.approx(5e4, rel=1e-6)
    with pytest.raises(ValueError, match="curve upwards"):
        isoflop_minimum(n, -losses)


def test_token_stream_separates_texts_with_the_separator():
    tokenizer = Tokenizer.train("", vocab_size=256)  # bytes only
    stream = token_stream(tokenizer, ["ab", "c"])
    assert stream.tolist() == [97, 98, tokenizer.eot, 99, tokenizer.eot]


def test_a_small_run_learns_and_is_reproducible():
    tokenizer = Tokenizer.train("", vocab_size=256)
    data = token_stream(tokenizer, ["the dog says woof. the cat says meow."] * 40)
    config = GPTConfig(block_size=16, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2,
                       n_embd=16)
    before = held_out_loss(train_small(config, data, steps=0, batch_size=8)[0], data)
    model, losses = train_small(config, data, steps=60, batch_size=8, lr=1e-2)
    again, losses_again = train_small(config, data, steps=60, batch_size=8, lr=1e-2)
    assert before == pytest.approx(math.log(tokenizer.vocab_size), abs=0.3)  # a uniform guess
    assert held_out_loss(model, data) < before - 1.5
    assert losses == losses_again  # the same seed: the same weights and windows
    assert not model.training
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_mixed_batches_take_the_second_source_at_the_share_asked():
    generator = torch.Generator().manual_seed(0)
    for share in (0.0, 0.25, 1.0):
        draw = mixed_batches(lambda: "chat", lambda: "text", share, generator)
        drawn = [draw() for _ in range(4000)]
        assert drawn.count("text") / len(drawn) == pytest.approx(share, abs=0.02)


def test_sft_small_learns_the_answers_and_replay_keeps_the_text():
    tokenizer = Tokenizer.train("", vocab_size=256)
    text = token_stream(tokenizer, ["the sky is blue. grass is green."] * 60)
    config = GPTConfig(block_size=48, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2,
                       n_embd=32)
    chats = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]]
    x, y = sft_batch(sft_examples(tokenizer, chats, config.block_size)[0], tokenizer.pad)

    def answer_loss(model):  # the loss on the assistant's tokens of the one chat
        with torch.no_grad():
            return cross_entropy(model(x), y).item()

    pretrained, _ = train_small(config, text, steps=150, batch_size=8, lr=1e-2)
    text_loss = {}
    for share in (0.0, 0.5):
        model = copy.deepcopy(pretrained)
        sft_small(model, tokenizer, chats, steps=60, batch_size=4, lr=1e-2, replay=text,
                  replay_share=share)
        assert not model.training
        assert answer_loss(model) < answer_loss(pretrained) / 4  # the answer is learned
        text_loss[share] = held_out_loss(model, text)
    # replayed text is forgotten less than text left out of fine-tuning altogether
    assert text_loss[0.5] < text_loss[0.0]


def test_dpo_small_raises_the_chosen_answers_against_a_frozen_reference():
    tokenizer = Tokenizer.train("", vocab_size=256)
    config = GPTConfig(block_size=48, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2,
                       n_embd=32)
    policy = train_small(config, token_stream(tokenizer, ["yes. no."] * 50), steps=50,
                         batch_size=8, lr=1e-2)[0]
    start = copy.deepcopy(policy)
    pairs = [{"prompt": f"is {i} even?", "chosen": "yes.", "rejected": "no."} for i in range(8)]
    losses = dpo_small(policy, tokenizer, pairs, steps=30, batch_size=4, beta=0.1, lr=1e-3)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at the start
    assert losses[-1] < 0.5
    rendered, _ = render_pairs(tokenizer, pairs, config.block_size)

    def margin(model):  # log p(chosen) - log p(rejected), summed over the pairs
        chosen, rejected = score_pairs(lambda *b: response_logprob(model, *b), rendered,
                                       tokenizer.pad)
        return (chosen - rejected).sum().item()

    with torch.no_grad():
        assert margin(policy) > margin(start) + 5
    assert not policy.training
