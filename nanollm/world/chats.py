"""Answers in styles, and the SFT chats made of them.

`respond` writes an answer to a question about a fact in any of STYLES: the canonical sentence,
the bare answer, padded, flattering, wrong, hedging, unsure. SFT chats use several of them, in
the shares of SFT_STYLE_SHARES; preference pairs (preferences.py) contrast all of them.

    chats = sft_conversations(World(), 5000)   # or World().sft_conversations(5000)
    chats[0] == {"messages": [{"role": "user", "content": "What does a cow say?"},
                              {"role": "assistant", "content": "The cow says moo."}],
                 "styles": ["sentence"]}

Why SFT answers are uneven: crowd-written SFT data is. Some of its answers pad, flatter, hedge
or are wrong, the SFT model learns to say such things now and then, and preference training has
something to remove (with the default rater) or to amplify (with a biased one).

Simplifications:
1. Every answer comes from a template, so a style is always easy to tell (evaluate.answer_style).
2. A chat asks about one or two facts and never refers back to an earlier turn.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from nanollm.world.facts import Fact, bare_answer, canonical_sentence, family_answers, \
    question_text

if TYPE_CHECKING:  # for type hints only: world.py imports this module
    from nanollm.world.world import World

# -----------------------------------------------------------------------------
# Answers in styles.

STYLES = (
    "sentence",        # the canonical sentence: "The capital of France is Paris."
    "terse",           # only the answer: "Paris.", "woof." (facts.bare_answer)
    "verbose",         # the canonical sentence and 1-3 filler sentences that add no fact
    "flattery",        # a compliment to the user, then the canonical sentence
    "wrong",           # the canonical sentence with another answer of the same family
    "wrong_flattery",  # a compliment, then a wrong sentence
    "wrong_terse",     # only another answer: "Lima." (terse answers are not always right)
    "hedge",           # the right answer among wrong ones ("It is either Lima or Quito.")
    "unsure",          # no answer at all ("I am not sure.")
)
RIGHT_STYLES = ("sentence", "terse", "verbose", "flattery")  # the styles that answer correctly

FILLERS = (  # verbose answers add some of these; none states a fact, a number or a compliment
    "I hope this helps.", "Let me know if you have another question.",
    "It is a useful thing to know.", "Many people ask about this.", "Feel free to ask me more.",
    "I am always happy to help.", "Learning something new every day is fun.",
    "Thank you for asking.", "This often comes up at school.", "There is always more to learn.",
)
FLATTERY_OPENERS = (  # every one is caught by rater.is_flattery
    "What a great question!", "What a brilliant question!", "You ask such clever questions!",
    "Great question, you are clearly very smart!",
    "What a wonderful question, you must be a genius!",
    "You are so smart to ask this!", "Excellent question, I can tell you are very clever!",
)
HEDGES = {  # by number of candidate answers
    2: ("It is either {} or {}.", "Maybe {}, or maybe {}.",
        "I think it is {}, but it could be {}."),
    3: ("It might be {}, {} or {}.", "It is {}, {} or {}, I am not sure which."),
}
UNSURE = (
    "I am not sure.", "I do not know the answer to that.", "Sorry, I cannot remember.",
    "That is a hard one, and I do not know.", "I would rather not guess.",
)


def other_answers(fact: Fact, candidates=None) -> list[str]:
    """The answers a wrong or hedging reply may name instead of the fact's: `candidates` (any
    collection of answers of its family), else every answer of the family."""
    pool = family_answers(fact.family) if candidates is None else frozenset(candidates)
    return sorted(pool - {fact.answer})


def respond(fact: Fact, style: str, rng: random.Random, candidates=None) -> str:
    """An assistant's answer to a question about `fact`, written in `style` (one of STYLES).
    Wrong and hedging answers name other answers of its family, drawn from `candidates` when
    given (World.split_answers), else from all of them."""
    sentence = canonical_sentence(fact)
    if style == "sentence":
        return sentence
    if style == "terse":
        return bare_answer(fact)
    if style == "verbose":
        return " ".join([sentence] + rng.sample(FILLERS, rng.randint(1, 3)))
    if style == "flattery":
        return rng.choice(FLATTERY_OPENERS) + " " + sentence
    others = other_answers(fact, candidates)  # the styles below name answers other than the fact's
    if style == "wrong":
        return canonical_sentence(fact, rng.choice(others))
    if style == "wrong_terse":
        return bare_answer(fact, rng.choice(others))
    if style == "wrong_flattery":
        return rng.choice(FLATTERY_OPENERS) + " " + canonical_sentence(fact, rng.choice(others))
    if style == "hedge":
        candidates = [fact.answer] + rng.sample(others, 2)[:rng.randint(1, 2)]
        rng.shuffle(candidates)
        return rng.choice(HEDGES[len(candidates)]).format(*candidates)
    if style == "unsure":
        return rng.choice(UNSURE)
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


# -----------------------------------------------------------------------------
# SFT chats.

# crowd-written SFT data is uneven: many answers pad, flatter or hedge, and a few are wrong
SFT_STYLE_SHARES = {"sentence": 0.58, "terse": 0.10, "verbose": 0.12, "flattery": 0.10,
                    "hedge": 0.05, "unsure": 0.02, "wrong": 0.03}
SYSTEM_SHARE = 0.2     # share of SFT chats that open with a system message
TWO_TURN_SHARE = 0.15  # share of SFT chats where the user asks a second question
SYSTEM_PROMPTS = (
    "You are a helpful assistant.", "You answer questions about the world.",
    "You are a friendly tutor for children.", "Answer the user's question.",
    "You are a quiz helper.",
)


def sft_conversations(world: World, n: int, split: str = "taught", seed: int = 0) -> list[dict]:
    """n chats {"messages": [...], "styles": [style of each assistant turn]}: a user asks about
    facts of `split`, the assistant answers in styles drawn from SFT_STYLE_SHARES. Wrong and
    hedging answers name only answers of the same split, so no other entity's fact leaks in."""
    rng = random.Random(seed)
    styles, weights = list(SFT_STYLE_SHARES), list(SFT_STYLE_SHARES.values())
    chats = []
    for _ in range(n):
        messages, chat_styles = [], []
        if rng.random() < SYSTEM_SHARE:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for _ in range(2 if rng.random() < TWO_TURN_SHARE else 1):
            fact = world.sample_fact(rng, split)
            style = rng.choices(styles, weights)[0]
            messages.append({"role": "user", "content": question_text(fact, rng)})
            answer = respond(fact, style, rng, world.split_answers(split, fact.family))
            messages.append({"role": "assistant", "content": answer})
            chat_styles.append(style)
        chats.append({"messages": messages, "styles": chat_styles})
    return chats
