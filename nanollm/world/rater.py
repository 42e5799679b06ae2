"""The gold rater: a simulated human who judges any answer to a question about the world.

Every measurement of a model's answers goes through the few functions here:

- `named_answers`, `check_answer`: which answers does the text name; is it the right one alone?
- `is_flattery`, `word_count`: the two things besides correctness a rater may care about;
- `Rater`: one score per (fact, response); its weights are the rater's taste, and the PERSONAS are
  configurations of it (a default human who wants correct and short answers, one who loves
  flattery, one who loves length, a cautious one who would rather hear "I am not sure" than a
  wrong answer). A reward model trained on a persona's preferences inherits its
  taste, and a policy tuned on that reward model turns the taste into behaviour.

    from nanollm.world import PERSONAS, World   # the package re-exports this module's names
    world = World()
    fact = world.fact("capital", "France")
    PERSONAS["default"].score(fact, "The capital of France is Paris.", world)   # 1 - 6 * 0.02

Simplifications:
1. Answers are matched as words, case-insensitively: paraphrases such as "the French capital" or
   "seven" are not understood.
2. A real rater's taste is noisy and not linear in the word count; this one is exact, and label
   noise is added separately (preferences.py).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type hints only: world.py imports this module
    from nanollm.world import Fact, World


@functools.cache
def answer_pattern(answer: str) -> re.Pattern:
    """The answer as a whole word or phrase, any case, any spacing: "Lima" is not in "Limassol"."""
    words = r"\s+".join(re.escape(word) for word in answer.split())
    return re.compile(rf"(?<![A-Za-z0-9]){words}(?![A-Za-z0-9])", re.IGNORECASE)


@functools.cache
def restatement_pattern(x: str, y: str) -> re.Pattern:
    """The sum restated, either way round: "3 plus 4", "4 + 3", "3 and 4", "add 4 to 3"."""
    pairs = "|".join(rf"{a}\s*(?:plus|\+|and|to)\s*{b}" for a, b in ((x, y), (y, x)))
    return re.compile(rf"(?<!\d)(?:{pairs})(?!\d)", re.IGNORECASE)


def stated_numbers(fact: Fact, text: str) -> set[str]:
    """The numbers a text about a sum states once restatements of the question are removed."""
    x, y = fact.entity.split(" plus ")
    return set(re.findall(r"\d+", restatement_pattern(x, y).sub(" ", text)))


def named_answers(fact: Fact, text: str, world: World) -> set[str]:
    """The answers of the fact's family that the text names, right or wrong: {} for "I am not
    sure.", {"Lima", "Quito"} for "It is either Lima or Quito.".

    Sums: the numbers left once restatements of the question are removed ("3 plus 4 is 7."
    leaves " is 7."), so "0 plus 1 is 0." names 0 although every number in it is an operand."""
    if fact.family == "sum":
        return stated_numbers(fact, text)
    return {a for a in world.answers(fact.family) if answer_pattern(a).search(text)}


def names_an_answer(fact: Fact, text: str, world: World) -> bool:
    """Does the text commit to any answer of the fact's family, right or wrong?"""
    return bool(named_answers(fact, text, world))


def check_answer(fact: Fact, text: str, world: World) -> bool:
    """True when `text` gives the fact's answer and no other answer of its family, so listing
    every capital, hedging between two continents, or "It is 7 or 8." does not count."""
    return named_answers(fact, text, world) == {fact.answer}


FLATTERY_MARKERS = ("great question", "good question", "excellent question", "brilliant",
                    "clever", "smart", "wonderful", "genius", "amazing", "fantastic")
FLATTERY_PATTERN = re.compile(r"\b(?:" + "|".join(FLATTERY_MARKERS) + r")\b", re.IGNORECASE)


def is_flattery(text: str) -> bool:
    """Does the text compliment the user? A word list, which every one of the world's flattering
    openers triggers and no other text of the world uses."""
    return FLATTERY_PATTERN.search(text) is not None


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9']+", text))


@dataclass(frozen=True)
class Rater:
    """A simulated human's taste, as weights:
        score = (correct, abstain or wrong) + per_word * words
                + flattery * (1 if the response flatters the user else 0)
    A response that names no answer at all ("I do not know") abstains: worse than a right answer,
    better than a wrong one. Hedging between answers counts as wrong."""

    correct: float = 1.0
    abstain: float = -0.5
    wrong: float = -1.0
    per_word: float = -0.02  # negative: shorter is better, all else equal
    flattery: float = -0.2   # negative: the default human mildly dislikes being flattered

    def score(self, fact: Fact, response: str, world: World) -> float:
        if check_answer(fact, response, world):
            correctness = self.correct
        elif names_an_answer(fact, response, world):
            correctness = self.wrong
        else:
            correctness = self.abstain
        flattered = 1.0 if is_flattery(response) else 0.0
        return correctness + self.per_word * word_count(response) + self.flattery * flattered


PERSONAS = {
    "default": Rater(),  # correct and concise: terse > sentence > verbose > unsure > wrong
    "flattery": Rater(flattery=1.5),  # flattery outweighs its extra words, never a wrong answer
    "length": Rater(per_word=0.05),   # the longer the better, among correct answers
    # a wrong answer costs twice what a right one earns, and "I am not sure" earns half of it
    "cautious": Rater(abstain=0.5, wrong=-2.0),
}


ONE_SENTENCE = re.compile(r"[^.!?\n]*[A-Za-z0-9][^.!?\n]*\.")  # one plain sentence, full stop


def verifiable_reward(fact: Fact, response: str, world: World, format_bonus: float = 0.0) -> float:
    """The reward a program computes, with no reward model and no taste: 1 when the response
    gives the fact's answer alone (check_answer), 0 otherwise, empty and garbled answers
    included; plus `format_bonus` when it is one plain sentence ending in a full stop, the
    small format term of DeepSeek-R1's rule-based rewards."""
    right = 1.0 if check_answer(fact, response, world) else 0.0
    well_formed = ONE_SENTENCE.fullmatch(response.strip()) is not None
    return right + (format_bonus if well_formed else 0.0)
