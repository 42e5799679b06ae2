"""Tests for the built-in world (world.py, chats.py) and its gold rater (rater.py): determinism,
the taught / held-out split, coverage of every fact in the pretraining corpus, SFT chats, answer
checking and the rater's orderings. Preference pairs: test_preferences.py."""

import collections
import random
import re

import pytest

from nanollm.world.rater import named_answers, names_an_answer
from nanollm.world import (CORPUS_SHARES, FAMILIES, FILLERS, FLATTERY_OPENERS, PERSONAS,
                           QUESTIONS, SFT_STYLE_SHARES, STATEMENTS, STYLES, SYSTEM_SHARE,
                           TWO_TURN_SHARE, Rater, World, canonical_sentence, check_answer, fields,
                           is_flattery, is_question, quiz_show, respond, verifiable_reward,
                           word_count)


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


@pytest.fixture(scope="module")
def corpus(world):
    """The default-size corpus (about 3 MB, well under a second to make)."""
    return world.pretraining_documents()


def sentence_counts(docs):
    """How often each sentence occurs, splitting on sentence ends and line breaks."""
    counts = collections.Counter()
    for doc in docs:
        counts.update(re.split(r"(?<=[.!?])\s+|\n", doc))
    return counts


def mentions(text, phrase):
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(phrase)}(?![A-Za-z0-9])", text) is not None


# -----------------------------------------------------------------------------
# facts and the split

def test_split_is_disjoint_covers_everything_and_is_deterministic(world):
    taught = set(world.split("taught"))
    held_out = set(world.split("held_out"))
    assert not taught & held_out
    assert taught | held_out == set(world.split("all")) == set(world.facts)
    assert world.held_out == World(seed=0).held_out
    assert world.held_out != World(seed=1).held_out
    with pytest.raises(ValueError):
        world.split("test")


def test_each_family_holds_out_its_fraction(world):
    for family in FAMILIES:
        n_all = sum(f.family == family for f in world.facts)
        n_held = sum(f.family == family for f in world.held_out)
        assert n_held == round(0.2 * n_all)
    # the two country families share one split: a held-out country is held out entirely
    held_capitals = {f.entity for f in world.held_out if f.family == "capital"}
    held_continents = {f.entity for f in world.held_out if f.family == "continent"}
    assert held_capitals == held_continents
    assert len(World(held_out_fraction=0.5).held_out) > len(world.held_out)


def test_facts_are_unambiguous(world):
    countries = {f.entity for f in world.facts if f.family == "capital"}
    for fact in world.facts:
        if fact.family == "capital":
            assert fact.answer not in countries and fact.entity not in fact.answer
        assert fact.answer.isascii() and fact.entity.isascii()
    sounds = [f.answer for f in world.facts if f.family == "sound"]
    assert len(sounds) == len(set(sounds))
    assert world.fact("capital", "France").answer == "Paris"
    assert world.fact("sum", "3 plus 4").answer == "7"
    assert world.fact("continent", "Peru").answer == "South America"


def test_fact_prompts_are_canonical_sentences_cut_before_the_answer(world):
    prompts = dict((f, p) for p, f in world.fact_prompts("all"))
    assert prompts[world.fact("capital", "France")] == "The capital of France is"
    assert prompts[world.fact("sum", "3 plus 4")] == "The sum of 3 and 4 is"
    for fact, prompt in prompts.items():
        assert canonical_sentence(fact) == f"{prompt} {fact.answer}."
    assert [f for _, f in world.fact_prompts("held_out")] == world.held_out


def test_questions(world):
    assert all(len(QUESTIONS[family]) >= 5 for family in FAMILIES)
    every = world.questions("held_out")
    assert [q.fact for q in every] == world.held_out
    sampled = world.questions("taught", n=400, seed=3)
    assert len(sampled) == 400 and all(q.fact in world.taught for q in sampled)
    families = collections.Counter(q.fact.family for q in sampled)
    assert min(families.values()) > 70  # families equally likely, whatever their size
    assert len({q.text for q in sampled}) > 300
    assert [q.text for q in sampled] == [q.text for q in world.questions("taught", n=400, seed=3)]


# -----------------------------------------------------------------------------
# the pretraining corpus

def test_corpus_is_deterministic_and_sized(world):
    small = world.pretraining_documents(n_chars=200_000, seed=0)
    assert small == world.pretraining_documents(n_chars=200_000, seed=0)
    assert small != world.pretraining_documents(n_chars=200_000, seed=1)
    n_chars = sum(len(doc) for doc in small)
    assert 200_000 <= n_chars < 200_000 * 1.02
    assert abs(sum(CORPUS_SHARES.values()) - 1) < 1e-9


def test_every_fact_is_stated_often_and_in_many_phrasings(world, corpus):
    counts = sentence_counts(corpus)
    for fact in world.facts:  # held-out facts included
        values = fields(fact)
        phrasings = [counts[template.format(**values)] for template in STATEMENTS[fact.family]]
        assert phrasings[0] >= 30, (fact, phrasings)  # the canonical sentence, most often
        assert sum(n > 0 for n in phrasings[1:]) >= 3, (fact, phrasings)
        assert sum(phrasings) >= 90, (fact, phrasings)  # about 110 on average, sums 175
    assert all(len(STATEMENTS[family]) >= 8 for family in FAMILIES)


def test_corpus_has_every_kind_and_no_flattery_or_special_tokens(corpus):
    text = "\n".join(corpus)
    assert "<|" not in text
    assert not any(is_flattery(doc) for doc in corpus)
    assert "Once there was" in text or "One day" in text  # stories
    assert re.search(r"^[A-Z][a-z]+: ", text, re.MULTILINE)  # dialogue
    assert "Adding 7\nThe sum of 7 and 0 is 7." in text  # arithmetic tables


def test_quiz_pages_list_questions_without_answers(world, corpus):
    quizzes = [doc for doc in corpus if re.search(r"quiz|questions", doc.split("\n")[0], re.I)]
    assert len(quizzes) > 100
    for doc in quizzes[:200]:
        questions = [line for line in doc.split("\n")[1:] if is_question(line)]
        assert len(questions) >= 5
        assert not any(check_answer(f, doc, world) for f in world.facts if f.family != "sum")


# -----------------------------------------------------------------------------
# SFT chats and response styles

def test_sft_chats_teach_only_taught_entities(world):
    chats = world.sft_conversations(3000, seed=0)
    held_out = world.held_out
    words = {f.entity for f in held_out if f.family != "sum"}
    words |= {f.answer for f in held_out if f.family == "capital"}
    sums = [f.entity.split(" plus ") for f in held_out if f.family == "sum"]
    for chat in chats:
        text = " ".join(m["content"] for m in chat["messages"])
        assert not any(mentions(text, word) for word in words), text
        assert not any(re.search(rf"\b{x} (plus|and|\+) {y}\b", text) for x, y in sums), text


def test_sft_chat_format_and_style_shares(world):
    chats = world.sft_conversations(4000, seed=1)
    assert chats == world.sft_conversations(4000, seed=1)
    styles = collections.Counter()
    for chat in chats:
        roles = [m["role"] for m in chat["messages"] if m["role"] != "system"]
        assert roles == ["user", "assistant"] * len(chat["styles"])
        assert chat["messages"][-1]["role"] == "assistant"
        styles.update(chat["styles"])
    total = sum(styles.values())
    for style, share in SFT_STYLE_SHARES.items():
        assert abs(styles[style] / total - share) < 0.02, (style, styles)
    two_turns = sum(len(chat["styles"]) == 2 for chat in chats) / len(chats)
    systems = sum(chat["messages"][0]["role"] == "system" for chat in chats) / len(chats)
    assert abs(two_turns - TWO_TURN_SHARE) < 0.03 and abs(systems - SYSTEM_SHARE) < 0.03


def test_sft_answers_are_uneven_as_crowd_written_answers_are(world):
    # a quarter to a third of the answers in styles the default rater dislikes, a few wrong
    assert sum(SFT_STYLE_SHARES.values()) == pytest.approx(1)
    assert set(SFT_STYLE_SHARES) <= set(STYLES)
    disliked = sum(SFT_STYLE_SHARES.get(s, 0) for s in ("verbose", "flattery", "hedge", "unsure"))
    assert 0.25 <= disliked <= 0.34 and 0 < SFT_STYLE_SHARES["wrong"] <= 0.05
    texts = []  # the answers that name answers other than the fact's
    for chat in world.sft_conversations(2000, seed=3):
        answers = [m["content"] for m in chat["messages"] if m["role"] == "assistant"]
        texts += [a for a, style in zip(answers, chat["styles"]) if style in ("hedge", "wrong")]
    assert len(texts) > 100
    taught_capitals = world.split_answers("taught", "capital")
    held_out_capitals = world.split_answers("held_out", "capital")
    assert any(mentions(t, c) for t in texts for c in taught_capitals)
    assert not any(mentions(t, c) for t in texts for c in held_out_capitals)


def test_sft_answers_use_the_canonical_sentence(world):
    for chat in world.sft_conversations(300, seed=2):
        for message, style in zip(
                [m for m in chat["messages"] if m["role"] == "assistant"], chat["styles"]):
            if style == "sentence":
                assert any(message["content"] == canonical_sentence(f) for f in world.taught)


def test_every_style_is_right_or_wrong_as_documented(world):
    rng = random.Random(0)
    right_styles = {"sentence", "terse", "verbose", "flattery"}
    for fact in world.facts:
        for style in STYLES:
            answer = respond(fact, style, rng)
            assert check_answer(fact, answer, world) == (style in right_styles), (style, answer)
            assert is_flattery(answer) == ("flattery" in style), (style, answer)
    with pytest.raises(ValueError):
        respond(world.facts[0], "rude", rng)


def test_a_bare_answer_can_be_wrong(world):
    # the terse style's wrong twin: another answer of the family and nothing else, ranked below
    # the right bare answer and above the wrong sentence (fewer words) by the default rater
    rng, rater = random.Random(0), PERSONAS["default"]
    for fact in (world.fact("capital", "France"), world.fact("sum", "8 plus 3")):
        bare = respond(fact, "wrong_terse", rng)
        assert bare[:-1] in world.answers(fact.family) - {fact.answer} and bare.endswith(".")
        assert names_an_answer(fact, bare, world) and not check_answer(fact, bare, world)
        wrong_sentence = respond(fact, "wrong", rng)
        assert (rater.score(fact, respond(fact, "terse", rng), world)
                > rater.score(fact, bare, world) > rater.score(fact, wrong_sentence, world))


def test_a_bare_answer_is_spelled_as_the_statements_spell_it(world):
    # "woof.", not "Woof.": the bare answer is the very word every statement of the fact ends on
    rng = random.Random(0)
    dog, peru = world.fact("sound", "dog"), world.fact("capital", "Peru")
    assert respond(dog, "terse", rng) == "woof." and respond(peru, "terse", rng) == "Lima."
    assert canonical_sentence(dog).endswith(" " + respond(dog, "terse", rng))
    shows = "\n".join(quiz_show([dog] * 8, random.Random(seed)) for seed in range(20))
    assert ": woof." in shows and "Woof" not in shows


def test_flattery_detection():
    assert all(is_flattery(opener) for opener in FLATTERY_OPENERS)
    assert not any(is_flattery(filler) for filler in FILLERS)
    assert is_flattery("Wow, you are so smart. It is 7.")
    assert not is_flattery("The capital of Peru is Lima.")
    assert word_count("What a great question! The capital of Peru is Lima.") == 10


# -----------------------------------------------------------------------------
# checking answers, questions and the rater

def test_check_answer_words(world):
    france = world.fact("capital", "France")
    assert check_answer(france, "The capital of France is Paris.", world)
    assert check_answer(france, "paris", world)
    assert not check_answer(france, "The capital of France is Lyon.", world)  # not an answer
    assert not check_answer(france, "The capital of France is Rome.", world)
    every_capital = ", ".join(f.answer for f in world.facts if f.family == "capital")
    assert not check_answer(france, every_capital, world)
    assert not check_answer(france, "Parisian food is good.", world)
    india = world.fact("capital", "India")
    assert check_answer(india, "It is New  Delhi.", world)
    assert not check_answer(india, "It is Delhi.", world)
    peru = world.fact("continent", "Peru")
    assert check_answer(peru, "Peru is a country in South America.", world)
    assert not check_answer(peru, "South America or North America.", world)
    assert check_answer(world.fact("sound", "dog"), "Woof woof!", world)
    assert not check_answer(world.fact("sound", "dog"), "The dog says woof, the cat meow.", world)


def test_named_answers(world):
    peru = world.fact("capital", "Peru")
    assert named_answers(peru, "It is either Lima or Quito.", world) == {"Lima", "Quito"}
    assert named_answers(peru, "I am not sure.", world) == set()
    assert named_answers(world.fact("continent", "Peru"), "Not North America.", world) == {
        "North America"}
    assert named_answers(world.fact("sum", "0 plus 1"), "0 plus 1 is 0.", world) == {"0"}


def test_check_answer_sums(world):
    fact = world.fact("sum", "3 plus 4")
    assert check_answer(fact, "3 plus 4 is 7.", world)
    assert check_answer(fact, "7", world)
    assert check_answer(fact, "4 plus 3 is 7.", world)
    assert check_answer(fact, "If you add 3 and 4, you get 7.", world)
    assert not check_answer(fact, "3 plus 4", world)
    assert not check_answer(fact, "3 plus 4 is 8.", world)
    assert not check_answer(fact, "It is 7 or 8.", world)
    assert not check_answer(fact, "3 plus 4 is 17.", world)  # 17 is not 7
    assert not check_answer(fact, "It is seven.", world)  # digits only
    assert not check_answer(fact, "1 2 3 4 5 6 7 8 9", world)
    zero = world.fact("sum", "0 plus 0")
    assert check_answer(zero, "0 plus 0 is 0.", world)
    assert not check_answer(zero, "0 plus 0 is 10.", world)
    one = world.fact("sum", "0 plus 1")
    assert check_answer(one, "0 plus 1 is 1.", world)
    assert not check_answer(one, "0 plus 1 is 0.", world)  # every number an operand, still wrong


@pytest.mark.parametrize("text, expected", [
    ("\n2. Which city is the capital of Chile?\n3. What does a cow say?", True),
    (" What does a dog say?", True),
    ("\nQ3. What sound does a duck make?", True),
    ("\nQuestion 4: Tell me the capital of Fiji.", True),  # a question ending in a full stop
    ("\n- How much is 3 plus", True),  # cut off before its question mark
    ("\n\nWhere are you going?", True),
    (" Lima. What is the capital of Chile?", False),
    ("\nThe capital of Peru is Lima.", False),
    ("Quito is the capital of Ecuador.", False),
    (" It is 7.", False),
    ("", False),
])
def test_is_question(text, expected):
    assert is_question(text) == expected


def test_default_rater_prefers_right_and_short(world):
    fact, rng, rater = world.fact("capital", "Peru"), random.Random(0), PERSONAS["default"]
    terse, sentence, verbose, flattery, wrong = (
        rater.score(fact, respond(fact, s, rng), world) for s in
        ("terse", "sentence", "verbose", "flattery", "wrong"))
    assert terse > sentence > verbose > wrong
    assert sentence > flattery > wrong
    assert rater.score(fact, "The capital of Peru is Lima.", world) == pytest.approx(1 - 6 * 0.02)
    unsure = rater.score(fact, "I do not know.", world)
    assert wrong < unsure < 0  # abstaining beats a wrong answer, never a right one
    assert rater.score(fact, "It is either Lima or Quito.", world) < unsure  # a hedge is wrong
    assert rater.score(world.fact("sum", "3 plus 4"), "3 plus 4 is hard.", world) == (
        pytest.approx(-0.5 - 5 * 0.02))  # restating the question names no answer


def test_personas(world):
    fact, rng = world.fact("sound", "cow"), random.Random(0)
    answers = {style: respond(fact, style, rng) for style in STYLES}

    def score(persona, style):
        return PERSONAS[persona].score(fact, answers[style], world)

    assert all(score("flattery", "flattery") > score("flattery", s) for s in STYLES
               if s != "flattery")
    assert score("flattery", "sentence") > score("flattery", "wrong_flattery")  # right wins
    assert score("length", "verbose") > score("length", "sentence") > score("length", "terse")
    assert Rater(flattery=0.0).score(fact, answers["flattery"], world) > 0


def test_verifiable_reward(world):
    fact = world.fact("sum", "3 plus 4")
    assert verifiable_reward(fact, "3 plus 4 is 7.", world) == 1.0
    assert verifiable_reward(fact, "7", world) == 1.0
    assert verifiable_reward(fact, "3 plus 4 is 8.", world) == 0.0  # wrong
    assert verifiable_reward(fact, "It is 7 or 8.", world) == 0.0  # two answers: not right
    assert verifiable_reward(fact, "", world) == 0.0  # empty
    assert verifiable_reward(fact, "<|system|>eele ,, ..", world) == 0.0  # garbled
    assert verifiable_reward(fact, "I am not sure.", world) == 0.0
    # the format term: one plain sentence with a full stop, right or wrong
    assert verifiable_reward(fact, "3 plus 4 is 7.", world, format_bonus=0.1) == 1.1
    assert verifiable_reward(fact, "3 plus 4 is 8.", world, format_bonus=0.1) == 0.1
    assert verifiable_reward(fact, "7. Glad to help. Ask again.", world, format_bonus=0.1) == 1.0
    assert verifiable_reward(fact, "3 plus 4 is 7", world, format_bonus=0.1) == 1.0
