"""Degenerate data stops up front: bad bytes, empty files, pairs with nothing to prefer, chats
that do not fit, text too small to split. Each is a DataError that names the file, the lines and
the counts; what can still be used is kept, and what is dropped is counted."""

import json

import pytest

from nanollm.corpus import prepare_corpus, read_text_file
from nanollm.data import get_batch, read_shard, require_window, write_shard
from nanollm.errors import DataError, UserError
from nanollm.formats import DataFormatError, load_chats, load_chats_with_lines, load_preferences
from nanollm.pairs import render_pair_batch, render_pairs
from nanollm.sft import require_examples, sft_examples
from nanollm.tokenizer import Tokenizer

CHAT = {"messages": [{"role": "user", "content": "Capital of Peru?"},
                     {"role": "assistant", "content": "Lima."}]}
GOOD = {"prompt": "Capital of Peru?", "chosen": "Lima.", "rejected": "Quito, I think."}
SAME = {"prompt": "Capital of Chile?", "chosen": "Santiago.", "rejected": "  Santiago. "}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train("The capital of Peru is Lima. What is the capital of Chile? " * 20, 300)


def _write_lines(path, lines):
    """Lines as bytes (dicts dumped as JSON), so a test can put any byte in a file."""
    raw = [json.dumps(x).encode() if isinstance(x, dict) else x for x in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return str(path)


def test_data_error_is_a_user_error_and_a_value_error():
    assert issubclass(DataFormatError, DataError)
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------- files

@pytest.mark.parametrize("load, good", [(load_chats, CHAT), (load_preferences, GOOD)])
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, load, good):
    latin1 = json.dumps(good).replace("Lima", "Lim\u00e1").encode("latin-1")  # 0xe1, not UTF-8
    path = _write_lines(tmp_path / "data.jsonl", [good, b"", latin1, good])
    with pytest.raises(DataFormatError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(f"{path} line 3: not UTF-8") and "0xe1" in message


def test_a_byte_order_mark_on_the_first_line_is_read(tmp_path):
    path = _write_lines(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + json.dumps(CHAT).encode()])
    assert load_chats(path) == [CHAT["messages"]]


@pytest.mark.parametrize("load, what", [(load_chats, "no chats"),
                                        (load_preferences, "no preference pairs")])
@pytest.mark.parametrize("content", [b"", b"\n  \n\n"])
def test_an_empty_file_is_an_error_that_names_it(tmp_path, load, what, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{path}: {what} in the file"):
        load(str(path))


def test_text_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"first line\nsecond line\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=f"^{path} line 3: not UTF-8 text"):
        read_text_file(str(path))


# ---------------------------------------------------------------------------- preference pairs

def test_identical_pairs_are_dropped_counted_and_named_by_line(tmp_path, tok):
    # lines 2 and 4 hold the same answer twice (spaces aside); the other two are kept
    same_again = {**GOOD, "rejected": "Lima. "}
    path = _write_lines(tmp_path / "prefs.jsonl", [GOOD, SAME, GOOD, same_again])
    pairs = load_preferences(path)
    assert [pair["line"] for pair in pairs] == [1, 2, 3, 4]
    rendered, report = render_pairs(tok, pairs, block_size=64)
    assert (report.kept, report.identical, report.skipped, report.dropped) == (2, 2, 0, 2)
    assert report.identical_at == [2, 4]
    assert "identical chosen and rejected: 2 pairs (lines 2, 4)" in str(report)
    good, _ = render_pairs(tok, [GOOD], block_size=64)
    assert rendered == good + good  # the kept pairs, in order, rendered as on their own


def test_pairs_without_lines_are_named_by_position(tok):
    _, report = render_pairs(tok, [GOOD, SAME] + [GOOD, SAME] * 4, block_size=64)
    assert (report.kept, report.identical) == (5, 5)
    assert "identical chosen and rejected: 5 pairs (pairs 2, 4, 6, 8, 10)" in str(report)
    _, report = render_pairs(tok, [SAME] * 7 + [GOOD], block_size=64)
    assert "(pairs 1, 2, 3, 4, 5, ...)" in str(report)  # the first few, not all of them


def test_answers_that_differ_only_after_the_cut_are_identical(tok):
    long_answer = "Lima is the capital of Peru. " * 10
    pair = {**GOOD, "chosen": long_answer + "Yes.", "rejected": long_answer + "No."}
    chosen, _, report = render_pair_batch(tok, [GOOD, pair], block_size=32)
    assert (report.kept, report.identical, report.truncated) == (1, 1, 0)
    assert chosen[0].shape[0] == 1


def test_no_pair_left_says_how_many_were_dropped_and_why(tmp_path, tok):
    path = _write_lines(tmp_path / "prefs.jsonl", [SAME, SAME, b"", SAME])
    with pytest.raises(DataError) as err:
        render_pairs(tok, load_preferences(path), block_size=64, what="held-out pairs")
    message = str(err.value)
    assert "all 3 held-out pairs were dropped" in message
    assert "3 with identical chosen and rejected (lines 1, 2, 4)" in message

    long_prompt = {**GOOD, "prompt": "What is the capital of Chile? " * 20}
    with pytest.raises(DataError) as err:
        render_pairs(tok, [long_prompt, SAME], block_size=16)
    message = str(err.value)
    assert "all 2 pairs were dropped" in message
    assert "1 with identical chosen and rejected (pair 2)" in message
    assert "1 whose prompt alone fills the context of 16 tokens (pair 1)" in message

    with pytest.raises(DataError, match="no pairs: the list is empty"):
        render_pairs(tok, [], block_size=64)


# ---------------------------------------------------------------------------- SFT chats

LONG_QUESTION = [{"role": "user", "content": "Peru? " * 40},
                 {"role": "assistant", "content": "Lima."}]


def test_skipped_chats_are_named_by_file_line(tmp_path, tok):
    long_chat = {"messages": LONG_QUESTION}
    path = _write_lines(tmp_path / "chats.jsonl", [CHAT, b"", long_chat, CHAT, long_chat])
    chats, lines = load_chats_with_lines(path)
    assert lines == [1, 3, 4, 5]
    examples, report = sft_examples(tok, chats, block_size=24, lines=lines)
    assert (len(examples), report.kept, report.skipped, report.skipped_at) == (2, 2, 2, [3, 5])
    assert "2 skipped: no assistant token within the context (lines 3, 5)" in str(report)
    require_examples(examples, report)  # some are left: no error

    _, report = sft_examples(tok, chats, block_size=24)
    assert "(chats 2, 4)" in str(report)  # without lines: positions in the list


def test_no_example_left_is_an_error_with_counts_and_places(tok):
    examples, report = sft_examples(tok, [LONG_QUESTION] * 3, block_size=24)
    with pytest.raises(DataError) as err:
        require_examples(examples, report, what="held-out chats")
    message = str(err.value)
    assert message.startswith("no held-out chats left: all 3 were skipped")
    assert "context of 24 tokens" in message and "(chats 1, 2, 3)" in message

    examples, report = sft_examples(tok, [], block_size=24)
    with pytest.raises(DataError, match="no held-out chats: the list is empty"):
        require_examples(examples, report, what="held-out chats")


# ---------------------------------------------------------------------------- pretraining text

def test_a_shard_shorter_than_one_window_is_named(tmp_path):
    path = write_shard(str(tmp_path / "val.bin"), list(range(10)), vocab_size=300)
    shard = read_shard(path, vocab_size=300)
    with pytest.raises(DataError) as err:
        require_window(shard, block_size=16)
    message = str(err.value)
    assert path in message and "10 tokens" in message and "block_size + 1 = 17" in message
    assert "--block_size" in message
    with pytest.raises(DataError, match="val.bin has 10 tokens"):
        get_batch(shard, 2, 16, generator=None)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(DataError, match="empty.bin is empty"):
        read_shard(str(tmp_path / "empty.bin"), vocab_size=300)


def test_a_single_document_is_split_by_characters(tmp_path, capsys):
    text = tmp_path / "one.txt"
    text.write_text("The capital of Peru is Lima. " * 40)  # one paragraph: one document
    meta = prepare_corpus(str(text), str(tmp_path / "out"), vocab_size=260, block_size=8)
    assert "a single document, so split by characters: the last 58 of 1,160" in \
        capsys.readouterr().out
    assert meta["train_documents"] == meta["val_documents"] == 1
    assert meta["val_tokens"] > 9 and meta["train_tokens"] > 10 * meta["val_tokens"]
    val = read_shard(str(tmp_path / "out" / "val.bin"), dtype=meta["dtype"])
    assert len(val) == meta["val_tokens"]


def test_text_too_small_for_a_window_or_a_split_is_an_error(tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("The capital of Peru is Lima. " * 40)
    out_dir = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare_corpus(str(text), str(out_dir), vocab_size=260, block_size=256, verbose=False)
    message = str(err.value)
    assert str(out_dir / "val.bin") in message and "block_size + 1 = 257" in message
    # prepared shards are reused, and checked again
    with pytest.raises(DataError, match="val split of"):
        prepare_corpus(str(text), str(out_dir), vocab_size=260, block_size=256, verbose=False)

    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a\n")
    with pytest.raises(DataError, match="2 characters in a single document, too few"):
        prepare_corpus(str(tiny), str(tmp_path / "o2"), vocab_size=260, verbose=False)
