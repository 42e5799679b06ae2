"""The built-in world: facts, the texts made from them, a gold rater, and measurements against it.

The library (nanollm/) never imports this package; the world, the scripts and the lessons import
the library. What lives here:

    facts.py        the facts, their families, entities and phrasings
    documents.py    pretraining documents (fact pages, stories, quiz pages, ...)
    world.py        World: the taught / held-out split, questions, the pretraining corpus
    chats.py        answers in styles (respond) and the SFT chats made of them
    rater.py        the gold rater and its personas
    preferences.py  preference pairs: template answers and the SFT model's own samples, labelled
    evaluate.py     measuring a model's answers against the world

    from nanollm.world import World, PERSONAS
"""

from nanollm.world.chats import (  # noqa: F401
    FILLERS, FLATTERY_OPENERS, HEDGES, RIGHT_STYLES, SFT_STYLE_SHARES, STYLES, SYSTEM_PROMPTS,
    SYSTEM_SHARE, TWO_TURN_SHARE, UNSURE, other_answers, respond, sft_conversations)
from nanollm.world.documents import (  # noqa: F401
    CORPUS_SHARES, arithmetic_page, dialogue, fact_page, is_question, quiz_page, quiz_show, story)
from nanollm.world.facts import (  # noqa: F401
    ANIMALS, COUNTRIES, DIGITS, FAMILIES, QUESTIONS, STATEMENTS, Fact, Question, all_facts,
    bare_answer, canonical_sentence, family_answers, fields, question_text)
from nanollm.world.rater import (  # noqa: F401
    PERSONAS, Rater, check_answer, is_flattery, verifiable_reward, word_count)
from nanollm.world.world import World, world_corpus  # noqa: F401
