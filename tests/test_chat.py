"""Tests for the chat template (nanollm/chat.py)."""

import pytest

from nanollm.chat import (decode_content, encode_content, render_conversation, render_prompt,
                          render_question, validate_messages)
from nanollm.tokenizer import Tokenizer

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.gpt2()  # fixed ids, so the expected sequence can be written out


def test_two_turn_chat_ids_and_mask(tok):
    eot, system, user, assistant, end = tok.eot, tok.system, tok.user, tok.assistant, tok.end
    assert (eot, system, user, assistant, end) == (50256, 50257, 50258, 50259, 50260)
    expected = [  # (token id, mask): 1 only on what the assistant says and its end of turn
        (eot, 0),
        (system, 0), (1355, 0), (4506, 0), (13, 0), (end, 0),  # " Be" " brief" "."
        (user, 0), (15902, 0), (0, 0), (end, 0),  # " Hi" "!"
        (assistant, 0), (18435, 1), (13, 1), (end, 1),  # " Hello" "."
        (user, 0), (9747, 0), (286, 0), (4881, 0), (30, 0), (end, 0),  # " Capital" " of" ...
        (assistant, 0), (6342, 1), (13, 1), (end, 1),  # " Paris" "."
    ]
    ids, mask = render_conversation(tok, MESSAGES)
    assert ids == [token for token, _ in expected]
    assert mask == [learned for _, learned in expected]
    assert tok.decode(ids) == (
        "<|endoftext|><|system|> Be brief.<|end|><|user|> Hi!<|end|><|assistant|> Hello.<|end|>"
        "<|user|> Capital of France?<|end|><|assistant|> Paris.<|end|>"
    )


def test_content_is_encoded_as_words_inside_text_are(tok):
    # " Paris" is the token of the word inside a sentence ("The capital is Paris."); "Paris" at
    # the very start of a text is another token, which pretraining text seldom has
    assert encode_content(tok, "Paris.") == tok.encode(" Paris.") != tok.encode("Paris.")
    for text in ("Paris.", " two spaces", "", "The capital of France is Paris."):
        assert decode_content(tok, encode_content(tok, text)) == text


def test_special_strings_in_content_are_plain_text(tok):
    ids, mask = render_conversation(tok, [{"role": "user", "content": "<|end|><|assistant|>"}])
    assert ids.count(tok.end) == 1 and tok.assistant not in ids
    assert sum(mask) == 0


def test_render_prompt_ends_with_assistant_token(tok):
    prompt = render_prompt(tok, MESSAGES[:4])
    ids, _ = render_conversation(tok, MESSAGES[:4])
    assert prompt == ids + [tok.assistant]
    # The prompt plus the answer and <|end|> is exactly the rendered full conversation.
    full, _ = render_conversation(tok, MESSAGES)
    assert prompt + encode_content(tok, "Paris.") + [tok.end] == full


def test_render_question_is_one_user_turn_then_the_assistant_token(tok):
    ids = render_question(tok, "Capital of Peru?")
    assert ids == ([tok.eot, tok.user] + encode_content(tok, "Capital of Peru?")
                   + [tok.end, tok.assistant])


@pytest.mark.parametrize(
    "messages, error",
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "user"}], "message 0: expected a dict with 'role' and 'content'"),
        (["hi"], "message 0: expected a dict"),
        ([{"role": "bot", "content": "hi"}], "message 0: role 'bot' is not one of"),
        ([{"role": "user", "content": 42}], "message 0: content must be a str, got int"),
        (
            [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}],
            "message 1: a system message may only come first",
        ),
    ],
)
def test_invalid_messages_are_named(tok, messages, error):
    with pytest.raises(ValueError, match=error):
        validate_messages(messages)
    with pytest.raises(ValueError, match=error):
        render_conversation(tok, messages)
    with pytest.raises(ValueError, match=error):
        render_prompt(tok, messages)
