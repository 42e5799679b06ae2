"""Loaders for users' own JSONL data: chats for SFT, preference pairs for reward models and DPO.

Chats (one conversation per line), either format:

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
    {"instruction": "...", "input": "...", "output": "..."}          (Alpaca; "input" optional)

Preferences (one pair per line), either format:

    {"prompt": "..." or [messages], "chosen": "...", "rejected": "..."}
    {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}  (Anthropic HH-RLHF)

Everything becomes the same internal form: a conversation is a list of {"role", "content"} dicts.

A bad line stops loading with a DataFormatError that names the file, the line number and the
problem (bytes that are not UTF-8 included): silently skipping data hides bugs, and a training run
on the wrong data wastes hours. Blank lines are not examples and are skipped; a file with nothing
else is an error. Each preference pair keeps the line it came from ("line"), so that a pair
dropped later (pairs.render_pairs) can be found in the file; load_chats_with_lines does the same
for chats.

Simplification: HH transcripts are split on the literal "\\n\\nHuman:" / "\\n\\nAssistant:" markers,
so a response that itself contains one of them would be split wrongly.
"""

import json
import os

from nanollm.errors import DataError

ROLES = ("system", "user", "assistant")
HUMAN_MARK, ASSISTANT_MARK = "\n\nHuman:", "\n\nAssistant:"


class DataFormatError(DataError):
    """A line of a data file is not in any accepted format."""


MAX_NAMED = 5  # an error or report names the first few places of a problem, not all of them


def name_places(noun, numbers, total):
    """'lines 4, 9, 12' or 'chat 3': the places (`numbers`) of the first few of `total`
    problems, with ', ...' when there are more problems than places named."""
    named = ", ".join(str(n) for n in numbers) + (", ..." if total > len(numbers) else "")
    return f"{noun}{'s' if total > 1 else ''} {named}"


def remember(places, place):
    """Keep the first few places of a problem, for a report that names them."""
    if len(places) < MAX_NAMED:
        places.append(place)


def _decode(raw, where, line_number):
    """One line's bytes as text; a byte-order mark on the first line (Windows editors) is fine."""
    try:
        return raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{where}: not UTF-8 text (byte {err.start + 1} of the line is "
                              f"{raw[err.start]:#04x}): save the file as UTF-8") from None


def _read_objects(path, what):
    """Yield (line_number, where, dict) for every non-blank line; report bad bytes and bad JSON
    with file:line, and a file without a single object (`what`, e.g. "chats") as an error."""
    n_objects = 0
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: no such file" if not os.path.exists(path)
                              else f"{path}: a folder, not a JSONL file")
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            where = f"{path} line {line_number}"
            line = _decode(raw, where, line_number)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{where}: invalid JSON ({err.msg}, column {err.colno})") \
                    from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{where}: expected a JSON object, got "
                                      f"{type(obj).__name__}")
            n_objects += 1
            yield line_number, where, obj
    if not n_objects:
        raise DataError(f"{path}: no {what} in the file (it is empty or holds only blank lines)")


def _text(obj, key, where, required=True):
    """obj[key] as a non-empty string, or "" when optional and absent."""
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataFormatError(f"{where}: '{key}' is empty")
    return value


def _messages(value, where, key="messages"):
    """Check a list of {role, content} dicts; returns fresh dicts with only those two keys."""
    shape = f"'{key}' must be a non-empty list of {{role, content}}"
    if not isinstance(value, list) or not value:
        raise DataFormatError(f"{where}: {shape}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataFormatError(f"{where}: {shape}; item {i} is {json.dumps(message)[:80]}")
        role = message["role"]
        if role not in ROLES:
            raise DataFormatError(f"{where}: item {i} has role {role!r}; expected one of {ROLES}")
        if role == "system" and i > 0:
            raise DataFormatError(f"{where}: a system message may only come first (item {i})")
        content = _text(message, "content", f"{where}: item {i}")
        messages.append({"role": role, "content": content})
    return messages


# ----------------------------------------------------------------------------------------------
# Chats for SFT


def _alpaca_to_messages(obj, where):
    """Alpaca -> [user, assistant]: the user turn is the instruction, then the input if any."""
    instruction = _text(obj, "instruction", where)
    extra_input = _text(obj, "input", where, required=False)
    output = _text(obj, "output", where)
    user = instruction + ("\n\n" + extra_input if extra_input.strip() else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def held_out_count(n, path, what):
    """How many of the n examples of a user's file the scripts hold out for evaluation: the
    first one in twenty, at least one, with at least one left to train on; fewer than two
    examples is a DataError naming the file."""
    if n < 2:
        raise DataError(f"{path}: {n} {what}; need at least 2, as one in 20 (at least one) is "
                        "held out for evaluation")
    return max(1, n // 20)


def load_chats_with_lines(path):
    """(chats, lines): the conversations of a JSONL file, each a list of {role, content}, and
    the line each came from, so that a chat dropped later can be found in the file."""
    chats, lines = [], []
    for line_number, where, obj in _read_objects(path, "chats"):
        if "messages" in obj:
            messages = _messages(obj["messages"], where)
        elif "instruction" in obj:
            messages = _alpaca_to_messages(obj, where)
        else:
            raise DataFormatError(f"{where}: expected 'messages' or Alpaca "
                                  f"'instruction'/'output' keys, got {sorted(obj)}")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataFormatError(f"{where}: the conversation has no assistant message to learn")
        chats.append(messages)
        lines.append(line_number)
    return chats, lines


def load_chats(path):
    """Conversations from a JSONL file: list of conversations, each a list of {role, content}."""
    chats, _ = load_chats_with_lines(path)
    return chats


# ----------------------------------------------------------------------------------------------
# Preference pairs for reward models and DPO


def _hh_turns(transcript, where):
    """'\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c' -> [user a, assistant b, user c]."""
    turns = []
    rest = transcript
    while rest.strip():
        if rest.startswith(HUMAN_MARK):
            role, rest = "user", rest[len(HUMAN_MARK):]
        elif rest.startswith(ASSISTANT_MARK):
            role, rest = "assistant", rest[len(ASSISTANT_MARK):]
        else:
            raise DataFormatError(f"{where}: HH transcript text outside a Human/Assistant turn: "
                                  f"{rest[:60]!r}")
        # This turn runs until the next marker of either kind.
        ends = [i for i in (rest.find(HUMAN_MARK), rest.find(ASSISTANT_MARK)) if i >= 0]
        end = min(ends) if ends else len(rest)
        content = rest[:end].strip()
        if not content:
            raise DataFormatError(f"{where}: empty {role} turn in HH transcript")
        turns.append({"role": role, "content": content})
        rest = rest[end:]
    return turns


def _split_hh(obj, where):
    """HH pair -> (prompt messages, chosen, rejected): split each at its last Assistant turn."""
    chosen_text, rejected_text = _text(obj, "chosen", where), _text(obj, "rejected", where)
    prefixes, responses = [], []
    for key, text in (("chosen", chosen_text), ("rejected", rejected_text)):
        cut = text.rfind(ASSISTANT_MARK)
        if cut < 0:
            raise DataFormatError(f"{where}: '{key}' has no '\\n\\nAssistant:' turn")
        response = text[cut + len(ASSISTANT_MARK):].strip()
        if not response:
            raise DataFormatError(f"{where}: the final Assistant turn of '{key}' is empty")
        prefixes.append(text[:cut])
        responses.append(response)
    if prefixes[0] != prefixes[1]:
        raise DataFormatError(f"{where}: 'chosen' and 'rejected' differ before their last "
                              "Assistant turn, so they do not answer the same prompt")
    prompt = _hh_turns(prefixes[0], where)
    return prompt, responses[0], responses[1]


def load_preferences(path):
    """Preference pairs: list of {"prompt": messages, "chosen": str, "rejected": str, "line": int}.

    The prompt ends with a user message; chosen and rejected are the two candidate replies; line
    is where the pair is in the file.
    """
    pairs = []
    for line_number, where, obj in _read_objects(path, "preference pairs"):
        if "prompt" in obj:
            prompt = obj["prompt"]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": _text(obj, "prompt", where)}]
            else:
                prompt = _messages(prompt, where, key="prompt")
            chosen, rejected = _text(obj, "chosen", where), _text(obj, "rejected", where)
        elif "chosen" in obj and "rejected" in obj:
            prompt, chosen, rejected = _split_hh(obj, where)
        else:
            raise DataFormatError(f"{where}: expected 'prompt', 'chosen' and 'rejected' keys "
                                  f"(or an HH 'chosen'/'rejected' transcript), got {sorted(obj)}")
        if prompt[-1]["role"] != "user":
            raise DataFormatError(f"{where}: the prompt must end with a user message, "
                                  f"not {prompt[-1]['role']}")
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                      "line": line_number})
    return pairs
