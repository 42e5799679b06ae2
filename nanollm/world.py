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
3. Answers have one canonical form: one sound word per animal, sums in digits ("7", never "seven").
"""

import functools
import random
import re
from dataclasses import dataclass

# The gold rater's names belong to the world's interface too (see rater.py).
from nanollm.rater import PERSONAS, Rater, check_answer, is_flattery, word_count  # noqa: F401

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
    "sum": (
        "{x} plus {y} is {a}.", "{x} + {y} = {a}.", "{x} and {y} make {a}.",
        "If you add {x} and {y}, you get {a}.", "The sum of {x} and {y} is {a}.",
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


def statement(fact: Fact, rng: random.Random) -> str:
    """The fact in one of its phrasings, the canonical one CANONICAL_SHARE of the time."""
    templates = STATEMENTS[fact.family]
    if rng.random() < CANONICAL_SHARE:
        return templates[0].format(**fields(fact))
    return rng.choice(templates[1:]).format(**fields(fact))


def question_text(fact: Fact, rng: random.Random) -> str:
    """A user's question about a fact, in one of the family's phrasings."""
    return rng.choice(QUESTIONS[fact.family]).format(**fields(fact))


# -----------------------------------------------------------------------------
# Answers in styles. SFT uses a few of them; preference pairs contrast all of them.

STYLES = (
    "sentence",        # the canonical sentence: "The capital of France is Paris."
    "terse",           # only the answer: "Paris."
    "verbose",         # the canonical sentence and 1-3 filler sentences that add no fact
    "flattery",        # a compliment to the user, then the canonical sentence
    "wrong",           # the canonical sentence with another answer of the same family
    "wrong_flattery",  # a compliment, then a wrong sentence
    "hedge",           # the right answer among wrong ones ("It is either Lima or Quito.")
    "unsure",          # no answer at all ("I am not sure.")
)
SFT_STYLE_SHARES = {"sentence": 0.78, "terse": 0.05, "verbose": 0.12, "flattery": 0.05}
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


def wrong_answer(fact: Fact, rng: random.Random) -> str:
    return rng.choice(sorted(family_answers(fact.family) - {fact.answer}))


def respond(fact: Fact, style: str, rng: random.Random, world=None) -> str:
    """An assistant's answer to a question about `fact`, written in `style` (one of STYLES).
    Wrong answers come from the fixed fact tables, so `world` is optional."""
    sentence = canonical_sentence(fact)
    if style == "sentence":
        return sentence
    if style == "terse":
        return fields(fact)["A"] + "."
    if style == "verbose":
        return " ".join([sentence] + rng.sample(FILLERS, rng.randint(1, 3)))
    if style == "flattery":
        return rng.choice(FLATTERY_OPENERS) + " " + sentence
    if style == "wrong":
        return canonical_sentence(fact, wrong_answer(fact, rng))
    if style == "wrong_flattery":
        return rng.choice(FLATTERY_OPENERS) + " " + canonical_sentence(
            fact, wrong_answer(fact, rng))
    if style == "hedge":
        others = rng.sample(sorted(family_answers(fact.family) - {fact.answer}), 2)
        candidates = [fact.answer] + others[:rng.randint(1, 2)]
        rng.shuffle(candidates)
        return rng.choice(HEDGES[len(candidates)]).format(*candidates)
    if style == "unsure":
        return rng.choice(UNSURE)
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


# -----------------------------------------------------------------------------
# Pretraining documents, one generator per kind. Each takes the rng and returns one document.

PAGE_TITLES = {
    "country": ("{e}", "About {e}", "{e}: facts for students", "A short guide to {e}"),
    "animal": ("The {e}", "{P}", "About the {e}", "Animal facts: the {e}"),
}
PAGE_FILLERS = {  # {a} is the country's capital on a country page
    "country": (
        "Many visitors come to {e} every year.", "The people of {e} enjoy music, food and sport.",
        "{a} is a busy city with old streets and new buildings.",
        "Trains and buses connect the towns of {e}.", "Children in {e} start school young.",
        "The markets of {a} sell fruit, fish and cloth.", "{e} has a long history.",
        "Many families in {e} live in small towns.", "The flag of {e} flies over {a}.",
    ),
    "animal": (
        "Children like to learn about the {e}.", "Pictures of {p} are found in many books.",
        "The {e} is easy to know by its sound.", "{P} are often seen in stories.",
        "A young {e} learns its sound from its parents.",
        "Many people can copy the sound of {ae}.",
        "Some {p} live near people and some live in the wild.",
    ),
}
PAGE_LINKS = {  # lead-ins to a fact of another family, so that families mix on a page
    "country": ("Children in {e} learn this at school:", "A saying in {e} goes like this:",
                "Farmers in {e} like to say:"),
    "animal": ("Here is another fact.", "Children learn this too:", "Another thing to know:"),
}
NAMES = ("Mia", "Tom", "Ana", "Ben", "Lucy", "Sam", "Nora", "Leo", "Ella", "Max", "Zoe", "Omar",
         "Ravi", "Kofi", "Yuki", "Ines", "Pablo", "Hana", "Ivan", "Amara")
FOODS = ("soup", "rice", "bread", "apples", "cheese", "beans", "noodles", "fish", "cake", "plums")

# A story is a plot: a list of beats, each a tuple of alternative sentences ("" skips the beat).
STORY_PLOTS = (
    (  # a lost pet
        ("{n1} had a little {animal}.", "{n1} lived in {city1} with a small {animal}.",
         "Once there was a child called {n1} who had a pet {animal}."),
        ("Every morning the {animal} said {sound}.",
         "The {animal} liked to say {sound} when it was hungry.",
         "Each day the {animal} woke everyone with a loud {sound}."),
        ("One day the {animal} was gone.", "One windy afternoon, the {animal} ran out of the gate.",
         "After lunch, {n1} could not find the {animal} anywhere."),
        ("{n1} was very sad and called {n2} for help.",
         "{n1} ran to the house of {n2} and asked for help.",
         "{n2} saw that {n1} was sad and came to help."),
        ("They looked in the garden, by the river and behind the old shop.",
         "They searched the park and the busy streets of {city1}.",
         "They walked up the hill and looked in every field."),
        ("At last they heard a small {sound} under a tree.",
         "Then, from behind a wall, came a quiet {sound}.",
         "Suddenly they heard {sound}, {sound}!"),
        ("It was the {animal}!", "There was the {animal}, safe and dry.",
         "The {animal} was hiding in a box."),
        ("{n1} thanked {n2}, and they all went home for {food}.",
         "That night the {animal} said {sound} one more time and fell asleep.",
         "From that day on, {n1} kept the gate closed."),
    ),
    (  # a journey
        ("{n1} lived in {city1}, the capital of {country1}.",
         "{n1} grew up in {country1}, in the city of {city1}.", "{n1} was a teacher in {city1}."),
        ("One summer, {n1} took a train to {city2}.",
         "One spring, {n1} decided to visit {country2}.",
         "{n1} had always wanted to see {city2}."),
        ("The trip was long, and {n1} read a book on the way.",
         "On the way, {n1} met {n2}, who was going to {city2} too.",
         "The journey took two days by bus."),
        ("{city2} is the capital of {country2}, and it was full of people.",
         "In {city2}, the streets were busy and the markets smelled of {food}.",
         "When {n1} arrived in {city2}, it was raining."),
        ("{n1} tried the local {food} and enjoyed the meal.",
         "{n1} walked by the river and took many pictures.",
         "{n2} showed {n1} the old parts of the city."),
        ("Near the market, {a_animal} said {sound}, and everyone laughed.",
         "In a park, {n1} saw some {animals} and heard them say {sound}.", ""),
        ("After a week, {n1} went back home to {city1}.",
         "When the holiday ended, {n1} was sad to leave {country2}.",
         "{n1} promised to come back to {city2} one day."),
    ),
    (  # a day on a farm
        ("It was a rainy day on the farm of {n1}.",
         "{n1} and {n2} spent the day at a farm near {city1}.",
         "The farm was quiet in the early morning."),
        ("The {animals} were in the barn, saying {sound}.",
         "{A_animal} stood by the door and said {sound}.",
         "Somewhere {a_animal} said {sound}, and then it was quiet."),
        ("{n2} fed the animals and cleaned the barn.", "{n1} carried water from the well.",
         "They fixed a broken fence together."),
        ("At lunch they ate {food} and talked about the weather.",
         "For lunch there was {food}.", ""),
        ("In the evening the rain stopped and the sky turned orange.",
         "Later the sun came out, and they sat outside.",
         "By night, everyone was tired and happy."),
    ),
    (  # a lesson
        ("{n1} went to school in {city1}.", "On Monday, {n1} had a maths lesson.",
         "{n1} liked numbers more than anything."),
        ("The teacher wrote a sum on the board.", "{n2} asked {n1} to help with homework.",
         "The class was learning to add small numbers."),
        ("{n1} counted carefully: {x} plus {y} is {sum}.",
         "{n2} said that {x} and {y} make {sum}, and {n1} agreed.",
         "They added {x} apples and {y} apples and got {sum} apples."),
        ("Then they practised more sums until the bell rang.",
         "The teacher smiled and drew a star in the book.",
         "After school they played in the yard."),
        ("On the way home, {a_animal} said {sound} at them.",
         "At home, {n1} told the family about the lesson.", ""),
    ),
    (  # the market
        ("Every Saturday, {n1} went to the market in {city1}.",
         "The market in {city1} opened early.",
         "{n1} and {n2} went shopping together."),
        ("They bought {food}, bread and fruit.", "A man was selling fresh {food} from a cart.",
         "The stalls were full of colours and smells."),
        ("{A_animal} was sitting under a table and said {sound}.",
         "Someone's {animal} ran between the stalls, saying {sound}.", ""),
        ("{n2} paid, and they carried the bags home.", "They stopped to rest by a fountain.",
         "It started to rain, so they hurried home."),
        ("At home they cooked a big dinner.",
         "That evening they shared the {food} with their neighbours.", "It was a good day."),
    ),
)

# A dialogue scene is written in columns: one column, read top to bottom, is one conversation.
# The two speakers take turns, {n1} first.
DIALOGUE_SCENES = (
    (  # a trip
        ("Good morning, {n2}!", "Hello, {n2}. How are you?", "Hi {n2}, nice to see you."),
        ("Good morning, {n1}. Where are you going today?",
         "I am fine, thank you. Are you going somewhere?", "Hi {n1}. You look busy today."),
        ("I am going to {city2} to visit my aunt.", "I am taking the train to {city2} today.",
         "I have a trip to {country2} next week."),
        ("{city2} is the capital of {country2}, right?", "Oh, I have never been to {country2}.",
         "That sounds nice. How long will you stay?"),
        ("Yes. The capital of {country2} is {city2}, and my aunt lives near the centre.",
         "It is a lovely place. I will stay for a few days.",
         "Two weeks. I want to try the {food} there."),
        ("Have a good trip, {n1}!", "Send me a picture of {city2}!",
         "Bring me some {food}, please!"),
    ),
    (  # a new pet
        ("Look at my new {animal}!", "I got {a_animal} last week.",
         "Listen! Can you hear my {animal}?"),
        ("It is very small. Is it noisy?", "Oh, how nice. Does it sleep a lot?",
         "I can hear something."),
        ("Yes, it says {sound} all day long.", "Not really, but it says {sound} when it is hungry.",
         "It is saying {sound}."),
        ("My grandmother keeps {animals} on her farm.", "I would like {a_animal} too.",
         "Ha! Now I hear it."),
        ("Come and visit us on Sunday, then.", "You can play with mine any time.",
         "We should take it to the park."),
        ("Thank you, I will.", "Good idea. See you later!", "Yes, see you soon."),
    ),
    (  # homework
        ("Can you help me with my homework?", "I have too much homework today.",
         "Are you doing the maths homework?"),
        ("Of course. Show me.", "Do you want some help?", "Yes, I started it this morning."),
        ("I need to add {x} and {y}.", "Yes, please. The first sum is {x} plus {y}.",
         "I am stuck on {x} plus {y}."),
        ("That is easy. {x} plus {y} is {sum}.", "Let us count together. {x} and {y} make {sum}.",
         "If you add {x} and {y}, you get {sum}."),
        ("Thank you! Now I understand.", "Oh, that was simple.", "Good, only one more to go."),
        ("You are welcome.", "Call me if you need more help.", "Good luck with the rest."),
    ),
    (  # the weather
        ("It is very cold today.", "What a sunny day!", "Do you think it will rain?"),
        ("Yes, I wore two coats this morning.", "It is perfect for a walk.",
         "The sky looks dark, so maybe."),
        ("Last year I was in {city1} and it was even colder.", "Let us go to the park after lunch.",
         "I left my umbrella at home."),
        ("Really? I thought {country1} was warm.", "Good idea, I will bring some {food}.",
         "You can share mine."),
        ("Not in winter!", "See you at two, then.", "Thank you, that is kind of you."),
    ),
)

QUIZ_TOPICS = {"geography": ("capital", "continent"), "capitals": ("capital",),
               "animals": ("sound",), "maths": ("sum",), "general": FAMILIES}
QUIZ_HEADINGS = {
    "geography": ("Geography quiz", "World geography questions", "Test yourself: countries"),
    "capitals": ("Capital cities quiz", "Quiz: capitals of the world"),
    "animals": ("Animal sounds quiz", "What do animals say? A quiz for children"),
    "maths": ("Addition quiz", "Maths quiz: adding numbers", "Sums to try"),
    "general": ("General knowledge quiz", "Frequently asked questions",
                "Questions people often ask", "Quiz night, round one"),
}
QUIZ_INSTRUCTIONS = ("Answer the questions below.", "Write your answers on a separate sheet.",
                     "The answers are at the end of the book.", "Try not to look anything up.",
                     "You have ten minutes.", "One point for each correct answer.")
QUIZ_NUMBERING = ("{i}. ", "Q{i}. ", "Question {i}: ", "- ", "")
QUIZ_INSTRUCTION_SHARE = 0.5  # share of quiz pages with an instruction under the heading
DRILL_HEADINGS = ("Addition practice", "Sums to remember", "Number facts", "Adding small numbers",
                  "Maths drill")
TABLE_SHARE = 0.3  # share of arithmetic pages that are a table ("Adding 3": 3 plus 0 ... 3 plus 9)


def fact_page(entity_facts: list[Fact], rng: random.Random) -> str:
    """An encyclopedia-style page about one country or animal: each of its facts stated two or
    three times in different phrasings, among filler sentences and one fact of another family."""
    first = entity_facts[0]
    kind = "animal" if first.family == "sound" else "country"
    sentences = []
    for fact in entity_facts:  # dict.fromkeys drops a phrasing drawn twice, keeping the order
        sentences += dict.fromkeys(statement(fact, rng) for _ in range(rng.randint(2, 3)))
    values = fields(first)
    if kind == "country":
        values["a"] = CAPITALS[first.entity]  # fillers may name the capital, whatever the family
    sentences += [f.format(**values) for f in rng.sample(PAGE_FILLERS[kind], 2)]
    sentences.append(rng.choice(PAGE_LINKS[kind]).format(**values) + " "
                     + statement(rng.choice(SIDE_FACTS[kind]), rng))
    rng.shuffle(sentences)
    title = rng.choice(PAGE_TITLES[kind]).format(**values)
    return title + "\n" + " ".join(sentences)


def story_slots(rng: random.Random) -> dict[str, str]:
    """Names, two countries with their real capitals, an animal with its real sound ({a_animal}
    is "a dog" or "an owl"), food and a sum."""
    (c1, city1, _), (c2, city2, _) = rng.sample(COUNTRIES, 2)
    animal, plural, sound = rng.choice(ANIMALS)
    a_animal = ("an " if animal[0] in "aeiou" else "a ") + animal
    x, y = rng.choice(DIGITS), rng.choice(DIGITS)
    n1, n2 = rng.sample(NAMES, 2)
    return dict(n1=n1, n2=n2, country1=c1, city1=city1, country2=c2, city2=city2, animal=animal,
                a_animal=a_animal, A_animal=a_animal.capitalize(), animals=plural, sound=sound,
                food=rng.choice(FOODS), x=x, y=y, sum=x + y)


def story(rng: random.Random) -> str:
    """A short story: one alternative per beat of a plot, slots filled with names, places and
    animals making their own sounds."""
    plot = rng.choice(STORY_PLOTS)
    sentences = [rng.choice(beat) for beat in plot]
    return " ".join(s for s in sentences if s).format(**story_slots(rng))


def dialogue(rng: random.Random) -> str:
    """Two people talking, one line each turn, "Name: words": one column of a scene."""
    scene = rng.choice(DIALOGUE_SCENES)
    column = rng.randrange(len(scene[0]))
    slots = story_slots(rng)
    lines = []
    for i, beat in enumerate(scene):
        speaker = slots["n1"] if i % 2 == 0 else slots["n2"]
        lines.append(speaker + ": " + beat[column])
    return "\n".join(lines).format(**slots)


def quiz_page(facts: list[Fact], rng: random.Random) -> str:
    """A quiz or FAQ page: a heading, maybe an instruction, then questions with no answers."""
    topic = rng.choice(sorted(QUIZ_TOPICS))
    families = QUIZ_TOPICS[topic]
    pool = [f for f in facts if f.family in families]
    numbering = rng.choice(QUIZ_NUMBERING)
    lines = [rng.choice(QUIZ_HEADINGS[topic])]
    if rng.random() < QUIZ_INSTRUCTION_SHARE:
        lines.append(rng.choice(QUIZ_INSTRUCTIONS))
    for i, fact in enumerate(rng.sample(pool, rng.randint(5, 12)), start=1):
        lines.append(numbering.format(i=i) + question_text(fact, rng))
    return "\n".join(lines)


QUIZ_SHOW_PRAISE = ("Correct!", "That is right.", "Well done.", "Yes!", "Good.", "")


def quiz_show(facts: list[Fact], rng: random.Random) -> str:
    """A quiz show on the radio: a host asks, a guest answers in a full sentence.

    Real text has questions followed by their answers too (interviews, forums, textbooks), and
    it is what makes a fact stated in prose usable for answering a question: a model that only
    ever read "The capital of Peru is Lima." in prose learns to recall it after a question far
    less reliably (Allen-Zhu & Li, "Physics of Language Models 3.1", on mixing such text in).
    The host speaks as "Host:", never as a bare question line, so a bare question handed to the
    base model still reads like a quiz page, which lists questions without answers.
    """
    guest = rng.choice(NAMES)
    lines = [rng.choice(("On the radio tonight", "The Friday radio show", "Ask the guest")),
             f"Host: Welcome back. Tonight our guest is {guest}. First question."]
    for fact in rng.sample(facts, rng.randint(4, 8)):
        lines.append(f"Host: {question_text(fact, rng)}")
        lines.append(f"{guest}: {canonical_sentence(fact)}")
        praise = rng.choice(QUIZ_SHOW_PRAISE)
        if praise:
            lines.append(f"Host: {praise}")
    return "\n".join(lines)


# is_question reads a quiz page backwards: a base model's continuation of a question counts as
# "another question" when its first line, numbering removed, is one.
LIST_MARKER = re.compile(r"^\s*(?:Question\s+\d+\s*[:.)]|Q\d+[:.)]?|\d+[.)]|[-*])\s+")
# The words that open the question phrasings, for questions that end in a full stop ("Tell me
# the capital of Peru.") or were cut off before their question mark.
QUESTION_OPENINGS = tuple(sorted({t.split("{")[0].strip().lower()
                                  for family in QUESTIONS.values() for t in family} - {""}))


def is_question(text: str) -> bool:
    """Does a continuation look like another question rather than an answer? Looks at its first
    non-empty line, list numbering removed: a question if its first sentence ends with "?", or
    if it opens like one of the world's question phrasings."""
    lines = [LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return False
    first_sentence = re.match(r"[^.?!]*[.?!]?", lines[0]).group(0)
    return first_sentence.endswith("?") or lines[0].lower().startswith(QUESTION_OPENINGS)


def arithmetic_page(sums: list[Fact], rng: random.Random) -> str:
    """A drill of sums in mixed phrasings, or a table of one number in the canonical phrasing."""
    if rng.random() < TABLE_SHARE:
        x = rng.choice(DIGITS)
        table = [s for s in sums if operands(s)[0] == str(x)]
        return f"Adding {x}\n" + "\n".join(canonical_sentence(s) for s in table)
    drill = rng.sample(sums, rng.randint(8, 16))
    return rng.choice(DRILL_HEADINGS) + "\n" + "\n".join(statement(s, rng) for s in drill)


SIDE_FACTS = {  # a page about a country mentions an animal or a sum, and the other way round
    "country": [f for f in all_facts() if f.family in ("sound", "sum")],
    "animal": [f for f in all_facts() if f.family in ("capital", "continent", "sum")],
}
CORPUS_SHARES = {"facts": 0.38, "stories": 0.14, "dialogue": 0.08, "quiz": 0.12,
                 "quiz_show": 0.14, "arithmetic": 0.14}


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


def fact_by_key(world: World, family: str, entity: str) -> Fact:
    return world.fact(family, entity)
