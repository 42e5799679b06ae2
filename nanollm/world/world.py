"""The built-in world: a small set of facts, and every text the pipeline trains on, made from them.

No data set can be downloaded here, so nanollm generates its own world, deterministically from a
seed, in which the effect of every training stage can be measured exactly:

- four families of facts (country -> capital, country -> continent, animal -> sound,
  x plus y -> sum); the entities are split once into a *taught* set and a *held-out* set;
- a pretraining corpus that states every fact, held-out ones included, many times in many phrasings,
  with stories and dialogue for general language, quiz pages that list questions *without* answers
  (so a base model handed a question continues with more questions) and arithmetic drills;
- SFT chats about taught entities only, answered mostly with the canonical sentence, with a few
  terse, verbose and flattering answers (a style must exist at low frequency for alignment to
  amplify it);
- `respond`, which writes an answer to a fact in any style, for SFT and for preference pairs;
- `is_question`, which tells whether a base model's continuation of a question is another one.

How answers are judged lives in rater.py (re-exported here: check_answer, is_flattery, word_count,
Rater, PERSONAS), preference pairs in preferences.py.

    world = World(seed=0)
    docs = world.pretraining_documents(n_chars=3_000_000)   # about 0.2 s
    chats = world.sft_conversations(5000)
    prompts = world.fact_prompts("held_out")   # [("The capital of Peru is", Fact(...)), ...]

Simplifications:
1. The facts are real but few (226), so that a small model memorises them in minutes on a CPU.
2. Every text comes from templates, so the language is simple and repetitive.
3. Answers have one canonical form: one sound word per animal, sums in digits ("7", never "seven"),
   spelled the same alone as in a sentence ("woof.", not "Woof.": facts.bare_answer says why).
"""

import random

from nanollm.world.documents import (CORPUS_SHARES, arithmetic_page, dialogue, fact_page,
                                     quiz_page, quiz_show, story)
from nanollm.world.facts import (ANIMALS, COUNTRIES, DIGITS, FAMILIES, STATEMENTS, Fact, Question,
                                 all_facts, bare_answer, canonical_sentence, family_answers, fields,
                                 question_text)

# -----------------------------------------------------------------------------
# Answers in styles. SFT uses a few of them; preference pairs contrast all of them.

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
SFT_STYLE_SHARES = {"sentence": 0.73, "terse": 0.10, "verbose": 0.12, "flattery": 0.05}
SYSTEM_SHARE = 0.2     # share of SFT chats that open with a system message
TWO_TURN_SHARE = 0.15  # share of SFT chats where the user asks a second question

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
SYSTEM_PROMPTS = (
    "You are a helpful assistant.", "You answer questions about the world.",
    "You are a friendly tutor for children.", "Answer the user's question.",
    "You are a quiz helper.",
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
# The world: the facts, the split, and every data set made from them.

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

    def sample_fact(self, rng: random.Random, split: str = "taught") -> Fact:
        """A fact from `split`, each family equally likely (there are 100 sums but 22 animals)."""
        facts = self.split(split)
        family = rng.choice([f for f in FAMILIES if any(x.family == f for x in facts)])
        return rng.choice([f for f in facts if f.family == family])

    def fact_prompts(self, split: str) -> list[tuple[str, Fact]]:
        """For every fact, its canonical sentence cut before the answer:
        ("The capital of Peru is", Fact("capital", "Peru", "Lima"))."""
        prompts = []
        for fact in self.split(split):
            template = STATEMENTS[fact.family][0]
            prompts.append((template[:template.index(" {a}")].format(**fields(fact)), fact))
        return prompts

    def questions(self, split: str, n: int | None = None, seed: int = 0) -> list[Question]:
        """One question per fact of `split` (n=None), or n questions with families balanced."""
        rng = random.Random(seed)
        facts = self.split(split) if n is None else [self.sample_fact(rng, split) for _ in range(n)]
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
        """n chats {"messages": [...], "styles": [style of each assistant turn]}: a user asks
        about facts of `split`, the assistant answers in styles drawn from SFT_STYLE_SHARES."""
        rng = random.Random(seed)
        styles, weights = list(SFT_STYLE_SHARES), list(SFT_STYLE_SHARES.values())
        chats = []
        for _ in range(n):
            messages, chat_styles = [], []
            if rng.random() < SYSTEM_SHARE:
                messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
            for _ in range(2 if rng.random() < TWO_TURN_SHARE else 1):
                fact = self.sample_fact(rng, split)
                style = rng.choices(styles, weights)[0]
                messages.append({"role": "user", "content": question_text(fact, rng)})
                messages.append({"role": "assistant", "content": respond(fact, style, rng)})
                chat_styles.append(style)
            chats.append({"messages": messages, "styles": chat_styles})
        return chats


def world_corpus(source: str, n_chars: int, seed: int = 0) -> dict:
    """What corpus.prepare_corpus needs to prepare the world's text: its documents and prompts to
    sample during pretraining ({} for any other source, which prepare_corpus reads itself)."""
    if source != "world":
        return {}
    world = World(seed=seed)
    prompts = [p for p, _ in world.fact_prompts("held_out")[:2]] + ["Once upon a time"]
    return dict(documents=world.pretraining_documents(n_chars, seed), prompts=prompts)
