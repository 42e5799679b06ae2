"""A model's own samples as training data for the next model, and how to see what that loses.

Shumailov et al. (2024, "AI models collapse when trained on recursively generated data") train
generation n+1 on text sampled from generation n. Each generation learns the last one's
distribution from a finite sample of it: whatever is rare is easily missed by the sample, and
what the sample misses the next model cannot learn, so the tails go first, while each model's
own mistakes are passed on as data. Keeping a share of the original text in every generation's
data is the usual remedy.

    texts = sample_texts(model, tokenizer, n=900, max_new_tokens=20, seed=0)
    data = next_generation(real_texts, texts, real_share=0.25, rng=random.Random(0))
    distinct_ngrams([tokenizer.encode(t) for t in data], n=3)
"""

import random

import torch

from nanollm.generate import generate


def sample_texts(model, tokenizer, n, max_new_tokens, temperature=1.0, seed=0, batch_size=256):
    """n texts the model writes from nothing (its separator token as the only prompt), each up
    to its next separator or max_new_tokens tokens, sampled at `temperature`. Empty ones are
    kept as "" so that n texts come back."""
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        out = generate(model, [[tokenizer.eot]] * rows, max_new_tokens, temperature=temperature,
                       stop_ids=[tokenizer.eot], pad_id=tokenizer.pad, generator=generator)
        texts += [tokenizer.decode([t for t in ids if t != tokenizer.eot]).strip()
                  for ids in out.responses()]
    return texts


def next_generation(real, synthetic, real_share, rng: random.Random):
    """The next generation's training texts, as many as `real`: round(real_share * len(real)) of
    them drawn from the real texts, the rest the first of the synthetic ones, shuffled."""
    if not 0.0 <= real_share <= 1.0:
        raise ValueError(f"real_share must be between 0 and 1, got {real_share}")
    n_real = round(real_share * len(real))
    if len(synthetic) < len(real) - n_real:
        raise ValueError(f"{len(synthetic)} synthetic texts, {len(real) - n_real} needed")
    texts = rng.sample(real, n_real) + list(synthetic[:len(real) - n_real])
    rng.shuffle(texts)
    return texts


def distinct_ngrams(token_lists, n):
    """How many different n-token sequences the texts hold (each text's own n-grams, none across
    two texts)."""
    return len({tuple(ids[i:i + n]) for ids in token_lists for i in range(len(ids) - n + 1)})
