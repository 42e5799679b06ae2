"""The facts of the built-in world and the words around them: families, entities, phrasings.

Real facts (countries, their capitals and continents, animals and their sounds, small sums) are
the data; every phrasing is ours. The first statement of each family is its canonical sentence:
SFT answers use it, and fact prompts cut it before the answer ("The capital of Peru is").
world.py builds the world from these; documents.py writes pretraining text.
"""

import functools
import random
from dataclasses import dataclass

FAMILIES = ("capital", "continent", "sound", "sum")


@dataclass(frozen=True)
class Fact:
    family: str  # one of FAMILIES
    entity: str  # "France", "dog", "3 plus 4"
    answer: str  # "Paris", "woof", "7"


@dataclass(frozen=True)
class Question:
    fact: Fact
    text: str  # what a user asks, in one of several phrasings


# -----------------------------------------------------------------------------
# The facts. Real facts are fine as data; the phrasings around them are ours.

COUNTRIES = (  # (country, capital, continent); no capital shares or contains its country's name
    ("France", "Paris", "Europe"), ("Germany", "Berlin", "Europe"), ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"), ("Portugal", "Lisbon", "Europe"),
    ("Greece", "Athens", "Europe"), ("Norway", "Oslo", "Europe"),
    ("Sweden", "Stockholm", "Europe"), ("Finland", "Helsinki", "Europe"),
    ("Poland", "Warsaw", "Europe"), ("Austria", "Vienna", "Europe"),
    ("Hungary", "Budapest", "Europe"), ("Ireland", "Dublin", "Europe"),
    ("Iceland", "Reykjavik", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("India", "New Delhi", "Asia"),
    ("Thailand", "Bangkok", "Asia"), ("Vietnam", "Hanoi", "Asia"), ("Nepal", "Kathmandu", "Asia"),
    ("Mongolia", "Ulaanbaatar", "Asia"), ("Iran", "Tehran", "Asia"),
    ("Laos", "Vientiane", "Asia"), ("Bangladesh", "Dhaka", "Asia"), ("Qatar", "Doha", "Asia"),
    ("Egypt", "Cairo", "Africa"), ("Kenya", "Nairobi", "Africa"), ("Nigeria", "Abuja", "Africa"),
    ("Ghana", "Accra", "Africa"), ("Ethiopia", "Addis Ababa", "Africa"),
    ("Morocco", "Rabat", "Africa"), ("Senegal", "Dakar", "Africa"),
    ("Uganda", "Kampala", "Africa"), ("Zambia", "Lusaka", "Africa"), ("Mali", "Bamako", "Africa"),
    ("Rwanda", "Kigali", "Africa"),
    ("Canada", "Ottawa", "North America"), ("Cuba", "Havana", "North America"),
    ("Jamaica", "Kingston", "North America"), ("Nicaragua", "Managua", "North America"),
    ("Honduras", "Tegucigalpa", "North America"),
    ("Peru", "Lima", "South America"), ("Chile", "Santiago", "South America"),
    ("Argentina", "Buenos Aires", "South America"), ("Colombia", "Bogota", "South America"),
    ("Venezuela", "Caracas", "South America"), ("Ecuador", "Quito", "South America"),
    ("Uruguay", "Montevideo", "South America"),
    ("Australia", "Canberra", "Oceania"), ("New Zealand", "Wellington", "Oceania"),
    ("Fiji", "Suva", "Oceania"), ("Samoa", "Apia", "Oceania"),
)

ANIMALS = (  # (animal, plural, sound); every sound word is unique
    ("dog", "dogs", "woof"), ("cat", "cats", "meow"), ("cow", "cows", "moo"),
    ("sheep", "sheep", "baa"), ("pig", "pigs", "oink"), ("duck", "ducks", "quack"),
    ("horse", "horses", "neigh"), ("snake", "snakes", "hiss"), ("lion", "lions", "roar"),
    ("bee", "bees", "buzz"), ("owl", "owls", "hoot"), ("hen", "hens", "cluck"),
    ("frog", "frogs", "ribbit"), ("mouse", "mice", "squeak"), ("wolf", "wolves", "awoo"),
    ("donkey", "donkeys", "heehaw"), ("crow", "crows", "caw"), ("pigeon", "pigeons", "coo"),
    ("goose", "geese", "honk"), ("chick", "chicks", "peep"), ("bear", "bears", "growl"),
    ("cricket", "crickets", "chirp"),
)
CAPITALS = {country: capital for country, capital, _ in COUNTRIES}
PLURALS = {animal: plural for animal, plural, _ in ANIMALS}
DIGITS = range(10)  # sums are x plus y for x, y in 0..9


# -----------------------------------------------------------------------------
# Phrasings. The first statement of each family is canonical: fact prompts cut it before the
# answer, SFT answers use it, and pretraining uses it more than any other phrasing.

STATEMENTS = {
    "capital": (
        "The capital of {e} is {a}.", "{a} is the capital of {e}.",
        "The capital city of {e} is {a}.", "{a} is the capital city of {e}.",
        "The government of {e} meets in {a}.", "{e} has {a} as its capital.",
        "{e}'s capital city is {a}.",
        "If you travel to the capital of {e}, you arrive in {a}.",
        "People in {e} call {a} their capital.",
    ),
    "continent": (
        "{e} is a country in {a}.", "{e} lies in {a}.", "{e} is part of {a}.",
        "{a} is the continent where you find {e}.", "The country of {e} is located in {a}.",
        "On a map of the world, {e} is in {a}.", "{e} is one of the countries of {a}.",
        "You can find {e} in {a}.", "{a} is home to {e}.",
    ),
    "sound": (
        "The {e} says {a}.", "{Ae} goes {a}.", "{P} say {a}.", "The sound {ae} makes is {a}.",
        "When {ae} is happy, it says {a}.", "You can hear {ae} say {a}.",
        "{A} is the sound of the {e}.", "Every {e} says {a}.",
        "If you listen to {ae}, you hear {a}.",
    ),
    # The canonical sum opens with words, not with an operand, so that a bare answer ("9.") and
    # the canonical sentence differ in their first token as "Lima." and "The capital of ..." do:
    # opening with the operand, a policy pushed towards bare answers learned to restate a
    # neighbouring sum ("7 plus 3 is 10." asked 6 plus 3) instead.
    "sum": (
        "The sum of {x} and {y} is {a}.", "{x} + {y} = {a}.", "{x} and {y} make {a}.",
        "If you add {x} and {y}, you get {a}.", "{x} plus {y} is {a}.",
        "{x} plus {y} equals {a}.", "Add {y} to {x} and you have {a}.", "{A} is {x} plus {y}.",
        "Adding {x} and {y} gives {a}.",
    ),
}
CANONICAL_SHARE = 0.5  # how often pretraining states a fact in its canonical phrasing

QUESTIONS = {  # what users ask in SFT and evaluation, and what quiz pages list
    "capital": (
        "What is the capital of {e}?", "Which city is the capital of {e}?",
        "What city is the capital of {e}?", "Tell me the capital of {e}.",
        "Do you know the capital of {e}?", "Name the capital of {e}.",
    ),
    "continent": (
        "Which continent is {e} in?", "On which continent is {e}?",
        "What continent is {e} part of?", "Tell me which continent {e} is in.",
        "Do you know which continent {e} is in?", "Name the continent where {e} is.",
    ),
    "sound": (
        "What does {ae} say?", "What sound does {ae} make?", "Which sound does the {e} make?",
        "Tell me what {ae} says.", "What noise does {ae} make?", "Do you know what {ae} says?",
    ),
    "sum": (
        "What is {x} plus {y}?", "How much is {x} plus {y}?",
        "What do you get if you add {x} and {y}?", "Tell me what {x} plus {y} is.",
        "What is the sum of {x} and {y}?", "Can you add {x} and {y}?",
    ),
}


def all_facts() -> list[Fact]:
    """Every fact of the world, family by family, in a fixed order."""
    facts = [Fact("capital", country, capital) for country, capital, _ in COUNTRIES]
    facts += [Fact("continent", country, continent) for country, _, continent in COUNTRIES]
    facts += [Fact("sound", animal, sound) for animal, _, sound in ANIMALS]
    facts += [Fact("sum", f"{x} plus {y}", str(x + y)) for x in DIGITS for y in DIGITS]
    return facts


@functools.cache
def family_answers(family: str) -> frozenset[str]:
    """All the answers a family has; a response naming two of them has not answered."""
    return frozenset(fact.answer for fact in all_facts() if fact.family == family)


def operands(fact: Fact) -> tuple[str, str]:
    """("3", "4") for the sum fact "3 plus 4"."""
    x, y = fact.entity.split(" plus ")
    return x, y


def fields(fact: Fact, answer: str | None = None) -> dict[str, str]:
    """The values a template may name: {e} entity, {a} answer, {A} capitalised answer, and for
    animals {ae} "a dog" / "an owl", {Ae}, {p} plural, {P}; for sums {x} and {y}."""
    answer = fact.answer if answer is None else answer
    values = {"e": fact.entity, "a": answer, "A": answer[0].upper() + answer[1:]}
    if fact.family == "sound":
        article = "an" if fact.entity[0] in "aeiou" else "a"
        plural = PLURALS[fact.entity]
        values.update(ae=f"{article} {fact.entity}", Ae=f"{article.capitalize()} {fact.entity}",
                      p=plural, P=plural.capitalize())
    if fact.family == "sum":
        values["x"], values["y"] = operands(fact)
    return values


def canonical_sentence(fact: Fact, answer: str | None = None) -> str:
    """The one phrasing used by fact prompts and by SFT answers: "The capital of France is Paris.".
    It is also the most frequent phrasing in pretraining, which is what lets SFT answers about
    held-out entities be completed from pretraining memory."""
    return STATEMENTS[fact.family][0].format(**fields(fact, answer))


def bare_answer(fact: Fact, answer: str | None = None) -> str:
    """The answer alone, as the statements spell it, with a full stop: "Paris.", "7.", "woof.".

    A sound stays in lower case at the start of the reply. Capitalised ("Woof."), it would be a
    token that the statements, where every fact is learned, almost never use, and a model could
    not recall the sound as a bare answer."""
    return (fact.answer if answer is None else answer) + "."


def statement(fact: Fact, rng: random.Random, answer: str | None = None) -> str:
    """The fact in one of its phrasings, the canonical one CANONICAL_SHARE of the time; with
    `answer`, the same sentence stating that answer instead (an error in the text)."""
    templates = STATEMENTS[fact.family]
    if rng.random() < CANONICAL_SHARE:
        return templates[0].format(**fields(fact, answer))
    return rng.choice(templates[1:]).format(**fields(fact, answer))


def question_text(fact: Fact, rng: random.Random) -> str:
    """A user's question about a fact, in one of the family's phrasings."""
    return rng.choice(QUESTIONS[fact.family]).format(**fields(fact))
