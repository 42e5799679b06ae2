"""The GPT: a GPT-2-style decoder-only transformer and its language head.

It is the pretrained language model, the SFT and RLHF policies and their frozen reference. It
knows nothing of those uses: a reward model or a critic wraps a GPT trunk and owns its own head
(nanollm/reward.py, nanollm/ppo.py), reading the final states that `hidden()` returns.

    logits = GPT(config)(idx)                    # (B, T, V), for every position, always
    states = GPT(config).hidden(idx)             # (B, T, C), what a wrapping head reads

Shape legend, used in every comment of the project:
    B batch, T time (the tokens fed now), S key length (cached + new tokens), C channels (n_embd),
    H heads, D head size (C // H), V vocabulary.

Where it simplifies compared with GPT-2 and production systems:
1. No rotary embeddings, grouped-query attention or RMSNorm: GPT-2's learned positions and
   LayerNorm, so that GPT-2's own weights load with nothing but a transpose list.
2. Left-padded batches (for generating from prompts of different lengths) are handled with a boolean
   `pad_mask`; positions then count real tokens only, so padding never changes what a row computes.
3. The KV cache is a plain pair of preallocated tensors per layer; no paged memory.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanollm.optim import weight_decay_groups


@dataclass
class GPTConfig:
    block_size: int = 256  # longest sequence the position table covers
    vocab_size: int = 2048
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as in GPT-2
    attention: str = "sdpa"  # "sdpa" (fused, flash on CUDA) or "manual" (written out, for learning)


class KVCache:
    """Keys and values of the tokens seen so far, so each new token costs one position, not T.

    Tensors are allocated on the first write, with the dtype the model computes in (bf16 under
    autocast). `pad_mask` remembers which cached positions are real tokens.
    """

    def __init__(self, n_layer, batch_size, max_len):
        self.n_layer, self.batch_size, self.max_len = n_layer, batch_size, max_len
        self.k = self.v = None  # (n_layer, B, H, max_len, D) each
        self.pad_mask = None  # (B, max_len) bool, True where the cached token is real
        self.pos = 0  # how many positions are filled

    def append_mask(self, pad_mask):  # (B, T) bool
        if self.pad_mask is None:
            self.pad_mask = torch.ones(self.batch_size, self.max_len, dtype=torch.bool,
                                       device=pad_mask.device)
        self.pad_mask[:, self.pos:self.pos + pad_mask.size(1)] = pad_mask

    def update(self, layer, k, v):  # k, v: (B, H, T, D) -> all keys/values so far (B, H, S, D)
        if self.k is None:
            B, H, _, D = k.shape
            shape = (self.n_layer, B, H, self.max_len, D)
            self.k = torch.zeros(shape, dtype=k.dtype, device=k.device)
            self.v = torch.zeros(shape, dtype=v.dtype, device=v.device)
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def attention_mask(T, S, key_real=None, device=None):
    """Which keys each query may see: (T, S) or, with padding, (B, 1, T, S); True = may attend.

    The T queries are the last T of the S positions. Causal: a token never sees the future, or
    training on next-token prediction would let it copy the answer. With padding, padded keys are
    hidden too, and every position keeps itself so a padded query's softmax is never all -inf.
    """
    q_pos = torch.arange(S - T, S, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    mask = k_pos <= q_pos  # (T, S)
    if key_real is not None:  # (B, S)
        mask = (mask[None] & key_real[:, None, :]) | (k_pos == q_pos)[None]  # (B, T, S)
        mask = mask[:, None]  # (B, 1, T, S), broadcast over heads
    return mask


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.dropout, self.manual = config.n_head, config.dropout, config.attention
        # q, k and v in one matrix product
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask, kv_cache=None, layer=0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # q, k, v: (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, H, S, D)
        if self.manual == "manual":
            y = self.manual_attention(q, k, v, mask)
        else:
            # mask None means plain causal attention over T == S: the flash-attention kernel.
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T == k.size(2) and T > 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def manual_attention(self, q, k, v, mask):
        """softmax(q k^T / sqrt(D)) v, written out: the scores a reader can print and plot."""
        T, S = q.size(2), k.size(2)
        if mask is None:
            mask = attention_mask(T, S, device=q.device)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, H, T, S)
        att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att.float(), dim=-1).to(q.dtype)  # softmax in fp32: exp overflows in bf16
        att = self.attn_dropout(att)
        return att @ v  # (B, H, T, D)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, 4C) -> (B, T, C)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # GPT-2's GELU


class Block(nn.Module):
    """Pre-LayerNorm block: normalise, then add the result back onto the residual stream."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask, kv_cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), mask, kv_cache, layer)  # tokens talk to each other
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings (V, C)
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: reading a token in and writing it out use the same vectors (GPT-2 does this;
        # it saves V*C parameters, a large share of a small model).
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init: each block adds two outputs to the residual stream, so their
        # projections start smaller, or the stream's variance would grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameters, without the position table by default (as usually quoted)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def new_kv_cache(self, batch_size, max_len=None):
        return KVCache(self.config.n_layer, batch_size, max_len or self.config.block_size)

    def hidden(self, idx, kv_cache=None, pad_mask=None):
        """Final-LayerNormed states (B, T, C) for token ids idx (B, T)."""
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size "
                             f"{self.config.block_size}")
        if kv_cache is not None and pad_mask is None and kv_cache.pad_mask is not None:
            pad_mask = torch.ones(B, T, dtype=torch.bool, device=idx.device)
        if kv_cache is not None and pad_mask is not None:
            kv_cache.append_mask(pad_mask)
            key_real = kv_cache.pad_mask[:, :start + T]  # (B, S)
        else:
            key_real = pad_mask  # (B, T) or None
        if key_real is not None:
            # positions count real tokens only, so a left-padded row matches its unpadded self
            pos = (key_real.long().cumsum(1) - 1).clamp(min=0)[:, start:]  # (B, T)
            mask = attention_mask(T, start + T, key_real, idx.device)  # (B, 1, T, S)
        else:
            pos = torch.arange(start, start + T, device=idx.device)  # (T,)
            # SDPA needs no mask for plain causal attention, nor when one new token sees all
            mask = attention_mask(T, start + T, device=idx.device) if 1 < T < start + T else None
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, mask, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(self, idx, kv_cache=None, pad_mask=None, at=None):
        """Next-token logits (B, T, V) at every position. Losses live in nanollm/losses.py.

        at: (B, T) bool, to compute logits only where it is True: (N, V), in row-major order.
        The (C -> V) head is the widest matrix product of a small model; a loss that reads a few
        positions (DPO reads the answer's) need not pay for the others."""
        hidden = self.hidden(idx, kv_cache, pad_mask)  # (B, T, C)
        return self.lm_head(hidden if at is None else hidden[at])  # (B, T, V) or (N, V)

    def resize_vocab(self, vocab_size):
        """Grow the (tied) embedding for new special tokens; new rows start at the mean one."""
        old = self.transformer.wte.weight.data  # (V_old, C)
        if vocab_size <= old.size(0):
            return
        new = nn.Embedding(vocab_size, old.size(1)).to(old.device, old.dtype)
        new.weight.data[:old.size(0)] = old
        new.weight.data[old.size(0):] = old.mean(0)
        self.transformer.wte = new
        self.lm_head = nn.Linear(old.size(1), vocab_size, bias=False).to(old.device, old.dtype)
        self.lm_head.weight = self.transformer.wte.weight
        self.config.vocab_size = vocab_size

    def configure_optimizer(self, weight_decay, lr, betas=(0.9, 0.95), fused=False):
        """AdamW that decays matrices and embeddings only (optim.weight_decay_groups)."""
        groups = weight_decay_groups(self.parameters(), weight_decay)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
