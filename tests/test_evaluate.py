"""Metrics of answers in the built-in world, against counts worked out by hand."""

from nanollm.world.evaluate import accuracy_by_style, answer_metrics, print_results, win_rate
from nanollm.world import World

WORLD = World(seed=0)


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
