"""Tests for preference pairs (nanollm/world/preferences.py): template pairs labelled by a
persona, the split of their wrong answers, label noise; pairs of a model's own samples, their
styles, and the cache that lets two scripts share them."""

import copy
import math
import random

import pytest
import torch

import nanollm.world.preferences as preferences
from nanollm.model import GPT, GPTConfig
from nanollm.tokenizer import Tokenizer
from nanollm.world import PERSONAS, RIGHT_STYLES, World, check_answer
from nanollm.world.evaluate import ANSWER_STYLES, answer_style
from nanollm.world.preferences import (alignment_pairs, choose_first, preference_pairs, relabel,
                                       sampled_preference_pairs)
from nanollm.world.rater import answer_pattern, names_an_answer


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


# -----------------------------------------------------------------------------
# template pairs

def test_preference_pairs_are_labelled_by_the_persona(world):
    for persona in PERSONAS:
        pairs = preference_pairs(world, "taught", 300, persona=persona, seed=0)
        rater = PERSONAS[persona]
        assert len(pairs) == 300
        for pair in pairs:
            fact = world.fact(pair["family"], pair["entity"])
            assert pair["chosen"] != pair["rejected"] and pair["prompt"].strip()
            margin = rater.score(fact, pair["chosen"], world) - rater.score(
                fact, pair["rejected"], world)
            assert margin > 0
    assert pairs == preference_pairs(world, "taught", 300, persona=persona, seed=0)


def test_preference_pairs_keep_the_split(world):
    taught = {(f.family, f.entity) for f in world.taught}
    held_out = {(f.family, f.entity) for f in world.held_out}
    pairs = preference_pairs(world, "taught", 500, seed=1)
    assert all((p["family"], p["entity"]) in taught for p in pairs)
    pairs = preference_pairs(world, "held_out", 500, seed=1)
    assert all((p["family"], p["entity"]) in held_out for p in pairs)


def test_wrong_answers_come_from_the_pairs_split(world):
    # A wrong answer of a taught pair is never a held-out entity's answer (familiarity would tell
    # it from the right one), and a held-out pair's wrong answer is another held-out answer.
    for split in ("taught", "held_out"):
        for pair in preference_pairs(world, split, 400, seed=4):
            fact = world.fact(pair["family"], pair["entity"])
            if fact.family == "sum":  # numbers: a sum's text also states its operands
                continue
            others = world.answers(fact.family) - world.split_answers(split, fact.family)
            for side in ("chosen", "rejected"):
                if pair[f"{side}_style"] in ("wrong", "wrong_flattery", "hedge"):
                    named = [a for a in others if answer_pattern(a).search(pair[side])]
                    assert not named, (split, pair[side], named)
                    assert names_an_answer(fact, pair[side], world)
    assert world.split_answers("held_out", "capital") == {
        f.answer for f in world.held_out if f.family == "capital"}


def test_preference_pairs_draw_only_the_styles_asked_for(world):
    pairs = preference_pairs(world, "taught", 200, persona="flattery", seed=3,
                             styles=("sentence", "flattery"))
    # the same right answer with and without a compliment: the flattery rater takes the compliment
    assert all(p["chosen_style"] == "flattery" and p["rejected_style"] == "sentence"
               and p["chosen"].endswith(p["rejected"]) for p in pairs)
    pairs = preference_pairs(world, "taught", 200, seed=3, styles=RIGHT_STYLES)
    assert {p["chosen_style"] for p in pairs} | {p["rejected_style"] for p in pairs} == set(
        RIGHT_STYLES)
    assert all(check_answer(world.fact(p["family"], p["entity"]), p[side], world)
               for p in pairs for side in ("chosen", "rejected"))
    for bad in (("terse",), ("terse", "terse"), ("terse", "rude")):
        with pytest.raises(ValueError, match="styles"):
            preference_pairs(world, "taught", 1, styles=bad)


def test_label_noise_flips_about_its_share(world, capsys):
    rater = PERSONAS["default"]
    pairs = preference_pairs(world, "taught", 2000, noise=0.3, seed=2)
    flipped = 0
    for pair in pairs:
        fact = world.fact(pair["family"], pair["entity"])
        flipped += rater.score(fact, pair["chosen"], world) < rater.score(
            fact, pair["rejected"], world)
    assert 0.26 < flipped / len(pairs) < 0.34
    assert f"{flipped} labels flipped" in capsys.readouterr().out


def test_the_rater_chooses_by_bradley_terry_on_the_score_difference():
    rng = random.Random(0)
    assert all(choose_first(0.3, 0.2, 0.0, rng) for _ in range(100))  # exact: higher wins
    for difference in (0.02, 0.1, 0.3):
        share = sum(choose_first(difference, 0.0, 0.1, rng) for _ in range(20000)) / 20000
        assert abs(share - 1 / (1 + math.exp(-difference / 0.1))) < 0.015


def test_pairs_labelled_at_a_temperature_go_against_the_score_where_it_barely_differs(world):
    rater = PERSONAS["default"]
    pairs = preference_pairs(world, "taught", 3000, seed=2, temperature=0.1)
    assert pairs != preference_pairs(world, "taught", 3000, seed=2)  # exact labels differ
    against, expected = 0, 0.0
    for pair in pairs:
        fact = world.fact(pair["family"], pair["entity"])
        chosen = rater.score(fact, pair["chosen"], world)
        rejected = rater.score(fact, pair["rejected"], world)
        against += chosen < rejected
        expected += 1 / (1 + math.exp(abs(chosen - rejected) / 0.1))  # P(lower one chosen)
        if check_answer(fact, pair["rejected"], world):  # a right answer rejected: only ever
            assert check_answer(fact, pair["chosen"], world)  # for another right answer
    assert abs(against - expected) < 4 * math.sqrt(expected)  # a binomial's spread
    assert 0.02 < against / len(pairs) < 0.2


# -----------------------------------------------------------------------------
# pairs of a model's own answers, and their cache

@pytest.fixture(scope="module")
def tiny(world):
    """An untrained one-layer model and a small tokenizer: its answers are noise, often in no
    style at all, which is all the plumbing needs."""
    text = " ".join(chat["messages"][-1]["content"] for chat in world.sft_conversations(300))
    tokenizer = Tokenizer.train(text, vocab_size=300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    return model, tokenizer


def test_sampled_pairs_are_ordered_by_the_rater_and_know_their_styles(world, tiny):
    model, tokenizer = tiny
    pairs = sampled_preference_pairs(model, tokenizer, world, "taught", 12, max_new_tokens=6,
                                     batch_size=16)
    rater = PERSONAS["default"]
    assert len(pairs) == 12
    for pair in pairs:
        fact = world.fact(pair["family"], pair["entity"])
        assert fact in world.taught
        assert rater.score(fact, pair["chosen"], world) > rater.score(fact, pair["rejected"], world)
        for side in ("chosen", "rejected"):
            assert pair[f"{side}_style"] == answer_style(fact, pair[side], world)
            assert pair[f"{side}_style"] in ANSWER_STYLES


def test_alignment_pairs_are_read_back_from_the_cache_for_the_same_model_only(
        world, tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    path = str(tmp_path / "cache" / "pairs.jsonl")
    kw = dict(n_template=10, n_sampled=6, max_new_tokens=6, cache_path=path)
    sampled = []
    real_sampler = preferences.sampled_preference_pairs

    def counting_sampler(*args, **kwargs):
        sampled.append(1)
        return real_sampler(*args, **kwargs)

    monkeypatch.setattr(preferences, "sampled_preference_pairs", counting_sampler)
    pairs = alignment_pairs(model, tokenizer, world, **kw)
    assert len(pairs) == 16 and len(sampled) == 1
    assert {p["chosen_style"] for p in pairs} & set(RIGHT_STYLES)  # template pairs are there
    assert alignment_pairs(model, tokenizer, world, **kw) == pairs
    assert len(sampled) == 1  # read back, not sampled again
    assert alignment_pairs(model, tokenizer, world, **{**kw, "seed": 1}) != pairs
    assert len(sampled) == 2  # other arguments: sampled again
    other_model = copy.deepcopy(model)
    with torch.no_grad():
        next(other_model.parameters()).add_(0.01)
    alignment_pairs(other_model, tokenizer, world, **{**kw, "seed": 1})
    assert len(sampled) == 3  # another model: sampled again
    assert not (tmp_path / "cache" / "pairs.jsonl.tmp").exists()


def test_relabel_keeps_the_answers_and_lets_another_rater_choose(world):
    pairs = preference_pairs(world, "taught", 400, seed=3)
    assert relabel(pairs, world, "default") == pairs  # the same rater, exact: nothing changes
    cautious = PERSONAS["cautious"]
    for persona in ("cautious", "flattery"):
        rater = PERSONAS[persona]
        for old, new in zip(pairs, relabel(pairs, world, persona)):
            fact = world.fact(new["family"], new["entity"])
            assert {new["chosen"], new["rejected"]} == {old["chosen"], old["rejected"]}
            assert rater.score(fact, new["chosen"], world) > rater.score(fact, new["rejected"],
                                                                            world)
    # Bradley-Terry at temperature 0.5: the cautious rater prefers a right sentence to "I am
    # not sure" with probability sigmoid(score difference / 0.5), about 0.7 (1 - 0.5 - words)
    right_vs_unsure = preference_pairs(world, "taught", 3000, seed=4, styles=("sentence", "unsure"))
    assert all(p["chosen_style"] == "sentence" for p in right_vs_unsure)  # the default, exactly

    def p_right(pair):
        fact = world.fact(pair["family"], pair["entity"])
        margin = cautious.score(fact, pair["chosen"], world) - cautious.score(
            fact, pair["rejected"], world)
        return 1 / (1 + math.exp(-margin / 0.5))

    noisy = relabel(right_vs_unsure, world, cautious, temperature=0.5, seed=0)
    won = sum(p["chosen_style"] == "sentence" for p in noisy) / len(noisy)
    expected = sum(map(p_right, right_vs_unsure)) / len(right_vs_unsure)
    assert 0.6 < expected < 0.8 and won == pytest.approx(expected, abs=0.03)
