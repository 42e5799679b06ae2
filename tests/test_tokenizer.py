"""Tests for the BPE trainer (nanollm/bpe.py) and the Tokenizer (nanollm/tokenizer.py)."""

import gzip
import json
import os
import random
import subprocess
import sys

import pydoc_data.topics
import pytest

from nanollm.bpe import GPT4_PATTERN, train_bpe, train_bpe_simple
from nanollm.tokenizer import GPT2_FILE, SPECIAL_TOKENS, Tokenizer, ranks_to_text

# Real English text that ships with Python: the help() topics (about 460 KB).
TOPICS = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
TRAIN_TEXT = "\n\n".join(TOPICS[:20])  # ~54 KB: the fast trainer takes well under a second
HELD_OUT_TEXT = "\n\n".join(TOPICS[40:60])

UNICODE_SAMPLES = [
    "",
    "a",
    "Hello, world!",
    "naïve café, Ωμέγα, Привет мир, 你好，世界。 こんにちは",
    "e\u0301 (e + combining accent), नमस्ते, ภาษาไทย, العربية",
    "emoji: 😀 👍🏽 👨‍👩‍👧 🇫🇷",
    "   leading and trailing spaces   ",
    "\n\n\nnewlines\r\nand\ttabs\t\t\n \n",
    "I'M HE'S we'll DON'T 1234567 $x _name __init__ x**2",
    "digits in other scripts: ١٢٣٤ १२३४५ １２３４",
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TRAIN_TEXT, vocab_size=512)


@pytest.fixture(scope="module")
def gpt2():
    return Tokenizer.gpt2()


# ----------------------------------------------------------------------------------- trainer


@pytest.mark.parametrize("train", [train_bpe_simple, train_bpe])
def test_train_bpe_hand_worked_example(train):
    # "aaabdaaabac" is one chunk for the regex (all letters). Bytes: a=97 b=98 c=99 d=100.
    # 1. pair counts: aa 4 (a-a-a twice), ab 2, bd 1, da 1, ba 1, ac 1 -> merge (97, 97) = 256
    #    text: [aa a b d aa a b a c]
    # 2. (aa, a) 2 and (a, b) 2 tie; the smaller pair (97, 98) wins -> 257 "ab"
    #    text: [aa ab d aa ab a c]
    # 3. (aa, ab) 2 -> 258 "aaab"; text: [aaab d aaab a c]
    # 4. four pairs of count 1: (258,100) (100,258) (258,97) (97,99); smallest is (97, 99) -> 259
    #    text: [aaab d aaab ac]
    # 5. (258,100) (100,258) (258,259) all 1; smallest is (100, 258) -> 260 "daaab"
    merges = train("aaabdaaabac", vocab_size=261)
    assert merges == [(97, 97), (97, 98), (256, 257), (97, 99), (100, 258)]


def test_tokenizer_trains_with_the_fast_trainer():
    tok = Tokenizer.train("aaabdaaabac", vocab_size=261)
    assert tok.merges == train_bpe("aaabdaaabac", vocab_size=261)
    assert tok.encode("aaabdaaabac") == [258, 260, 259]
    assert tok.id_to_bytes(260) == b"daaab"


AGREEMENT_TEXTS = {
    "english": TOPICS[3][:6000],
    "overlapping runs": " aaaa aaaaaaa \n\n\n    x   y  " * 20 + "aaa aaaaa bbbbbb abab baba",
    "all ties": "abcdefghijklmnopqrstuvwxyz zyxwvutsrqponmlkjihgfedcba",  # every pair once
    "unicode": " ".join(UNICODE_SAMPLES) * 3,
    "random letters": " ".join("".join(random.Random(i).choices("abc", k=9)) for i in range(300)),
}


@pytest.mark.parametrize("name", AGREEMENT_TEXTS)
def test_fast_trainer_gives_the_plain_loops_merges(name):
    text = AGREEMENT_TEXTS[name]
    simple = train_bpe_simple(text, 400)
    assert simple == train_bpe(text, 400)
    assert len(simple) > 20  # enough merges that counting and tie-breaking both matter


@pytest.mark.parametrize("train", [train_bpe_simple, train_bpe])
def test_train_bpe_stops_when_text_runs_out_of_pairs(train):
    assert train("ab ab", vocab_size=1000) == [(97, 98), (32, 256)]
    with pytest.raises(ValueError, match="--vocab_size 100: .* at least the 256 raw bytes"):
        train("abc", vocab_size=100)


def test_training_is_deterministic_across_processes():
    # A different string-hash seed changes set/dict iteration of strings; merges must not care.
    code = "import sys; from nanollm.bpe import train_bpe; print(train_bpe(sys.stdin.read(), 400))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONIOENCODING": "utf-8"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], input=TRAIN_TEXT, env=env, cwd=root,
        capture_output=True, encoding="utf-8", check=True,
    )
    assert out.stdout.strip() == str(train_bpe(TRAIN_TEXT, 400))


# --------------------------------------------------------------------------------- tokenizer


def test_special_token_layout(tok):
    n = len(tok.mergeable_ranks)
    assert n == 512 and tok.vocab_size == 512 + len(SPECIAL_TOKENS)
    assert tok.special_ids == {token: n + i for i, token in enumerate(SPECIAL_TOKENS)}
    assert [tok.eot, tok.system, tok.user, tok.assistant, tok.end, tok.pad] == list(
        range(n, n + 6)
    )
    assert tok.decode([tok.user, tok.end]) == "<|user|><|end|>"


def test_round_trip_unicode_samples(tok, gpt2):
    for tokenizer in (tok, gpt2):
        for text in UNICODE_SAMPLES:
            assert tokenizer.decode(tokenizer.encode(text)) == text


def random_unicode(rng, max_len=40):
    """Mostly ASCII, plus any code point (no surrogates: they are not valid in UTF-8)."""
    chars = []
    for _ in range(rng.randint(0, max_len)):
        code = rng.choice([rng.randint(32, 126), rng.randint(0, 0x2FFF), rng.randint(0, 0x10FFFF)])
        chars.append(chr(code) if not 0xD800 <= code <= 0xDFFF else " ")
    return "".join(chars)


def test_round_trip_random_strings(tok):
    rng = random.Random(0)
    texts = [random_unicode(rng) for _ in range(500)]
    for text, ids in zip(texts, tok.encode_batch(texts)):
        assert tok.decode(ids) == text
        assert all(0 <= i < len(tok.mergeable_ranks) for i in ids)


def test_special_token_text_is_ordinary_text(tok, gpt2):
    for tokenizer in (tok, gpt2):
        for text in ["<|endoftext|>", "a<|user|>b<|end|>", "<|pad|><|assistant|>"]:
            ids = tokenizer.encode(text)
            assert not set(ids) & set(tokenizer.special_ids.values())
            assert tokenizer.decode(ids) == text
            assert tokenizer.encode_batch([text]) == [ids]


def test_tiktoken_equals_python_encoder(tok, gpt2):
    assert tok.encode(HELD_OUT_TEXT) == tok.encode_python(HELD_OUT_TEXT)
    assert gpt2.encode(TOPICS[5]) == gpt2.encode_python(TOPICS[5])
    for text in UNICODE_SAMPLES:
        assert tok.encode(text) == tok.encode_python(text)
        assert gpt2.encode(text) == gpt2.encode_python(text)


def test_decode_replaces_broken_utf8_and_rejects_bad_ids(tok):
    assert tok.decode([0xC3, 0xA9]) == "é"  # ids 0..255 are the raw bytes
    assert tok.decode([0xC3]) == "\ufffd"  # half a character
    assert tok.decode_bytes([0xC3]) == b"\xc3"
    assert tok.id_to_bytes(ord("a")) == b"a"
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tok.tiktoken"
    tok.save(path)
    first_line = path.read_text().splitlines()[0]
    assert first_line == "AA== 0"  # base64 of the byte 0x00, rank 0: tiktoken's format
    meta = json.loads((tmp_path / "tok.json").read_text())
    assert meta["vocab_size"] == tok.vocab_size and meta["pattern"] == GPT4_PATTERN
    loaded = Tokenizer.load(path)
    assert loaded.merges == tok.merges
    assert loaded.mergeable_ranks == tok.mergeable_ranks
    assert loaded.encode(HELD_OUT_TEXT) == tok.encode(HELD_OUT_TEXT)
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "missing.tiktoken")


def test_to_dict_survives_weights_only_checkpoint(tok, tmp_path):
    import torch

    torch.save({"tokenizer": tok.to_dict()}, tmp_path / "ckpt.pt")
    d = torch.load(tmp_path / "ckpt.pt", weights_only=True)["tokenizer"]
    restored = Tokenizer.from_dict(d)
    assert restored.merges == tok.merges and restored.special_ids == tok.special_ids
    assert restored.encode(HELD_OUT_TEXT) == tok.encode(HELD_OUT_TEXT)
    with pytest.raises(ValueError, match="does not match"):
        Tokenizer.from_dict({**d, "vocab_size": d["vocab_size"] + 1})


# -------------------------------------------------------------------------------------- GPT-2


def test_gpt2_vocabulary(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.eot == 50256 and gpt2.pad == 50261 and gpt2.vocab_size == 50262
    assert gpt2.decode([gpt2.eot]) == "<|endoftext|>"
    assert gpt2.merges is None
    # Our writer reproduces the shipped file byte for byte: same format, same ranks.
    assert ranks_to_text(gpt2.mergeable_ranks).encode() == gzip.decompress(GPT2_FILE.read_bytes())


def test_gpt2_file_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="GPT-2 vocabulary not found"):
        Tokenizer.gpt2(tmp_path / "nope.tiktoken.gz")
    corrupted = tmp_path / "gpt2.tiktoken.gz"
    raw = gzip.decompress(GPT2_FILE.read_bytes())
    corrupted.write_bytes(gzip.compress(raw.replace(b"IQ== 0", b"IQ== 1", 1)))
    with pytest.raises(ValueError, match="corrupted"):
        Tokenizer.gpt2(corrupted)
    corrupted.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a readable gzip"):
        Tokenizer.gpt2(corrupted)
