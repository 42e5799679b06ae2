"""Token data on disk and in batches: packing, shards, random windows, a weighted mixture.

A language model trains on fixed-length windows of token ids. A window of T + 1 tokens gives T
training pairs at once: inputs x = window[:-1], targets y = window[1:] (predict the next token).

    documents ──pack──> one stream: doc0 <sep> doc1 <sep> doc2 <sep> ...
    stream    ──write_shard──> train.bin (uint16 or uint32, raw)  ──read_shard──> np.memmap
    memmap    ──get_batch──> (x, y) int64 (B, T) from random offsets        (training)
    memmap    ──iterate_batches──> consecutive windows covering the array    (evaluation)

Why a raw memmap: a shard can be bigger than memory; the operating system pages in only the windows
we touch. Why uint16: GPT-2's 50,257 ids fit in 2 bytes, half the disk and page cache of uint32.

Simplifications compared with production loaders:
1. Random windows are cut from anywhere in the stream, across document boundaries; the separator
   token tells the model where one document ends (as GPT-2 did). No attention masking per document.
2. One process reads one shard; there is no background prefetching thread.
3. A shard holds no header: the reader is told the vocabulary size (or dtype) by the caller, who
   keeps it in the metadata JSON beside the shard.

Shapes: B batch, T block size (time).
"""

import os

import numpy as np
import torch

from nanollm.errors import DataError

# Largest vocabulary whose ids fit in an unsigned 16-bit integer (ids 0 .. 65535).
UINT16_VOCAB_LIMIT = 2**16
UINT32_VOCAB_LIMIT = 2**32


# ----------------------------------------------------------------------------------------------
# Packing documents into windows


def pack(docs, sep, block_size):
    """Concatenate documents, each followed by `sep`, and cut the stream into training windows.

    Window i covers stream[i * T : i * T + T + 1] (T = block_size), so consecutive windows overlap
    by one token: the last target of window i is the first input of window i + 1, and every token
    after the first is a target exactly once. Nothing is padded; the tail too short for one more
    window is dropped.

    Returns (windows, dropped): windows int64 (N, T + 1); dropped = number of tokens at the end of
    the stream that appear in no window (so a caller can report what was lost).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    pieces = []
    for doc in docs:
        pieces.append(np.asarray(doc, dtype=np.int64))
        pieces.append(np.array([sep], dtype=np.int64))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    # Each window needs T fresh tokens plus the one it shares with the previous window.
    n_windows = max(len(stream) - 1, 0) // block_size
    used = n_windows * block_size + 1 if n_windows else 0
    starts = np.arange(n_windows) * block_size  # (N,)
    index = starts[:, None] + np.arange(block_size + 1)[None, :]  # (N, T + 1)
    windows = stream[index]  # (N, T + 1)
    return windows, len(stream) - used


# ----------------------------------------------------------------------------------------------
# Shards: flat token arrays on disk


def token_dtype(vocab_size):
    """The smallest unsigned integer dtype that holds every id of a vocabulary of this size."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= UINT16_VOCAB_LIMIT:
        return np.dtype(np.uint16)
    if vocab_size <= UINT32_VOCAB_LIMIT:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32")


def write_shard(path, ids, vocab_size):
    """Write token ids to `path` as raw uint16/uint32 (see token_dtype); returns the path.

    Atomic: the bytes go to `path.tmp`, which then replaces `path`, so a crash leaves either the
    old shard or the new one, never half of one.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"a shard is a flat list of ids, got shape {ids.shape}")
    # Check before narrowing the dtype: casting 70000 to uint16 would silently wrap around.
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got min {ids.min()} "
                         f"and max {ids.max()}")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "wb") as f:
        ids.astype(token_dtype(vocab_size)).tofile(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    return path


def read_shard(path, vocab_size=None, dtype=None):
    """Open a shard written by write_shard as a read-only 1-D np.memmap.

    Give either the vocabulary size it was written with or its dtype; a raw file cannot tell.
    """
    if (vocab_size is None) == (dtype is None):
        raise ValueError("read_shard needs exactly one of vocab_size or dtype")
    dtype = token_dtype(vocab_size) if dtype is None else np.dtype(dtype)
    n_bytes = os.path.getsize(path)
    if n_bytes == 0:
        raise DataError(f"{path} is empty: prepare the data again (data/prepare.py)")
    if n_bytes % dtype.itemsize:
        raise DataError(f"{path} has {n_bytes} bytes, not a whole number of {dtype} ids: "
                        "was it written with another vocabulary size?")
    return np.memmap(path, dtype=dtype, mode="r")


# ----------------------------------------------------------------------------------------------
# Batches


def _windows_to_device(windows, device, pin_memory):
    """(B, T + 1) numpy windows -> int64 (x, y) on `device`, each (B, T)."""
    window = torch.from_numpy(windows.astype(np.int64))  # (B, T + 1)
    if torch.device(device).type == "cuda":
        # Pinned (page-locked) memory lets the copy run asynchronously with GPU work.
        if pin_memory:
            window = window.pin_memory()
        window = window.to(device, non_blocking=True)
    x = window[:, :-1].contiguous()  # (B, T)
    y = window[:, 1:].contiguous()  # (B, T) the next token after each input
    return x, y


def require_window(data, block_size, name=None):
    """Stop with a DataError unless `data` holds one window of block_size + 1 tokens, the least
    that get_batch and iterate_batches can read. `name` calls the data something in the message;
    by default a shard opened with read_shard is called by its file."""
    if len(data) >= block_size + 1:
        return
    name = name or getattr(data, "filename", None) or "the data"
    raise DataError(f"{name} has {len(data)} tokens, fewer than one window of block_size + 1 = "
                    f"{block_size + 1}: give more text, or a smaller --block_size")


def get_batch(data, batch_size, block_size, generator, device="cpu", pin_memory=False):
    """A batch of random windows from a 1-D token array (or memmap): (x, y), each int64 (B, T).

    Offsets come from the torch `generator`, so the same generator state gives the same batches:
    save generator.get_state() in a checkpoint to resume the exact data order.
    """
    require_window(data, block_size)
    # randint's upper bound is exclusive: the last window starts at len - T - 1 and ends at len - 1.
    offsets = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    windows = np.stack([data[o:o + block_size + 1] for o in offsets.tolist()])  # (B, T + 1)
    return _windows_to_device(windows, device, pin_memory)


class MixtureSampler:
    """Batches whose rows come from several sources in proportion to their weights.

    Each row first draws a source (probability = weight / sum of weights), then a random window
    from that source. Used to mix corpora, e.g. {"stories": 3, "facts": 1}.
    """

    def __init__(self, sources, weights, batch_size, block_size, generator):
        if set(sources) != set(weights):
            raise ValueError(f"sources {sorted(sources)} and weights {sorted(weights)} must "
                             "have the same names")
        self.names = sorted(sources)
        probs = torch.tensor([float(weights[name]) for name in self.names])
        if not torch.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero: {weights}")
        for name in self.names:
            require_window(sources[name], block_size, name=f"source '{name}'")
        self.sources = sources
        self.probs = probs / probs.sum()
        self.batch_size = batch_size
        self.block_size = block_size
        self.generator = generator

    def batch(self, device="cpu", pin_memory=False):
        """(x, y), each int64 (B, T), rows drawn from the mixture."""
        T = self.block_size
        choice = torch.multinomial(self.probs, self.batch_size, replacement=True,
                                   generator=self.generator)  # (B,) source index of each row
        windows = np.empty((self.batch_size, T + 1), dtype=np.int64)
        for i, name in enumerate(self.names):
            rows = (choice == i).nonzero().flatten().tolist()
            if not rows:
                continue
            data = self.sources[name]
            offsets = torch.randint(len(data) - T, (len(rows),), generator=self.generator)
            for row, o in zip(rows, offsets.tolist()):
                windows[row] = data[o:o + T + 1]
        return _windows_to_device(windows, device, pin_memory)


def iterate_batches(data, batch_size, block_size, device="cpu", max_batches=None):
    """Consecutive windows over a 1-D array for evaluation: deterministic, each target once.

    Window i covers data[i * T : i * T + T + 1] (the same layout as pack). Yields (x, y) int64
    (b, T) with b <= batch_size (the last batch may be smaller); the tail too short for one
    window is skipped. `max_batches` bounds the cost of evaluating a long validation set.
    """
    require_window(data, block_size)
    T = block_size
    n_windows = (len(data) - 1) // T
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    for first in range(0, n_windows, batch_size):
        rows = range(first, min(first + batch_size, n_windows))
        windows = np.stack([data[i * T:i * T + T + 1] for i in rows])  # (b, T + 1)
        yield _windows_to_device(windows, device, pin_memory=False)
