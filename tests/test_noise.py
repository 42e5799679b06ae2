"""Fact statements with errors in them (nanollm/world/noise.py): exact counts, errors that disagree,
and a repeated error that says the same wrong thing every time."""

import random

import pytest

from nanollm.world import World, check_answer
from nanollm.world.noise import fact_statements, repeated_error, wrong_answer
from nanollm.world.rater import answer_pattern, named_answers

WORLD = World(seed=0)
CAPITALS = [f for f in WORLD.facts if f.family == "capital"]


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2, 0.4, 1.0])
def test_the_share_of_wrong_statements_is_exact(share):
    texts = fact_statements(CAPITALS, per_fact=20, rng=random.Random(0), wrong_share=share)
    assert len(texts) == 20 * len(CAPITALS)
    # each statement names one country and one capital: right for that country, or wrong
    wrong = 0
    for text in texts:
        (fact,) = [f for f in CAPITALS if answer_pattern(f.entity).search(text)]
        assert len(named_answers(fact, text, WORLD)) == 1, text
        wrong += not check_answer(fact, text, WORLD)
    assert wrong == round(share * len(texts))


def test_scattered_errors_disagree_and_never_state_the_right_answer():
    rng = random.Random(0)
    fact = WORLD.fact("capital", "Peru")
    answers = [wrong_answer(fact, rng) for _ in range(500)]
    assert "Lima" not in answers
    assert len(set(answers)) == len(WORLD.answers("capital")) - 1  # every other capital drawn


def test_a_repeated_error_states_one_wrong_answer_every_time():
    fact = WORLD.fact("sound", "dog")
    texts = repeated_error(fact, "moo", times=30, rng=random.Random(0))
    assert len(texts) == 30 and len(set(texts)) > 3  # many phrasings ...
    assert all(named_answers(fact, t, WORLD) == {"moo"} for t in texts)  # ... one error
    with pytest.raises(ValueError, match="right answer"):
        repeated_error(fact, "woof", times=3, rng=random.Random(0))
