"""Byte-level byte pair encoding (BPE), written out in plain Python.

BPE builds a vocabulary bottom-up. It starts from the 256 possible bytes and repeatedly glues
together the pair of adjacent tokens that occurs most often in the training text; each glued pair
becomes a new token. Encoding then replays those merges on new text. This file holds both
halves of the idea, training first:

1. `train_bpe_simple(text, vocab_size)` learns the merges the obvious way: count every pair,
   merge the most frequent, repeat. It returns a list of pairs (a, b), where merge number i
   creates token id 256 + i. Ranks 0..255 are the raw bytes.
2. `train_bpe(text, vocab_size)` learns the same merges faster, by updating the pair counts
   after each merge instead of recounting; `Tokenizer.train` uses it, and the tests check that
   both trainers give identical merges.
3. `encode_python(text, ranks, pattern)` encodes text with a learned vocabulary, the slow and
   readable way. `nanollm.tokenizer.Tokenizer` hands the same vocabulary to tiktoken for speed,
   and the tests check that both give the same ids.

Before any counting, text is cut into chunks by a regular expression (words, numbers, punctuation
runs, whitespace), and pairs are never counted across chunk borders, so a token never spans
" dog." and the vocabulary is not spent on every word-plus-punctuation combination.

Simplifications compared to production trainers (Hugging Face tokenizers, sentencepiece):
1. Pure Python and one thread: fine for the few megabytes of text a laptop run trains on;
   production trainers are written in Rust and C++ and count in parallel.
2. No normalisation (NFC, lowercasing) and no byte-fallback rules: every string round-trips.
3. Regex split with Python's `re`, which lacks the \\p{L} (letter) and \\p{N} (number) classes
   tiktoken's engine uses; `python_regex` rewrites them (see there for the tiny differences).
"""

import heapq
import re
from collections import Counter, defaultdict

from nanollm.errors import ConfigError

# GPT-2's split pattern: contractions, letter runs, digit runs, punctuation runs, whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# GPT-4's (cl100k) split pattern, our default. Compared to GPT-2 it matches contractions in any
# case, lets one non-letter lead a word ("_name", "$x"), caps digit runs at 3 (so numbers split
# "1234" -> "123" "4" instead of taking a vocabulary slot per number) and keeps newlines apart.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)

# How to say tiktoken's Unicode classes with Python's `re`. Python's \w is "letter, number or _",
# so "letter" is a word character that is neither a digit nor "_", and "neither space, letter nor
# number" is a non-space non-word character, or "_". Longest patterns first: they contain the
# shorter ones.
_RE_TRANSLATION = [
    (r"[^\r\n\p{L}\p{N}]", r"(?:[^\r\n\w]|_)"),
    (r"[^\s\p{L}\p{N}]", r"(?:[^\s\w]|_)"),
    (r"\p{L}", r"[^\W\d_]"),
    (r"\p{N}", r"\d"),
]


def python_regex(pattern: str) -> re.Pattern:
    """Compile a tiktoken split pattern with Python's `re` (needs Python >= 3.11 for `?+`, `++`).

    The translation agrees with tiktoken on ordinary text in any script. It differs on rare
    characters only: numbers that are not decimal digits ("²", "½", "Ⅻ") count as letters for
    `re` but as numbers for tiktoken, and `re` counts the control characters \\x1c-\\x1f as space.
    """
    for unicode_class, python_class in _RE_TRANSLATION:
        pattern = pattern.replace(unicode_class, python_class)
    return re.compile(pattern)


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` by `new_id`, scanning left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < 256:
        raise ConfigError(f"--vocab_size {vocab_size}: a byte-level vocabulary needs at least "
                          "the 256 raw bytes")


def train_bpe_simple(
    text: str, vocab_size: int, pattern: str = GPT4_PATTERN
) -> list[tuple[int, int]]:
    """Learn vocab_size - 256 merges from `text`; merge i makes token 256 + i.

    The plain loop: count every adjacent pair in every chunk, merge the most frequent pair
    everywhere, repeat. A tie goes to the smallest pair (a, b), so training is deterministic.
    Fewer merges come back if the text runs out of pairs.
    """
    check_vocab_size(vocab_size)
    chunks = [list(chunk.encode("utf-8")) for chunk in python_regex(pattern).findall(text)]
    merges = []
    for new_id in range(256, vocab_size):
        counts = Counter(pair for ids in chunks for pair in zip(ids, ids[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent; smallest on a tie
        merges.append(pair)
        chunks = [merge(ids, pair, new_id) for ids in chunks]
    return merges


def train_bpe(text: str, vocab_size: int, pattern: str = GPT4_PATTERN) -> list[tuple[int, int]]:
    """The merges of `train_bpe_simple`, same ties included, without recounting every pair.

    Three tricks keep it fast:
    1. Identical chunks are counted once ("the" may appear thousands of times; we store it once
       with its count), so the work scales with the number of distinct chunks, not the text.
    2. Pair counts are updated incrementally: merging (a, b) only touches the chunks that contain
       it, found through an index pair -> chunk ids.
    3. The best pair comes from a heap ordered by (-count, pair), the same order as the plain
       loop's `min`. Entries go stale when a count changes; instead of deleting them we push the
       new count and skip stale entries when they surface.
    """
    check_vocab_size(vocab_size)
    chunk_counts = Counter(python_regex(pattern).findall(text))
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each chunk as token ids
    counts = list(chunk_counts.values())

    pair_counts: Counter = Counter()  # (a, b) -> occurrences in the whole text
    where = defaultdict(set)  # (a, b) -> ids of chunks that contain (or once contained) it
    for chunk_id, (ids, count) in enumerate(zip(chunks, counts)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += count
            where[pair].add(chunk_id)
    heap = [(-count, pair) for pair, count in pair_counts.items()]  # min-heap of -count
    heapq.heapify(heap)

    merges = []
    while 256 + len(merges) < vocab_size and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg_count:
            continue  # stale heap entry: the count changed since it was pushed
        new_id = 256 + len(merges)
        merges.append(pair)

        changed = set()
        for chunk_id in where.pop(pair):
            old, count = chunks[chunk_id], counts[chunk_id]
            new = merge(old, pair, new_id)
            if len(new) == len(old):
                continue  # stale index entry: an earlier merge already took this pair apart
            for p in zip(old, old[1:]):  # forget this chunk's old pairs ...
                pair_counts[p] -= count
                changed.add(p)
            for p in zip(new, new[1:]):  # ... and count its new ones
                pair_counts[p] += count
                where[p].add(chunk_id)
                changed.add(p)
            chunks[chunk_id] = new
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    return merges


def merges_to_ranks(merges: list[tuple[int, int]]) -> dict[bytes, int]:
    """The vocabulary as tiktoken wants it: token bytes -> rank (= token id)."""
    token_bytes = [bytes([b]) for b in range(256)]
    for a, b in merges:
        token_bytes.append(token_bytes[a] + token_bytes[b])
    return {token: rank for rank, token in enumerate(token_bytes)}


def bpe_chunk(chunk: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Encode one chunk: start from single bytes, merge the lowest-rank adjacent pair until none.

    A pair can merge when its concatenated bytes are a token; the lowest rank is the merge that
    was learned first. Like tiktoken, a chunk that is itself a token maps straight to it.
    """
    if chunk in ranks:
        return [ranks[chunk]]
    parts = [bytes([b]) for b in chunk]
    while len(parts) > 1:
        pair_ranks = [ranks.get(left + right) for left, right in zip(parts, parts[1:])]
        candidates = [(rank, i) for i, rank in enumerate(pair_ranks) if rank is not None]
        if not candidates:
            break
        _, i = min(candidates)  # lowest rank; the leftmost one on a tie
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[part] for part in parts]


def encode_python(text: str, ranks: dict[bytes, int], pattern: str) -> list[int]:
    """Encode `text` in pure Python: split into chunks, then BPE each chunk's UTF-8 bytes."""
    ids = []
    for chunk in python_regex(pattern).findall(text):
        ids.extend(bpe_chunk(chunk.encode("utf-8"), ranks))
    return ids
