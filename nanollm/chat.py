"""The chat template: a conversation becomes one token sequence plus a mask of what is learned.

SFT, the reward model, PPO and DPO all read conversations through these functions, so the
model sees one format everywhere. A conversation is a list of messages
{"role": "system" | "user" | "assistant", "content": str}, rendered as

    <|endoftext|> <|system|> Be brief. <|end|> <|user|> Capital of France? <|end|>
    <|assistant|> Paris. <|end|>

1. It opens with <|endoftext|>, the separator between pretraining documents, so a chat starts the
   way every document started in pretraining: nothing before it is context. Every rendered
   conversation and prompt opens with it, so training and generation see the same prefix.
2. Each message is a role token, its content encoded as plain text, and <|end|>. The content goes
   through `tokenizer.encode`, which never produces special ids: a user who types "<|end|>" writes
   characters, not an end of turn.
   The content is encoded after one space (encode_content), as a word inside a text is: a
   byte-level BPE gives "Lima" at the very start of a text and " Lima" after a space different
   ids, and pretraining text has the second almost everywhere ("Guest: Lima."). Encoded without
   the space, every answer would begin with a token the base model has seldom read, and the SFT
   model would struggle to bring out what pretraining taught it about entities it never saw in a
   chat.
3. The loss mask is 1 on the assistant's content and on its <|end|> (the model learns what to say
   and when to stop), 0 everywhere else: role tokens are placed by the template, never predicted,
   and system and user text is given, not generated. Learning to predict the user would spend
   capacity on writing the user's lines.
4. `render_prompt` ends with <|assistant|>, so the model continues as the assistant; generation
   stops at <|end|> (`tokenizer.end`).

mask[i] belongs to ids[i] as a prediction target: with inputs ids[:-1] and targets ids[1:], the
targets' mask is mask[1:].

Simplifications compared to production templates: no tool calls, names or images; truncating
long conversations to the context length is left to the caller.
"""

ROLES = ("system", "user", "assistant")


def validate_messages(messages: list[dict]) -> None:
    """Raise ValueError naming the first problem: a message's shape, role or content."""
    if not isinstance(messages, (list, tuple)) or len(messages) == 0:
        raise ValueError(f"messages must be a non-empty list of dicts, got {messages!r}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(
                f"message {i}: expected a dict with 'role' and 'content', got {message!r}"
            )
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ValueError(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a str, got {type(content).__name__}")
        if role == "system" and i > 0:
            raise ValueError(f"message {i}: a system message may only come first")


def encode_content(tokenizer, text: str) -> list[int]:
    """A message's text as the ids that follow its role token: encoded after one space."""
    return tokenizer.encode(" " + text)


def decode_content(tokenizer, ids: list[int]) -> str:
    """The inverse of encode_content: generated ids -> the message's text, its space removed.
    The tokens that close a turn (<|end|>, <|endoftext|>) are left out: they are not text."""
    text = tokenizer.decode([t for t in ids if t not in (tokenizer.end, tokenizer.eot)])
    return text[1:] if text.startswith(" ") else text


def render_conversation(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Messages -> (ids, mask), mask 1 exactly on assistant content and the assistant's <|end|>."""
    validate_messages(messages)
    role_ids = {
        "system": tokenizer.system, "user": tokenizer.user, "assistant": tokenizer.assistant
    }
    ids, mask = [tokenizer.eot], [0]
    for message in messages:
        learned = int(message["role"] == "assistant")
        content = encode_content(tokenizer, message["content"])
        ids += [role_ids[message["role"]]] + content + [tokenizer.end]
        mask += [0] + [learned] * (len(content) + 1)  # the role token is never learned
    return ids, mask


def render_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """The conversation so far (usually ending with a user turn), then <|assistant|>."""
    ids, _ = render_conversation(tokenizer, messages)
    return ids + [tokenizer.assistant]


def render_question(tokenizer, text: str) -> list[int]:
    """One user question, ready for the assistant's answer: the prompt of every evaluation."""
    return render_prompt(tokenizer, [{"role": "user", "content": text}])


# ---------------------------------------------------------------------------------------------
# A chat command on any stage:
#     python -m nanollm.chat --stage sft           # interactive; an empty line or Ctrl-D quits
#     python -m nanollm.chat --stage dpo --prompt "What is the capital of Peru?"
#     python -m nanollm.chat --stage sft.q4        # a quantized file (python -m nanollm.quantize)


def main(argv=None):
    import argparse

    from nanollm.generate import generate
    from nanollm.quantize import is_quantized_name, load_quantized
    from nanollm.stages import load_stage

    parser = argparse.ArgumentParser(description="Chat with a saved stage.")
    parser.add_argument("--stage", default="sft")
    parser.add_argument("--out_dir", default="out")
    parser.add_argument("--prompt", default=None, help="answer one message and exit")
    parser.add_argument("--system", default=None, help="a system message to open with")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    args = parser.parse_args(argv)
    load = load_quantized if is_quantized_name(args.stage) else load_stage
    model, tokenizer, _ = load(args.out_dir, args.stage)
    messages = [{"role": "system", "content": args.system}] if args.system else []

    def reply(text):
        messages.append({"role": "user", "content": text})
        prompt = render_prompt(tokenizer, messages)
        if len(prompt) >= model.config.block_size:  # forget the oldest turns, keep the system
            del messages[bool(args.system):bool(args.system) + 2]
            return reply(messages.pop()["content"])
        out = generate(model, [prompt], args.max_new_tokens, args.temperature,
                       stop_ids=[tokenizer.end, tokenizer.eot], pad_id=tokenizer.pad)
        answer = decode_content(tokenizer, out.responses()[0])
        messages.append({"role": "assistant", "content": answer})
        return answer

    if args.prompt is not None:
        print(reply(args.prompt))
        return
    print(f"chatting with stage '{args.stage}' (empty line or Ctrl-D to quit)")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        print("bot>", reply(text))


if __name__ == "__main__":
    from nanollm.errors import report_user_errors
    report_user_errors()  # a missing or wrong checkpoint is one line, not a traceback
    main()
