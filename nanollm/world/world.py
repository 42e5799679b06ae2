"""The built-in world: a small set of facts, and every text the pipeline trains on, made from them.

No data set can be downloaded here, so nanollm generates its own world, deterministically from a
seed, in which the effect of every training stage can be measured exactly:

- four families of facts (country -> capital, country -> continent, animal -> sound,
  x plus y -> sum); the entities are split once into a *taught* set and a *held-out* set;
- a pretraining corpus that states every fact, held-out ones included, many times in many phrasings,
  with stories and dialogue for general language, quiz pages that list questions *without* answers
  (so a base model handed a question continues with more questions) and arithmetic drills;
- SFT chats about taught entities only (chats.py), answered mostly with the canonical sentence,
  and, as in crowd-written SFT data, a real share of the time padded, flattering, hedging or now
  and then wrong, so that preference training has something to remove or to amplify;
- `is_question`, which tells whether a base model's continuation of a question is another one.

Answers in styles live in chats.py, how answers are judged in rater.py (both re-exported by the
package: respond, check_answer, is_flattery, Rater, PERSONAS, ...), preference pairs in
preferences.py, measurements in evaluate.py.

    world = World(seed=0)
    docs = world.pretraining_documents(n_chars=3_000_000)
    chats = world.sft_conversations(5000)
    prompts = world.fact_prompts("held_out")   # [("The capital of Peru is", Fact(...)), ...]

Simplifications:
1. The facts are real but few (226), so that a small model memorises them in minutes on a CPU.
2. Every text comes from templates, so the language is simple and repetitive.
3. Answers have one canonical form: one sound word per animal, sums in digits ("7", never "seven"),
   spelled the same alone as in a sentence ("woof.", not "Woof.": facts.bare_answer says why).
"""

import random

from nanollm.world.chats import sft_conversations
from nanollm.world.documents import (CORPUS_SHARES, arithmetic_page, dialogue, fact_page,
                                     quiz_page, quiz_show, story)
from nanollm.world.facts import (ANIMALS, COUNTRIES, DIGITS, FAMILIES, STATEMENTS, Fact, Question,
                                 all_facts, family_answers, fields, question_text)

class World:
    """The facts and their taught / held-out split. Countries are split once and the split is
    shared by the capital and continent families, so a held-out country never appears in SFT at
    all; animals and sums are split on their own. `held_out_fraction` of each is held out."""

    def __init__(self, seed: int = 0, held_out_fraction: float = 0.2):
        self.seed = seed
        self.facts = all_facts()
        rng = random.Random(seed)
        held_out_entities = set()
        for group in ([c for c, _, _ in COUNTRIES], [a for a, _, _ in ANIMALS],
                      [f"{x} plus {y}" for x in DIGITS for y in DIGITS]):
            held_out_entities |= set(rng.sample(group, round(held_out_fraction * len(group))))
        self.held_out = [f for f in self.facts if f.entity in held_out_entities]
        self.taught = [f for f in self.facts if f.entity not in held_out_entities]
        self._by_key = {(f.family, f.entity): f for f in self.facts}

    def split(self, name: str) -> list[Fact]:
        splits = {"taught": self.taught, "held_out": self.held_out, "all": self.facts}
        if name not in splits:
            raise ValueError(f"unknown split {name!r}; expected taught, held_out or all")
        return splits[name]

    def fact(self, family: str, entity: str) -> Fact:
        return self._by_key[(family, entity)]

    def answers(self, family: str) -> frozenset[str]:
        """Every answer of a family: naming two of them is not answering (rater.check_answer)."""
        return family_answers(family)

    def split_answers(self, split: str, family: str) -> frozenset[str]:
        """The answers of the facts of `split` in `family`: the 10 capitals of held-out
        countries, say. Wrong answers drawn from these are as familiar as the right ones."""
        return frozenset(f.answer for f in self.split(split) if f.family == family)

    def sample_fact(self, rng: random.Random, split: str = "taught",
                    families: tuple[str, ...] = FAMILIES) -> Fact:
        """A fact from `split`, each of `families` equally likely (there are 100 sums but 22
        animals)."""
        facts = self.split(split)
        family = rng.choice([f for f in families if any(x.family == f for x in facts)])
        return rng.choice([f for f in facts if f.family == family])

    def fact_prompts(self, split: str) -> list[tuple[str, Fact]]:
        """For every fact, its canonical sentence cut before the answer:
        ("The capital of Peru is", Fact("capital", "Peru", "Lima"))."""
        prompts = []
        for fact in self.split(split):
            template = STATEMENTS[fact.family][0]
            prompts.append((template[:template.index(" {a}")].format(**fields(fact)), fact))
        return prompts

    def questions(self, split: str, n: int | None = None, seed: int = 0,
                  families: tuple[str, ...] = FAMILIES) -> list[Question]:
        """One question per fact of `split` in `families` (n=None), or n questions with those
        families balanced."""
        unknown = set(families) - set(FAMILIES)
        if unknown or not families:
            raise ValueError(f"unknown families {sorted(unknown)}; expected some of {FAMILIES}")
        rng = random.Random(seed)
        if n is None:
            facts = [f for f in self.split(split) if f.family in families]
        else:
            facts = [self.sample_fact(rng, split, families) for _ in range(n)]
        return [Question(fact, question_text(fact, rng)) for fact in facts]

    def pretraining_documents(self, n_chars: int = 3_000_000, seed: int = 0) -> list[str]:
        """About n_chars of text in separate documents, shuffled, each kind filling its share of
        CORPUS_SHARES. Entities take turns, so every fact appears about equally often."""
        rng = random.Random(seed)
        pages = [[f for f in self.facts if f.entity == e] for e in
                 [c for c, _, _ in COUNTRIES] + [a for a, _, _ in ANIMALS]]
        sums = [f for f in self.facts if f.family == "sum"]
        makers = {
            "facts": lambda i: fact_page(pages[i % len(pages)], rng),
            "stories": lambda i: story(rng),
            "dialogue": lambda i: dialogue(rng),
            "quiz": lambda i: quiz_page(self.facts, rng),
            "quiz_show": lambda i: quiz_show(self.facts, rng),
            "arithmetic": lambda i: arithmetic_page(sums, rng),
        }
        docs = []
        for kind, share in CORPUS_SHARES.items():
            size, i = 0, 0
            while size < share * n_chars:
                if kind == "facts" and i % len(pages) == 0:
                    rng.shuffle(pages)  # a new round: every entity gets one page, in a new order
                doc = makers[kind](i)
                docs.append(doc)
                size, i = size + len(doc), i + 1
        rng.shuffle(docs)
        return docs

    def sft_conversations(self, n: int, split: str = "taught", seed: int = 0) -> list[dict]:
        """n SFT chats about facts of `split`, answered in the styles of SFT_STYLE_SHARES
        (chats.sft_conversations)."""
        return sft_conversations(self, n, split, seed)


def world_corpus(source: str, n_chars: int, seed: int = 0) -> dict:
    """What corpus.prepare_corpus needs to prepare the world's text: its documents and prompts to
    sample during pretraining ({} for any other source, which prepare_corpus reads itself)."""
    if source != "world":
        return {}
    world = World(seed=seed)
    prompts = [p for p, _ in world.fact_prompts("held_out")[:2]] + ["Once upon a time"]
    return dict(documents=world.pretraining_documents(n_chars, seed), prompts=prompts)
