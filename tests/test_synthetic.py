"""Model samples as the next generation's data (nanollm/synthetic.py)."""

import random

import pytest
import torch

from nanollm.model import GPT, GPTConfig
from nanollm.runtime import seed_everything
from nanollm.synthetic import distinct_ngrams, next_generation, sample_texts
from nanollm.tokenizer import Tokenizer


def test_distinct_ngrams_by_hand():
    # "a b c a b" has bigrams ab, bc, ca, ab -> 3 distinct; "b c" adds nothing new
    assert distinct_ngrams([[1, 2, 3, 1, 2], [2, 3]], n=2) == 3
    assert distinct_ngrams([[1, 2, 3, 1, 2], [2, 3]], n=3) == 3  # abc, bca, cab
    assert distinct_ngrams([[1, 2], [2, 1]], n=3) == 0  # no text is three tokens long
    assert distinct_ngrams([[7, 8, 9]], n=1) == 3


def test_next_generation_keeps_the_share_of_real_texts_asked():
    real = [f"real {i}" for i in range(100)]
    synthetic = [f"fake {i}" for i in range(100)]
    for share, n_real in ((0.0, 0), (0.25, 25), (1.0, 100)):
        data = next_generation(real, synthetic, share, random.Random(0))
        assert len(data) == 100
        assert sum(t.startswith("real") for t in data) == n_real
        assert len(set(data)) == 100  # no real text twice
    with pytest.raises(ValueError, match="synthetic texts"):
        next_generation(real, synthetic[:10], 0.5, random.Random(0))


def test_samples_start_from_the_separator_and_repeat_with_the_seed():
    tokenizer = Tokenizer.train("", vocab_size=256)
    seed_everything(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    texts = sample_texts(model, tokenizer, n=300, max_new_tokens=5, seed=1, batch_size=128)
    assert len(texts) == 300
    assert texts == sample_texts(model, tokenizer, n=300, max_new_tokens=5, seed=1, batch_size=128)
    assert texts != sample_texts(model, tokenizer, n=300, max_new_tokens=5, seed=2, batch_size=128)
    # an untrained model over 262 tokens: its first tokens are spread over many of them
    first = {tokenizer.encode(t)[:1][0] for t in texts if t}
    assert len(first) > 50
    with torch.no_grad():  # greedy: every row the same
        assert len(set(sample_texts(model, tokenizer, 20, 5, temperature=0.0))) == 1
