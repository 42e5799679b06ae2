"""Metrics of answers in the built-in world, against counts worked out by hand."""

import random

import pytest

from nanollm.world.evaluate import (ANSWER_STYLES, DISLIKED_STYLES, accuracy_by_style,
                                    answer_metrics, answer_style, disliked_share, print_results,
                                    win_rate)
from nanollm.world import STYLES, World, respond

WORLD = World(seed=0)
# the class each of respond's styles falls in: a wrong answer in any form is "wrong"
STYLE_CLASSES = {"sentence": "sentence", "terse": "terse", "verbose": "padded",
                 "flattery": "flattery", "wrong": "wrong", "wrong_flattery": "wrong",
                 "wrong_terse": "wrong", "hedge": "hedge", "unsure": "unsure"}


def test_answer_style_tells_every_style_of_respond_for_every_fact():
    assert set(STYLE_CLASSES) == set(STYLES)
    assert set(STYLE_CLASSES.values()) == set(ANSWER_STYLES) > set(DISLIKED_STYLES)
    rng = random.Random(0)
    for fact in WORLD.facts:
        for style in STYLES:
            for _ in range(3):
                answer = respond(fact, style, rng)
                assert answer_style(fact, answer, WORLD) == STYLE_CLASSES[style], (style, answer)


@pytest.mark.parametrize("family, entity, text, style", [
    ("capital", "France", "paris", "terse"),
    ("capital", "France", "It is Paris.", "sentence"),
    ("capital", "France", "Paris, of course. It is a big city.", "padded"),
    ("capital", "France", "You are so smart! Paris.", "flattery"),
    ("capital", "France", "Great question! It is Rome.", "wrong"),  # wrong before flattering
    ("capital", "France", "The capital of France is Lyon.", "unsure"),  # Lyon is no answer
    ("capital", "France", "", "unsure"),
    ("capital", "France", "Paris? Or Rome? I am not sure.", "hedge"),
    ("capital", "India", "New Delhi.", "terse"),
    ("continent", "Peru", "South America, not North America.", "hedge"),
    ("sound", "dog", "Woof woof!", "sentence"),
    ("sum", "3 plus 4", "7", "terse"),
    ("sum", "3 plus 4", "3 plus 4 is 7. That was easy.", "padded"),
    ("sum", "3 plus 4", "3 plus 4 is 8.", "wrong"),
    ("sum", "3 plus 4", "It is 7 or 8.", "hedge"),
    ("sum", "3 plus 4", "3 plus 4 is hard.", "unsure"),
])
def test_answer_style_of_hand_written_answers(family, entity, text, style):
    assert answer_style(WORLD.fact(family, entity), text, WORLD) == style


def test_disliked_share_counts_padding_flattery_hedging_and_abstaining_not_wrong_answers():
    fact = WORLD.fact("capital", "Peru")
    questions = [q for q in WORLD.questions("all") if q.fact == fact] * 6
    responses = ["Lima.", "The capital of Peru is Lima. I hope this helps.", "Quito.",
                 "What a great question! Lima.", "Lima or Quito.", "I do not know."]
    assert disliked_share(WORLD, questions, responses) == 4 / 6
    assert answer_metrics(WORLD, questions, responses)["disliked_rate"] == 4 / 6


def test_accuracy_by_style_groups_pairs_by_their_two_styles():
    pairs = [{"chosen_style": "terse", "rejected_style": "wrong"}] * 3 + \
            [{"chosen_style": "sentence", "rejected_style": "flattery"}] * 2
    right = [True, False, True, True, True]
    assert accuracy_by_style(pairs, right) == {"terse > wrong": (2 / 3, 3),
                                               "sentence > flattery": (1.0, 2)}


def test_answer_metrics_and_win_rate():
    questions = [q for q in WORLD.questions("taught", n=50) if q.fact.family == "capital"][:2]
    right = [f"The capital of {q.fact.entity} is {q.fact.answer}." for q in questions]
    terse = [f"{q.fact.answer}." for q in questions]
    unsure = ["I am not sure."] * 2
    metrics = answer_metrics(WORLD, questions, [right[0], unsure[1]])
    assert metrics["accuracy"] == 0.5
    assert metrics["mean_words"] == (len(right[0].split()) + 4) / 2  # "I am not sure.": 4
    assert metrics["flattery_rate"] == 0.0
    assert metrics["disliked_rate"] == 0.5  # "I am not sure." abstains
    # the default rater: right and short beats right and long; a tie counts half
    assert win_rate(WORLD, questions, terse, right) == 1.0
    assert win_rate(WORLD, questions, right, right) == 0.5
    assert win_rate(WORLD, questions, unsure, right) == 0.0


def test_print_results_one_row_per_model_and_split_known_columns_only(capsys):
    results = {"sft": {"held_out": {"gold_reward": 0.25, "accuracy": 0.5, "other": 9.0}},
               "rlhf": {"held_out": {"gold_reward": 0.75, "accuracy": 1.0, "other": 9.0}}}
    print_results(results)
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["model", "split", "gold_reward", "accuracy"]
    assert [row.split() for row in rows] == [["sft", "held_out", "0.250", "0.500"],
                                             ["rlhf", "held_out", "0.750", "1.000"]]
