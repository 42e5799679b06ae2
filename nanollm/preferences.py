"""Preference pairs: two answers to one question, labelled chosen / rejected by a rater persona.

A pair is {"prompt", "chosen", "rejected", "family", "entity", "chosen_style", "rejected_style"}:
two answers to the same question in two different styles (world.STYLES: terse, verbose,
flattering, wrong, hedging, ...), ordered by the persona's score. Reward models learn from these
pairs, and so does DPO; the persona's taste is the only thing that says which answer is better.

    pairs = preference_pairs(World(), "taught", 2000, persona="flattery", noise=0.1)

Pairs of held-out entities (split "held_out") measure whether a reward model generalises beyond
the entities it was trained on.

Wrong answers name another answer of the same split (World.split_answers): a taught pair's wrong
capital is a taught country's. Drawn from the whole family, a fifth of the taught pairs' wrong
answers would be capitals never seen in SFT, so "an unfamiliar answer is wrong" would be a
reliable rule in training, and exactly backwards on held-out entities, whose right answers are
the unfamiliar ones. A reward model trained that way ranked a right sentence above a wrong one
in 45% of held-out pairs; with the split kept, 67% (3,000 pairs, 2026-12-02).

Wrong answers also come in every form a right one takes, a bare one too ("Quito.", style
wrong_terse). Without it every bare answer in the pairs was right, and the reward model learned
that a bare answer is a good one: PPO then answered taught sums with bare wrong numbers ("10."
asked 8 plus 3, scored above "8 plus 3 is 11."), gold reward on taught questions 0.86 -> 0.76;
with it, 0.86 -> 0.80 (one run each, the same SFT model, 2026-12-03).

Simplifications:
1. Answers come from templates; pairs sampled from a model are labelled the same way, with
   `Rater.score`.
2. Ties (equal scores) are skipped rather than labelled at random; their count is printed.
3. Label noise is uniform: each pair is flipped with the same probability, whatever its margin.
"""

import random

from nanollm.rater import PERSONAS, Rater
from nanollm.world import FAMILIES, STYLES, World, question_text, respond


def preference_pairs(world: World, split: str, n: int, persona: str | Rater = "default",
                     noise: float = 0.0, seed: int = 0,
                     styles: tuple[str, ...] = STYLES) -> list[dict]:
    """n labelled pairs about facts of `split` (families equally likely). `persona` is a name in
    PERSONAS or any Rater; with probability `noise` a pair's labels are swapped, as a careless
    human would. `styles`: the answer styles a pair draws its two answers from (at least two of
    world.STYLES); RIGHT_STYLES gives pairs of two right answers that differ only in form."""
    unknown = set(styles) - set(STYLES)
    if len(styles) < 2 or len(set(styles)) < len(styles) or unknown:
        raise ValueError(f"styles must name two or more different styles of {STYLES}; "
                         f"got {styles}")
    rater = PERSONAS[persona] if isinstance(persona, str) else persona
    rng = random.Random(seed)
    # wrong answers come from the split's own answers: as familiar as the right ones
    split_answers = {family: world.split_answers(split, family) for family in FAMILIES}
    pairs, ties, flips = [], 0, 0
    while len(pairs) < n:
        fact = world.sample_fact(rng, split)
        prompt = question_text(fact, rng)
        style_a, style_b = rng.sample(styles, 2)
        answer_a, answer_b = (respond(fact, style, rng, split_answers[fact.family])
                              for style in (style_a, style_b))
        score_a, score_b = rater.score(fact, answer_a, world), rater.score(fact, answer_b, world)
        if score_a == score_b:
            ties += 1
            continue
        if score_a < score_b:
            (answer_a, style_a), (answer_b, style_b) = (answer_b, style_b), (answer_a, style_a)
        if rng.random() < noise:
            (answer_a, style_a), (answer_b, style_b) = (answer_b, style_b), (answer_a, style_a)
            flips += 1
        pairs.append({"prompt": prompt, "chosen": answer_a, "rejected": answer_b,
                      "family": fact.family, "entity": fact.entity,
                      "chosen_style": style_a, "rejected_style": style_b})
    print(f"preference pairs ({split}): {n} made, {ties} ties skipped, "
          f"{flips} labels flipped by noise")
    return pairs
