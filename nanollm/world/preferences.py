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
from contextlib import nullcontext

import torch

from nanollm.generate import generate
from nanollm.rollout import question_prompts, response_texts

from nanollm.world.rater import PERSONAS, Rater
from nanollm.world.world import FAMILIES, STYLES, World, question_text, respond


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


@torch.no_grad()
def sampled_preference_pairs(model, tokenizer, world, split, n, persona="default", noise=0.0,
                             seed=0, max_new_tokens=48, batch_size=64, autocast=nullcontext):
    """n preference pairs made of the model's own answers: two samples (temperature 1) to one
    question, ordered by a rater persona (nanollm/rater.py). Same form as preference_pairs.

    Why: a reward model is only right about answers like the ones it was trained on, and PPO
    starts by sampling exactly these. Template answers alone teach shortcuts (every terse answer
    in them is right, so "terse" comes to mean "right"); the model's own mistakes come in every
    form. InstructGPT's labellers compared samples of the models being trained, for this reason.
    Pairs of two equally good answers (often the same sentence twice) are ties and skipped.
    """
    rater = PERSONAS[persona] if isinstance(persona, str) else persona
    rng = random.Random(seed)
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    stop_ids = [tokenizer.end, tokenizer.eot]
    pairs, ties, flips = [], 0, 0
    while len(pairs) < n:
        if ties > 10 * n + 1000:  # a model that always says the same thing gives no pairs
            raise ValueError(f"after {ties} ties only {len(pairs)} of {n} pairs: the model's "
                             "two answers to a question are (almost) always equally good")
        questions = world.questions(split, n=batch_size, seed=rng.randrange(2 ** 31))
        prompts = [ids for ids, _ in question_prompts(tokenizer, questions)]
        with autocast():
            out = generate(model, prompts + prompts, max_new_tokens, temperature=1.0,
                           stop_ids=stop_ids, pad_id=tokenizer.pad, generator=generator)
        texts = response_texts(tokenizer, out.responses())
        for q, a, b in zip(questions, texts[:batch_size], texts[batch_size:]):
            score_a, score_b = rater.score(q.fact, a, world), rater.score(q.fact, b, world)
            if score_a == score_b:
                ties += 1
                continue
            if score_a < score_b:
                a, b = b, a
            if rng.random() < noise:
                a, b = b, a
                flips += 1
            pairs.append({"prompt": q.text, "chosen": a, "rejected": b,
                          "family": q.fact.family, "entity": q.fact.entity})
    print(f"sampled preference pairs ({split}): {n} made, {ties} ties skipped, "
          f"{flips} labels flipped by noise")
    return pairs[:n]


def alignment_pairs(sft_model, tokenizer, world, n_template, n_sampled, persona="default",
                    noise=0.0, seed=0, max_new_tokens=48, styles=STYLES):
    """The world's training preference pairs, about taught entities: n_template pairs of template
    answers in `styles` (preferences.py) and n_sampled pairs of the SFT model's own answers.
    Deterministic for a given model and seed, so train_rlhf.py and train_dpo.py learn from
    exactly the same pairs."""
    pairs = preference_pairs(world, "taught", n_template, persona, noise, seed=seed,
                             styles=styles)
    if n_sampled:
        pairs += sampled_preference_pairs(sft_model, tokenizer, world, "taught", n_sampled,
                                          persona, noise, seed=seed,
                                          max_new_tokens=max_new_tokens)
    return pairs
