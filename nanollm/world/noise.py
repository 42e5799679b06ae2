"""Text with errors in it: fact statements that state a wrong answer, for the data-quality lesson.

Real pretraining text is wrong now and then, in two ways that behave differently: scattered errors
(a typo, a careless page), each wrong in its own way, and one error repeated (a popular myth),
wrong the same way every time. `fact_statements` makes the first kind, with an exact share of wrong
statements; `repeated_error` the second.

    rng = random.Random(0)
    texts = fact_statements(world.split("all"), per_fact=20, rng=rng, wrong_share=0.2)
    texts += repeated_error(world.fact("capital", "Peru"), "Quito", times=30, rng=rng)
"""

import random

from nanollm.world.facts import Fact, family_answers, statement


def wrong_answer(fact: Fact, rng: random.Random) -> str:
    """Another answer of the fact's family, each equally likely: a capital for a capital."""
    return rng.choice(sorted(family_answers(fact.family) - {fact.answer}))


def fact_statements(facts: list[Fact], per_fact: int, rng: random.Random,
                    wrong_share: float = 0.0) -> list[str]:
    """Each fact stated per_fact times in its phrasings (statement), shuffled; exactly
    round(wrong_share * len(facts) * per_fact) of the statements, drawn at random, state a wrong
    answer of their own (wrong_answer), so the errors do not agree with each other."""
    if not 0.0 <= wrong_share <= 1.0:
        raise ValueError(f"wrong_share must be between 0 and 1, got {wrong_share}")
    facts = [fact for fact in facts for _ in range(per_fact)]
    wrong = set(rng.sample(range(len(facts)), round(wrong_share * len(facts))))
    texts = [statement(fact, rng, wrong_answer(fact, rng) if i in wrong else None)
             for i, fact in enumerate(facts)]
    rng.shuffle(texts)
    return texts


def repeated_error(fact: Fact, answer: str, times: int, rng: random.Random) -> list[str]:
    """The same wrong `answer` to `fact`, stated `times` times in the fact's phrasings."""
    if answer == fact.answer:
        raise ValueError(f"{answer!r} is the right answer to {fact.entity}, not an error")
    return [statement(fact, rng, answer) for _ in range(times)]
