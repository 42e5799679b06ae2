"""Prepare pretraining data: text -> BPE tokenizer -> train/val token shards.

    python data/prepare.py                                  # the built-in world (offline default)
    python data/prepare.py --source path/to/text_or_folder --out_dir data/mytext
    python data/prepare.py --source shakespeare --out_dir data/shakespeare   # needs the network
    python data/prepare.py --source world --tokenizer gpt2  # GPT-2's vocabulary instead of our own

The work itself lives in nanollm/corpus.py; train_pretrain.py calls the same function, so running
this first is optional. Already-prepared data with the same settings is reused.
"""

from dataclasses import dataclass, field
from typing import Literal

from nanollm.config import check_flags, parse_config
from nanollm.corpus import prepare_corpus
from nanollm.errors import report_user_errors
from nanollm.world import world_corpus


@dataclass
class PrepareConfig:
    source: str = field(default="world", metadata={
        "help": "world | shakespeare | tinystories | a text file | a folder of text files"})
    out_dir: str = "data/world"
    tokenizer: Literal["bpe", "gpt2"] = field(default="bpe", metadata={
        "help": "bpe (train our own) | gpt2"})
    vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary, before specials"})
    val_fraction: float = 0.05
    world_chars: int = field(default=3_000_000, metadata={"help": "size of the generated world"})
    seed: int = 0


if __name__ == "__main__":
    report_user_errors()  # a bad flag or text file is one line, not a traceback
    cfg = parse_config(PrepareConfig, description=__doc__)
    check_flags(cfg, positive=("vocab_size", "world_chars", "val_fraction"),
                fractions=("val_fraction",))
    prepare_corpus(cfg.source, cfg.out_dir, cfg.vocab_size, cfg.tokenizer, cfg.val_fraction,
                   cfg.seed, **world_corpus(cfg.source, cfg.world_chars, cfg.seed))
