"""From a text source to token shards: the data preparation behind data/prepare.py.

    meta = prepare_corpus("my_notes/", "data/notes")       # a local text file or folder
    meta = prepare_corpus("shakespeare", "data/shakespeare")   # a download (needs the network)
    # the built-in world: its documents come from nanollm.world.world_corpus
    meta = prepare_corpus("world", "data/world", **world_corpus("world", 3_000_000))

It writes, into the output folder:
    train.bin, val.bin    token ids (uint16 when the vocabulary fits, else uint32)
    tokenizer.tiktoken    the tokenizer, in tiktoken's file format, with tokenizer.json beside it
    meta.json             sizes, dtype, source, a fingerprint of the settings, prompts for samples

Documents are split into train and validation whole (never a document in both), then joined with
the document separator token, so the model learns where one text ends and the next begins. A text
of a single document is split by characters instead (its last val_fraction goes to validation),
and says so. Given the block_size it will be trained with, prepare_corpus checks that each split
holds one window of it, so a text too small fails here, with its numbers, and not mid-training.
Work that is already done with the same settings is skipped.
"""

import hashlib
import json
import os
import random
import urllib.error
import urllib.request

import numpy as np
from tqdm import tqdm

from nanollm.data import read_shard, require_window, token_dtype, write_shard
from nanollm.errors import ConfigError, DataError
from nanollm.tokenizer import Tokenizer

DOWNLOADS = {
    "shakespeare": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                   "tinyshakespeare/input.txt",
    "tinystories": "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
                   "TinyStories-valid.txt",
}
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".html", ".tex")
TOKENIZER_TRAIN_CHARS = 2_000_000  # BPE statistics settle long before this; it keeps training fast
DOWNLOAD_TIMEOUT_S = 10


def read_text_file(path):
    """A file's text; a clear error for binary or empty files rather than garbage shards."""
    with open(path, "rb") as f:
        raw = f.read()
    if b"\0" in raw[:8192]:
        raise DataError(f"{path}: looks like a binary file (it holds NUL bytes); give text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path} line {line}: not UTF-8 text (byte {e.start} of the file is "
                        f"{raw[e.start]:#04x}): give text files saved as UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text


def split_documents(text):
    """A long text becomes documents at blank lines, grouped to a few thousand characters each."""
    docs, current = [], []
    for para in text.split("\n\n"):
        current.append(para)
        if sum(len(p) for p in current) > 4000:
            docs.append("\n\n".join(current))
            current = []
    if current:
        docs.append("\n\n".join(current))
    return [d for d in docs if d.strip()]


def local_documents(path):
    """Documents from a text file or every text file under a folder."""
    if os.path.isfile(path):
        return split_documents(read_text_file(path))
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                   if name.endswith(TEXT_SUFFIXES))
    if not files:
        raise DataError(f"{path}: no text files ({', '.join(TEXT_SUFFIXES)}) in this folder")
    return [doc for f in files for doc in split_documents(read_text_file(f))]


def download(name, cache_dir):
    """A named data set, fetched once; offline it fails within seconds and says what to do."""
    path = os.path.join(cache_dir, f"{name}.txt")
    if not os.path.exists(path):
        url = DOWNLOADS[name]
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
                data = r.read()
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(f"could not download '{name}' from {url} ({e}). This machine seems "
                               f"to be offline: fetch the file elsewhere, save it as {path} and "
                               f"run again, or use --source world / a local path.") from None
        os.makedirs(cache_dir, exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return path


def source_documents(source, cache_dir):
    if source in DOWNLOADS:
        return local_documents(download(source, cache_dir))
    if os.path.exists(source):
        return local_documents(source)
    raise ConfigError(f"--source {source!r}: not 'world', a download ({', '.join(DOWNLOADS)}), "
                      f"or an existing file or folder")


def sample_prompts(val_docs):
    """A few prompts to sample from during training, so a person can watch the model learn."""
    return [" ".join(doc.split()[:4]) for doc in val_docs[:3]]


def split_train_val(docs, val_fraction, source, say):
    """(train texts, validation texts): whole documents, the first val_fraction of them (at least
    one) for validation. A single document is cut by characters instead, its last val_fraction
    for validation, since there is no second document to hold out."""
    if len(docs) >= 2:
        n_val = max(1, int(len(docs) * val_fraction))
        return docs[n_val:], docs[:n_val]
    text = docs[0] if docs else ""
    n_val = max(1, int(len(text) * val_fraction))
    train_text, val_text = text[:-n_val], text[-n_val:]
    if not train_text.strip() or not val_text.strip():
        raise DataError(f"{source}: {len(text)} characters in a single document, too few to "
                        f"split into train and validation text ({val_fraction:.0%} of it, at "
                        f"least one character, for validation): give more text")
    say(f"{source}: a single document, so split by characters: the last {n_val:,} of "
        f"{len(text):,} for validation")
    return [train_text], [val_text]


def require_windows(out_dir, meta, block_size):
    """Stop with a DataError, naming the shard, unless both splits hold one window of
    block_size + 1 tokens: a smaller split would fail only once training reads it."""
    for split in ("train", "val"):
        shard = read_shard(os.path.join(out_dir, f"{split}.bin"), dtype=meta["dtype"])
        require_window(shard, block_size, name=f"{shard.filename} ({split} split of "
                                                f"{meta['source']})")


def fingerprint(settings, source, docs):
    """Settings plus what the source is made of: a change to either means preparing again.

    For files, their sizes and modification times stand in for the text (cheap to read); the
    generated world is hashed whole, so a change to its generator is noticed too.
    """
    stamp = dict(settings)
    if docs:
        stamp["text"] = hashlib.sha256("\0".join(docs).encode()).hexdigest()
    elif os.path.exists(source):
        files = [source] if os.path.isfile(source) else sorted(
            os.path.join(r, n) for r, _, ns in os.walk(source) for n in ns)
        stamp["files"] = [(f, os.path.getsize(f), int(os.path.getmtime(f))) for f in files]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


def prepare_corpus(source, out_dir, vocab_size=2048, tokenizer="bpe", val_fraction=0.05, seed=0,
                   cache_dir="data/cache", documents=None, prompts=None, verbose=True,
                   block_size=None):
    """Prepare shards for `source` in out_dir (or reuse them); returns the metadata dict.

    source: a download's name or a local file or folder, read here; or, with `documents` (a list
    of texts made by the caller, such as the built-in world's), only the name they go by.
    prompts: what to sample from during training (default: the openings of validation texts).
    block_size: when given, each split must hold one window of it (a DataError otherwise)."""
    settings = dict(source=source, vocab_size=vocab_size, tokenizer=tokenizer,
                    val_fraction=val_fraction, seed=seed)
    fp = fingerprint(settings, source, documents or [])
    meta_path = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("fingerprint") == fp:
            if verbose:
                print(f"{out_dir}: up to date ({meta['train_tokens']:,} train tokens), skipping")
            if block_size is not None:
                require_windows(out_dir, meta, block_size)
            return meta
    say = print if verbose else (lambda *a: None)
    docs = list(documents) if documents else source_documents(source, cache_dir)
    random.Random(seed).shuffle(docs)
    say(f"{source}: {len(docs):,} documents, {sum(map(len, docs)):,} characters")
    train_docs, val_docs = split_train_val(docs, val_fraction, source, say)

    if tokenizer == "gpt2":
        tok = Tokenizer.gpt2()
    else:
        train_text = "\n\n".join(train_docs)[:TOKENIZER_TRAIN_CHARS]
        say(f"training a BPE tokenizer, vocabulary {vocab_size}, on {len(train_text):,} chars")
        tok = Tokenizer.train(train_text, vocab_size)
        if len(tok.mergeable_ranks) < vocab_size:
            say(f"the text has too few distinct pairs for {vocab_size} tokens: the vocabulary "
                f"has {len(tok.mergeable_ranks)}")

    os.makedirs(out_dir, exist_ok=True)
    meta = dict(settings, fingerprint=fp, vocab_size=tok.vocab_size,
                dtype=np.dtype(token_dtype(tok.vocab_size)).name,
                sample_prompts=prompts or sample_prompts(val_docs))
    for split, split_docs in (("train", train_docs), ("val", val_docs)):
        ids = []
        for doc in tqdm(split_docs, desc=f"encoding {split}", disable=not verbose, unit="doc"):
            ids.extend(tok.encode(doc))
            ids.append(tok.eot)  # the document separator
        write_shard(os.path.join(out_dir, f"{split}.bin"), ids, tok.vocab_size)
        meta[f"{split}_tokens"] = len(ids)
        meta[f"{split}_documents"] = len(split_docs)
    tok.save(os.path.join(out_dir, "tokenizer.tiktoken"))
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(meta_path + ".tmp", meta_path)  # meta last: its presence means the rest is complete
    say(f"wrote {out_dir}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens")
    if block_size is not None:
        require_windows(out_dir, meta, block_size)
    return meta
