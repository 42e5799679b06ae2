"""Generating text: greedy, temperature, top-k and top-p sampling, with a KV cache, in batches.

    out = generate(model, [prompt_ids, ...], max_new_tokens=32, temperature=0.8, stop_ids=[end])
    out.ids            (B, P + N) left-padded prompts followed by the generated tokens
    out.pad_mask       (B, P + N) True on every real token (prompt or response)
    out.response_mask  (B, P + N) True on generated tokens, the stop token included, never padding

PPO's rollouts and DPO's evaluation use the masks to know which tokens the policy chose.

Where it simplifies:
1. Prompts are left-padded so every row's next token sits in the same column; the model hides the
   padding (see `pad_mask` in model.py). Production engines batch rows of different lengths
   without padding (continuous batching, paged caches).
2. A finished row keeps being computed (its tokens are padding) until every row has stopped.

Tokens are drawn by inverse transform sampling (`sample_inverse_cdf`), one random number per row;
`sample_multinomial`, the textbook torch.multinomial draw, stands before it and the tests check
that both draw from softmax(logits / temperature).
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def filter_logits(logits, temperature, top_k=None, top_p=None):
    """Logits (B, V) divided by the temperature, with the tokens top-k and top-p cut off set to
    -inf, so that softmax gives them probability 0.

    top_k keeps the k likeliest tokens; top_p keeps the smallest set whose probability reaches p
    (nucleus sampling). Both cut off the long tail of unlikely tokens that sampling at full
    temperature would otherwise hit now and then.
    """
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already reach top_p (the first is always kept)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits  # (B, V)


def sample_multinomial(probs, generator=None):
    """One index per row of probs (B, V), drawn with those probabilities: the textbook draw."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


def sample_inverse_cdf(probs, generator=None):
    """The draw of `sample_multinomial`, from one random number per row instead of one per entry.

    Inverse transform sampling: draw u uniformly below the row's total and take the first index
    whose cumulative probability exceeds it; a token of probability 0 is never taken. On a CPU
    torch.multinomial draws a random number for every entry of the (B, V) table, which at a
    rollout's batch size is a sizeable share of each decoding step; this needs B of them. Same
    distribution, another random stream: one generator state gives other tokens than
    `sample_multinomial` does. `generate` uses it by default.
    """
    cdf = probs.cumsum(dim=-1)  # (B, V)
    u = torch.rand(probs.size(0), 1, generator=generator, device=probs.device) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True)  # (B, 1): first index with cdf > u
    return index.squeeze(-1).clamp(max=probs.size(-1) - 1)  # (B,); the clamp guards rounding


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                sampler=sample_inverse_cdf):
    """Pick one token per row from logits (B, V): argmax at temperature 0, else draw from
    softmax(filtered logits) with `sampler` (sample_inverse_cdf or sample_multinomial)."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    probs = F.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)  # (B, V)
    return sampler(probs, generator)  # (B,)


@dataclass
class Generation:
    ids: torch.Tensor  # (B, P + N)
    pad_mask: torch.Tensor  # (B, P + N) bool
    response_mask: torch.Tensor  # (B, P + N) bool
    prompt_len: int  # P, the padded prompt length

    def responses(self):
        """The generated ids of each row, as lists (stop token included where one was made)."""
        return [row[m].tolist() for row, m in zip(self.ids, self.response_mask)]


def left_pad(prompts, pad_id, device):
    """Prompts (lists of ids) -> ids (B, P) and pad_mask (B, P), padding on the left."""
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    pad_mask = torch.zeros(len(prompts), P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: give at least one token")
        ids[i, P - len(p):] = torch.tensor(p)
        pad_mask[i, P - len(p):] = True
    return ids.to(device), pad_mask.to(device)


CPU_BF16_MIN_BATCH = 8  # with small_batch_float32, fewer rows than this decode in float32


def decode_autocast(device, batch_size):
    """On a CPU, a context that turns a bfloat16 autocast region off for fewer than
    CPU_BF16_MIN_BATCH rows; elsewhere it changes nothing.

    Each decoding step multiplies B token vectors by every weight matrix. With a few rows these
    products are tiny and autocast spends its time casting the weights to bfloat16 again at
    every step, so float32 is faster; with many rows bfloat16's faster arithmetic pays for the
    casts. `bench.py` measures both on the machine at hand.
    """
    if device.type == "cpu" and batch_size < CPU_BF16_MIN_BATCH:
        return torch.autocast("cpu", enabled=False)
    return nullcontext()


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             stop_ids=(), pad_id=0, use_cache=True, generator=None, sampler=sample_inverse_cdf,
             small_batch_float32=False):
    """Continue each prompt by up to max_new_tokens (fewer if the context window fills up);
    a row stops at the first of its stop_ids.

    Decoding runs in the caller's autocast. small_batch_float32=True decodes small batches on a
    CPU in float32 instead (see decode_autocast), a speed option: under bfloat16 the two can
    pick different greedy tokens wherever two logits lie within bfloat16's rounding.
    sampler: sample_inverse_cdf (the default, faster on a CPU at rollout batch sizes) or
    sample_multinomial (torch.multinomial, the textbook draw); both draw from the same
    distribution, with different random streams.
    """
    device = next(model.parameters()).device
    dtype_switch = decode_autocast(device, len(prompts)) if small_batch_float32 else nullcontext()
    with dtype_switch:
        ids, pad_mask = left_pad(prompts, pad_id, device)  # (B, P)
        B, P = ids.shape
        if P >= model.config.block_size:
            raise ValueError(f"prompt of {P} tokens leaves no room in block_size "
                             f"{model.config.block_size}")
        # the context window is the limit: generation stops early when it is full
        max_new_tokens = min(max_new_tokens, model.config.block_size - P)
        was_training = model.training
        model.eval()
        stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        new_tokens, new_real = [], []
        cache = model.new_kv_cache(B, P + max_new_tokens) if use_cache else None
        logits = model(ids, kv_cache=cache, pad_mask=pad_mask)[:, -1]  # (B, V): prefill
        for _ in range(max_new_tokens):
            token = sample_next(logits, temperature, top_k, top_p, generator, sampler)  # (B,)
            token = token.masked_fill(done, pad_id)
            new_tokens.append(token)
            new_real.append(~done)
            done = done | torch.isin(token, stop)
            if done.all():
                break
            if use_cache:
                logits = model(token[:, None], kv_cache=cache,
                               pad_mask=new_real[-1][:, None])[:, -1]  # (B, V)
            else:  # recompute everything: what the cache saves us from
                full = torch.cat([ids, torch.stack(new_tokens, 1)], 1)  # (B, P + n)
                full_mask = torch.cat([pad_mask, torch.stack(new_real, 1)], 1)
                logits = model(full, pad_mask=full_mask)[:, -1]
        model.train(was_training)
        response = torch.stack(new_tokens, 1)  # (B, N)
        real = torch.stack(new_real, 1)  # (B, N)
        return Generation(ids=torch.cat([ids, response], 1),
                          pad_mask=torch.cat([pad_mask, real], 1),
                          response_mask=torch.cat([torch.zeros_like(pad_mask), real], 1),
                          prompt_len=P)
