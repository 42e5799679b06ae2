"""JSONL loaders: accepted formats agree, and every bad line is reported with file and line."""

import json

import pytest

from nanollm.formats import DataFormatError, load_chats, load_preferences


def _write(tmp_path, name, lines):
    """Write raw text lines (dicts are dumped as JSON) and return the path."""
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    return str(path)


MESSAGES = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Capital of France?"},
                         {"role": "assistant", "content": "Paris."}]}


def test_messages_and_alpaca_give_the_same_conversation(tmp_path):
    path = _write(tmp_path, "chats.jsonl", [
        {"messages": [{"role": "user", "content": "Translate.\n\nbonjour"},
                      {"role": "assistant", "content": "hello"}]},
        {"instruction": "Translate.", "input": "bonjour", "output": "hello"},
        "",  # blank lines are not examples
        {"instruction": "Say hi.", "output": "hi"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        MESSAGES,
    ])
    chats = load_chats(path)
    assert len(chats) == 5
    assert chats[0] == chats[1]
    assert chats[2] == chats[3] == [{"role": "user", "content": "Say hi."},
                                    {"role": "assistant", "content": "hi"}]
    assert chats[4] == MESSAGES["messages"]


@pytest.mark.parametrize("bad, problem", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"messages": "hello"}, "'messages' must be a non-empty list of {role, content}"),
    ({"messages": []}, "'messages' must be a non-empty list"),
    ({"messages": [{"role": "user"}]}, "item 0"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "role 'bot'"),
    ({"messages": [{"role": "user", "content": "  "}]}, "'content' is empty"),
    ({"messages": [{"role": "user", "content": 3}]}, "'content' must be a string"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "system message may only come first"),
    ({"instruction": "Do it.", "output": ""}, "'output' is empty"),
    ({"instruction": "Do it.", "input": 5, "output": "ok"}, "'input' must be a string"),
    ({"text": "hello"}, "expected 'messages' or Alpaca"),
])
def test_bad_chat_line_names_file_line_and_problem(tmp_path, bad, problem):
    # The bad line is line 4: two good lines and a blank line come first.
    path = _write(tmp_path, "chats.jsonl", [MESSAGES, MESSAGES, "", bad, MESSAGES])
    with pytest.raises(DataFormatError) as err:
        load_chats(path)
    message = str(err.value)
    assert message.startswith(f"{path} line 4: ")
    assert problem in message


def test_data_format_error_is_a_value_error():
    assert issubclass(DataFormatError, ValueError)


HH_CHOSEN = ("\n\nHuman: What sound does a cat make?\n\nAssistant: Do you mean a house cat?"
             "\n\nHuman: Yes.\n\nAssistant: A cat says meow.")
HH_REJECTED = ("\n\nHuman: What sound does a cat make?\n\nAssistant: Do you mean a house cat?"
               "\n\nHuman: Yes.\n\nAssistant: Woof!")


def test_preference_formats(tmp_path):
    path = _write(tmp_path, "prefs.jsonl", [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
        {"prompt": [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Capital of France?"}],
         "chosen": "Paris.", "rejected": "It is Paris, a lovely city."},
        {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
    ])
    pairs = load_preferences(path)
    assert pairs[0] == {"prompt": [{"role": "user", "content": "Capital of France?"}],
                        "chosen": "Paris.", "rejected": "Lyon.", "line": 1}
    assert pairs[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert pairs[2] == {
        "prompt": [{"role": "user", "content": "What sound does a cat make?"},
                   {"role": "assistant", "content": "Do you mean a house cat?"},
                   {"role": "user", "content": "Yes."}],
        "chosen": "A cat says meow.",
        "rejected": "Woof!",
        "line": 3,
    }


@pytest.mark.parametrize("bad, problem", [
    ({"prompt": "Q?", "chosen": "A."}, "'rejected' must be a string"),
    ({"prompt": "", "chosen": "A.", "rejected": "B."}, "'prompt' is empty"),
    ({"prompt": "Q?", "chosen": " ", "rejected": "B."}, "'chosen' is empty"),
    ({"prompt": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}],
      "chosen": "A.", "rejected": "B."}, "must end with a user message"),
    ({"prompt": 7, "chosen": "A.", "rejected": "B."}, "'prompt' must be a non-empty list"),
    ({"chosen": HH_CHOSEN, "rejected": HH_REJECTED.replace("Yes.", "No.")},
     "differ before their last Assistant turn"),
    ({"chosen": "no transcript here", "rejected": "nor here"}, "no '\\n\\nAssistant:' turn"),
    ({"chosen": HH_CHOSEN, "rejected": HH_REJECTED.replace("Woof!", "")},
     "final Assistant turn of 'rejected' is empty"),
    ({"chosen": "Intro" + HH_CHOSEN, "rejected": "Intro" + HH_REJECTED}, "outside a Human"),
    ({"question": "Q?"}, "expected 'prompt', 'chosen' and 'rejected'"),
])
def test_bad_preference_line_names_file_line_and_problem(tmp_path, bad, problem):
    good = {"prompt": "Q?", "chosen": "A.", "rejected": "B."}
    path = _write(tmp_path, "prefs.jsonl", [good, "", "", bad])
    with pytest.raises(DataFormatError) as err:
        load_preferences(path)
    message = str(err.value)
    assert message.startswith(f"{path} line 4: ")
    assert problem in message
