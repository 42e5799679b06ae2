"""The tokenizer: text <-> token ids, with our own BPE vocabulary or GPT-2's.

    tok = Tokenizer.train(text, vocab_size=2048)   # learn merges (nanollm/bpe.py)
    ids = tok.encode("Hello world")                # fast path: tiktoken, built from our merges
    tok.decode(ids)                                # -> "Hello world"
    tok = Tokenizer.gpt2()                         # GPT-2's vocabulary, shipped in data/

Token ids are laid out as: 0 .. n-1 the mergeable tokens (for our own vocabularies, 0..255 are
the raw bytes and merge i is token 256 + i), then six special tokens. Special tokens are never
produced by `encode`: text that happens to contain "<|endoftext|>" is encoded as ordinary
characters, so a user cannot forge a document border or a chat role. Code that builds token
sequences (data packing, the chat template in nanollm/chat.py) inserts the special ids itself.

Simplifications compared to production tokenizers:
1. The special tokens are fixed (names and order) rather than configurable.
2. Encoding is tiktoken's Rust BPE; `encode_python` is the readable version, kept for teaching
   and tested to give the same ids.
"""

import base64
import gzip
import hashlib
import json
from pathlib import Path

import tiktoken

from nanollm.bpe import GPT2_PATTERN, GPT4_PATTERN, encode_python, merges_to_ranks, train_bpe

# Fixed special tokens; their ids follow the mergeable tokens in this order.
EOT = "<|endoftext|>"  # separates documents in pretraining data
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"  # chat roles
END = "<|end|>"  # ends a chat turn; generation stops here
PAD = "<|pad|>"  # fills batches; never a training target
SPECIAL_TOKENS = (EOT, SYSTEM, USER, ASSISTANT, END, PAD)

# GPT-2's vocabulary (OpenAI, MIT license), from the openai-whisper package: see data/README.md.
GPT2_FILE = Path(__file__).resolve().parent.parent / "data" / "gpt2.tiktoken.gz"
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # uncompressed


def ranks_to_text(ranks: dict[bytes, int]) -> str:
    """tiktoken's file format: one line per token, "base64(token bytes) rank", sorted by rank."""
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    return "".join(f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in by_rank)


def ranks_from_text(text: str) -> dict[bytes, int]:
    """Inverse of `ranks_to_text`."""
    ranks = {}
    for line in text.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def read_gpt2_ranks(path: Path = GPT2_FILE) -> dict[bytes, int]:
    """Read GPT-2's mergeable ranks from the gzipped .tiktoken file, checking its checksum."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"GPT-2 vocabulary not found at {path}; it ships with the repository as "
            "data/gpt2.tiktoken.gz (see data/README.md for where it comes from)"
        )
    try:
        raw = gzip.decompress(Path(path).read_bytes())
    except (OSError, EOFError) as err:
        raise ValueError(f"GPT-2 vocabulary {path} is not a readable gzip file: {err}") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != GPT2_SHA256:
        raise ValueError(
            f"GPT-2 vocabulary {path} is corrupted: sha256 {digest}, expected {GPT2_SHA256}"
        )
    return ranks_from_text(raw.decode("ascii"))


class Tokenizer:
    """Byte-level BPE tokenizer with six special tokens; encodes through tiktoken."""

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        pattern: str = GPT4_PATTERN,
        name: str = "nanollm",
        merges: list[tuple[int, int]] | None = None,
    ):
        n = len(mergeable_ranks)
        if sorted(mergeable_ranks.values()) != list(range(n)):
            raise ValueError("mergeable ranks must be exactly 0 .. n-1, each used once")
        self.mergeable_ranks = mergeable_ranks
        self.pattern = pattern
        self.name = name
        self.merges = merges  # known for vocabularies we trained; None for GPT-2
        self.special_ids = {token: n + i for i, token in enumerate(SPECIAL_TOKENS)}
        self.eot = self.special_ids[EOT]
        self.system = self.special_ids[SYSTEM]
        self.user = self.special_ids[USER]
        self.assistant = self.special_ids[ASSISTANT]
        self.end = self.special_ids[END]
        self.pad = self.special_ids[PAD]
        self.vocab_size = n + len(SPECIAL_TOKENS)  # rows the embedding table needs
        self._tiktoken = tiktoken.Encoding(
            name, pat_str=pattern, mergeable_ranks=mergeable_ranks, special_tokens=self.special_ids
        )

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = GPT4_PATTERN) -> "Tokenizer":
        """Learn a vocabulary of `vocab_size` mergeable tokens; the specials come on top.

        Uses `train_bpe`, the fast trainer; `train_bpe_simple` is the plain loop it is tested
        against (nanollm/bpe.py)."""
        merges = train_bpe(text, vocab_size, pattern)
        return cls(merges_to_ranks(merges), pattern, merges=merges)

    @classmethod
    def gpt2(cls, path: Path = GPT2_FILE) -> "Tokenizer":
        """GPT-2's 50,257-token vocabulary: <|endoftext|> keeps its id 50256."""
        return cls(read_gpt2_ranks(path), GPT2_PATTERN, name="gpt2")

    # ----------------------------------------------------------------------------- encode/decode

    def encode(self, text: str) -> list[int]:
        """Plain text -> ids. Special-token strings in the text stay ordinary characters."""
        return self._tiktoken.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` over many texts, in parallel threads."""
        return self._tiktoken.encode_ordinary_batch(texts)

    def encode_python(self, text: str) -> list[int]:
        """Same ids as `encode`, in pure Python (slow; for reading, see nanollm/bpe.py)."""
        return encode_python(text, self.mergeable_ranks, self.pattern)

    def decode_bytes(self, ids: list[int]) -> bytes:
        """Ids -> the bytes they stand for (special tokens as their text)."""
        self._check_ids(ids)
        return self._tiktoken.decode_bytes(ids)

    def decode(self, ids: list[int]) -> str:
        """Ids -> text. A cut through a multi-byte character becomes U+FFFD, never an error."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes of one token, e.g. to show how a text was cut into tokens."""
        return self.decode_bytes([token_id])

    def _check_ids(self, ids: list[int]) -> None:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids out of range 0..{self.vocab_size - 1}: {bad[:5]}")

    # --------------------------------------------------------------------------- save and load

    def to_dict(self) -> dict:
        """Plain str/int/list/dict only, so it can sit in a checkpoint read with weights_only."""
        return {
            "name": self.name,
            "pattern": self.pattern,
            "special_tokens": dict(self.special_ids),
            "vocab_size": self.vocab_size,
            "merges": None if self.merges is None else [list(pair) for pair in self.merges],
            "mergeable_ranks": ranks_to_text(self.mergeable_ranks),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        merges = None if d.get("merges") is None else [tuple(pair) for pair in d["merges"]]
        tok = cls(ranks_from_text(d["mergeable_ranks"]), d["pattern"], d["name"], merges)
        if tok.special_ids != d["special_tokens"] or tok.vocab_size != d["vocab_size"]:
            raise ValueError(
                f"saved tokenizer does not match: special tokens {d['special_tokens']}, "
                f"vocab size {d['vocab_size']}; rebuilt {tok.special_ids}, {tok.vocab_size}"
            )
        return tok

    def save(self, path: str | Path) -> None:
        """Write `path` in tiktoken's .tiktoken format and the rest as JSON beside it."""
        path = Path(path)
        if path.suffix == ".json":
            raise ValueError(f"{path}: the .json name is taken by the metadata file")
        meta = self.to_dict()
        path.write_text(meta.pop("mergeable_ranks"), encoding="ascii")
        path.with_suffix(".json").write_text(json.dumps(meta) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        for file in (path, path.with_suffix(".json")):
            if not file.exists():
                raise FileNotFoundError(f"tokenizer file {file} not found (written by .save)")
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return cls.from_dict({**meta, "mergeable_ranks": path.read_text(encoding="ascii")})

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size})"
