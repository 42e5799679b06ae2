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
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick one token per row from logits (B, V): argmax at temperature 0, else sample.

    top_k keeps the k likeliest tokens; top_p keeps the smallest set whose probability reaches p
    (nucleus sampling). Both cut off the long tail of unlikely tokens that sampling at full
    temperature would otherwise hit now and then.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
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
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


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


def cpu_autocast_off(device):
    """Generation on a CPU runs in float32 even inside a bfloat16 autocast region.

    Decoding multiplies one token's vectors by each weight matrix: tiny products whose time goes
    to casting the weights to bfloat16 again at every step, not to arithmetic. Measured on the
    6-layer, 384-wide model (2 cores): batch 1 decodes several times faster in float32.
    Training and scoring whole sequences keep bfloat16, where it pays.
    """
    return torch.autocast("cpu", enabled=False) if device.type == "cpu" else nullcontext()


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             stop_ids=(), pad_id=0, use_cache=True, generator=None):
    """Continue each prompt by up to max_new_tokens (fewer if the context window fills up);
    a row stops at the first of its stop_ids."""
    device = next(model.parameters()).device
    with cpu_autocast_off(device):
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
            token = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
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
