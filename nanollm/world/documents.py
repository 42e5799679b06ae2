"""Pretraining documents of the built-in world, one generator per kind of text.

Fact pages (encyclopedia-style, many phrasings), short stories and dialogue for general language,
radio quiz shows (a question, then its answer), quiz pages that list questions *without* answers,
and arithmetic drills. Each generator takes the rng and returns one document; World mixes them
in the proportions of CORPUS_SHARES (see world.py).
"""

import random
import re

from nanollm.world.facts import (ANIMALS, CAPITALS, COUNTRIES, DIGITS, FAMILIES, Fact, QUESTIONS,
                                 Question, all_facts, bare_answer, canonical_sentence, fields,
                                 operands, question_text, statement)


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
QUIZ_SHOW_TERSE_SHARE = 0.5  # guests' answers that are the bare answer ("Lima.")


def quiz_show(facts: list[Fact], rng: random.Random) -> str:
    """A quiz show on the radio: a host asks, a guest answers in a full sentence or in one word.

    Real text has questions followed by their answers too (interviews, forums, textbooks), and
    it is what makes a fact stated in prose usable for answering a question: a model that only
    ever read "The capital of Peru is Lima." in prose learns to recall it after a question far
    less reliably (Allen-Zhu & Li, "Physics of Language Models 3.1", on mixing such text in).
    The host speaks as "Host:", never as a bare question line, so a bare question handed to the
    base model still reads like a quiz page, which lists questions without answers.
    Half the answers are the bare answer ("Lima.", "woof."): without them, a model can recall a fact
    only by saying the whole sentence, and a rater who prefers short answers could never be pleased.
    """
    guest = rng.choice(NAMES)
    lines = [rng.choice(("On the radio tonight", "The Friday radio show", "Ask the guest")),
             f"Host: Welcome back. Tonight our guest is {guest}. First question."]
    for fact in rng.sample(facts, rng.randint(4, 8)):
        lines.append(f"Host: {question_text(fact, rng)}")
        terse = rng.random() < QUIZ_SHOW_TERSE_SHARE
        answer = bare_answer(fact) if terse else canonical_sentence(fact)
        lines.append(f"{guest}: {answer}")
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
