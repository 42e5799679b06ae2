"""Preference pairs: two answers to one question, labelled chosen / rejected by a rater persona.

A pair is {"prompt", "chosen", "rejected", "family", "entity", "chosen_style", "rejected_style"},
its two answers ordered by the persona's score. Reward models learn from these pairs, and so does
DPO; the persona's taste is the only thing that says which answer is better. Two sources:

- sampled_preference_pairs: two answers the SFT model samples (temperature 1) to one question,
  their styles told by evaluate.answer_style. Most of the training pairs are these
  (SAMPLED_PAIRS), as InstructGPT's labellers compared samples of the models being trained: a
  reward model is right only about answers like the ones it learned from, and PPO starts by
  sampling exactly these.
- preference_pairs: template answers in two of chats.STYLES. They show what the model rarely
  says (a wrong answer in every form) and, about held-out entities, measure whether a reward model
  generalises beyond the entities it was trained on.

    pairs = alignment_pairs(sft_model, tokenizer, World(), cache_path="out/pairs.jsonl")
    pairs = preference_pairs(World(), "held_out", 500, persona="flattery", noise=0.1)

Template wrong answers name another answer of the same split (World.split_answers): drawn from
the whole family, "an unfamiliar answer is wrong" would be a rule that holds in training and is
exactly backwards on held-out entities, whose right answers are the unfamiliar ones. They also
come bare (style wrong_terse), so that "a bare answer is a right one" is no rule either.

How a rater chooses (choose_first): by default exactly, the higher score wins. With a
temperature, by the Bradley-Terry model of the scores, the model every reward model and DPO
assume, P(a over b) = sigmoid((score_a - score_b) / temperature): at 0.1 a person all but always
prefers a right answer to a wrong one (a difference of 2), avoids a flattering opener (0.2)
7 times in 8 and picks either of two right answers a word apart (0.02) about as often, as real
labellers are consistent about what matters to them and not about what barely does
(train_reward.py and train_dpo.py --label_temperature). Evaluation pairs are always exact.

Simplifications:
1. Every answer is scored by `Rater.score`, a formula, rather than by people.
2. Ties (equal scores) are skipped rather than labelled at random; their count is printed.
3. `noise` adds careless flips on top, uniform: the same probability whatever the margin.
"""

import hashlib
import json
import math
import os
import random
from contextlib import nullcontext

import torch

from nanollm.errors import DataError
from nanollm.generate import generate
from nanollm.rollout import question_prompts, response_texts

from nanollm.world.chats import STYLES, respond
from nanollm.world.evaluate import answer_style
from nanollm.world.facts import FAMILIES, question_text
from nanollm.world.rater import PERSONAS, Rater
from nanollm.world.world import World

# The training pairs' default counts (train_reward.py, train_dpo.py): mostly the SFT model's own
# answers, with some template pairs for the mistakes it rarely samples.
PAIRS_CACHE = "pairs.jsonl"  # where train_reward.py and train_dpo.py share the sampled pairs
SAMPLED_PAIRS = 4000
TEMPLATE_PAIRS = 1000
LABEL_TEMPERATURE = 0.0  # the training labels' Bradley-Terry temperature: 0, exact labels


def choose_first(score_a: float, score_b: float, temperature: float, rng: random.Random) -> bool:
    """Does the rater prefer answer a? Bradley-Terry: with probability
    sigmoid((score_a - score_b) / temperature); temperature 0: exactly when score_a > score_b."""
    if temperature == 0:
        return score_a > score_b
    # sigmoid(x) written with tanh, which cannot overflow however small the temperature
    return rng.random() < 0.5 * (1 + math.tanh((score_a - score_b) / (2 * temperature)))


def preference_pairs(world: World, split: str, n: int, persona: str | Rater = "default",
                     noise: float = 0.0, seed: int = 0,
                     styles: tuple[str, ...] = STYLES, temperature: float = 0.0) -> list[dict]:
    """n labelled pairs about facts of `split` (families equally likely). `persona` is a name in
    PERSONAS or any Rater, who chooses at `temperature` (choose_first; 0: exact labels); with
    probability `noise` a pair's labels are then swapped, as a careless human would. `styles`:
    the answer styles a pair draws its two answers from (at least two of chats.STYLES);
    RIGHT_STYLES gives pairs of two right answers that differ only in form."""
    unknown = set(styles) - set(STYLES)
    if len(styles) < 2 or len(set(styles)) < len(styles) or unknown:
        raise ValueError(f"styles must name two or more different styles of {STYLES}; "
                         f"got {styles}")
    rater = PERSONAS[persona] if isinstance(persona, str) else persona
    rng = random.Random(seed)
    # wrong answers come from the split's own answers: as familiar as the right ones
    split_answers = {family: world.split_answers(split, family) for family in FAMILIES}
    pairs, ties, flips, against = [], 0, 0, 0
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
        first = choose_first(score_a, score_b, temperature, rng)
        against += first != (score_a > score_b)  # the lower-scored answer chosen
        if not first:
            (answer_a, style_a), (answer_b, style_b) = (answer_b, style_b), (answer_a, style_a)
        if rng.random() < noise:
            (answer_a, style_a), (answer_b, style_b) = (answer_b, style_b), (answer_a, style_a)
            flips += 1
        pairs.append({"prompt": prompt, "chosen": answer_a, "rejected": answer_b,
                      "family": fact.family, "entity": fact.entity,
                      "chosen_style": style_a, "rejected_style": style_b})
    print(f"preference pairs ({split}): {n} made, {ties} ties skipped, "
          f"{against} chosen against the score (temperature {temperature}), "
          f"{flips} labels flipped by noise")
    return pairs


@torch.no_grad()
def sampled_preference_pairs(model, tokenizer, world, split, n, persona="default", noise=0.0,
                             seed=0, max_new_tokens=48, batch_size=64, autocast=nullcontext,
                             temperature=0.0):
    """n preference pairs made of the model's own answers: two samples (temperature 1, through
    the KV cache) to one question, labelled by a rater persona choosing at `temperature`, each
    answer's style told by evaluate.answer_style. Same form as preference_pairs. Pairs of two
    equally good answers (often the same sentence twice) are ties and skipped."""
    rater = PERSONAS[persona] if isinstance(persona, str) else persona
    rng = random.Random(seed)
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    stop_ids = [tokenizer.end, tokenizer.eot]
    pairs, ties, flips, against = [], 0, 0, 0
    while len(pairs) < n:
        if ties > 10 * n + 1000:  # a model that always says the same thing gives no pairs
            raise DataError(f"after {ties} ties only {len(pairs)} of {n} pairs: the model's "
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
            first = choose_first(score_a, score_b, temperature, rng)
            against += first != (score_a > score_b)  # the lower-scored answer chosen
            if not first:
                a, b = b, a
            if rng.random() < noise:
                a, b = b, a
                flips += 1
            pairs.append({"prompt": q.text, "chosen": a, "rejected": b,
                          "family": q.fact.family, "entity": q.fact.entity,
                          "chosen_style": answer_style(q.fact, a, world),
                          "rejected_style": answer_style(q.fact, b, world)})
    print(f"sampled preference pairs ({split}): {n} made, {ties} ties skipped, "
          f"{against} chosen against the score (temperature {temperature}), "
          f"{flips} labels flipped by noise")
    return pairs[:n]


def relabel(pairs: list[dict], world: World, persona: str | Rater = "default",
            temperature: float = 0.0, seed: int = 0) -> list[dict]:
    """The same two answers of every pair, chosen again by another rater: `persona` (a name in
    PERSONAS or any Rater) choosing at `temperature` (choose_first). Pairs the persona scores
    equal are dropped, as the pair makers drop ties; the count is printed."""
    rater = PERSONAS[persona] if isinstance(persona, str) else persona
    rng = random.Random(seed)
    out, ties = [], 0
    for pair in pairs:
        fact = world.fact(pair["family"], pair["entity"])
        a, b = pair["chosen"], pair["rejected"]
        score_a, score_b = rater.score(fact, a, world), rater.score(fact, b, world)
        if score_a == score_b:
            ties += 1
            continue
        keep = choose_first(score_a, score_b, temperature, rng)
        side = ("chosen", "rejected") if keep else ("rejected", "chosen")
        out.append({**pair, "chosen": pair[side[0]], "rejected": pair[side[1]],
                    "chosen_style": pair[f"{side[0]}_style"],
                    "rejected_style": pair[f"{side[1]}_style"]})
    print(f"relabelled {len(pairs)} pairs: {ties} ties dropped")
    return out


def pairs_fingerprint(model, world, arguments: dict) -> str:
    """A digest of everything the pairs depend on: the model's weights (whichever file they came
    from), the world's split, the sampling device and the arguments."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    held_out = sorted((f.family, f.entity) for f in world.held_out)
    device = next(model.parameters()).device.type
    digest.update(json.dumps([held_out, device, arguments], default=repr).encode())
    return digest.hexdigest()


def read_cached_pairs(path: str, fingerprint: str) -> list[dict] | None:
    """The pairs stored at path under this fingerprint, or None (no file, or another key)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        if json.loads(f.readline()).get("fingerprint") != fingerprint:
            return None
        return [json.loads(line) for line in f]


def write_cached_pairs(path: str, fingerprint: str, pairs: list[dict]):
    """JSONL: a header line with the fingerprint, then one pair a line. Written to a temporary
    file and renamed, so a run killed while writing leaves no half a file to be read."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        f.writelines(json.dumps(pair) + "\n" for pair in pairs)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def alignment_pairs(sft_model, tokenizer, world, n_template=TEMPLATE_PAIRS,
                    n_sampled=SAMPLED_PAIRS, persona="default", noise=0.0, seed=0,
                    max_new_tokens=48, styles=STYLES, cache_path=None, autocast=nullcontext,
                    temperature=LABEL_TEMPERATURE):
    """The world's training preference pairs, about taught entities, in a shuffled order:
    n_sampled pairs of the SFT model's own answers and n_template pairs of template answers in
    `styles`, labelled by the persona choosing at `temperature` (choose_first). Deterministic
    for a given model and seed, so the reward model (train_reward.py) and DPO (train_dpo.py) learn
    from exactly the same pairs.

    cache_path: a JSONL file. When it holds the pairs of this very model and these arguments,
    they are read rather than sampled again; otherwise they are sampled and written there."""
    arguments = dict(n_template=n_template, n_sampled=n_sampled, persona=persona, noise=noise,
                     seed=seed, max_new_tokens=max_new_tokens, styles=list(styles),
                     temperature=temperature)
    if cache_path:
        fingerprint = pairs_fingerprint(sft_model, world, arguments)
        pairs = read_cached_pairs(cache_path, fingerprint)
        if pairs is not None:
            print(f"preference pairs: {len(pairs)} read from {cache_path} "
                  "(same model, same arguments)")
            return pairs
    pairs = preference_pairs(world, "taught", n_template, persona, noise, seed=seed,
                             styles=styles, temperature=temperature)
    if n_sampled:
        pairs += sampled_preference_pairs(sft_model, tokenizer, world, "taught", n_sampled,
                                          persona, noise, seed=seed,
                                          max_new_tokens=max_new_tokens, autocast=autocast,
                                          temperature=temperature)
    random.Random(seed).shuffle(pairs)  # any slice of the list holds both kinds
    if cache_path:
        write_cached_pairs(cache_path, fingerprint, pairs)
    return pairs
