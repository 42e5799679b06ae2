"""LoRA: fine-tune a GPT by training a small low-rank update beside each frozen weight matrix.

LoRA (Hu et al. 2021) observes that the change fine-tuning makes to a weight matrix has a low
"intrinsic rank". So it freezes the pretrained W0 (out x in) and learns the change as a product
of two thin matrices, B (out x r) times A (r x in), with r far smaller than in and out:

    h = W0 x + (alpha / r) B A x

B starts at zero, so training starts exactly at the base model. Only A and B get gradients, and
AdamW keeps two moments per trained parameter, so the optimizer state shrinks with them.

    add_lora(model, rank=8, alpha=16)                 # in place; everything else is frozen
    add_lora(model, 8, 16, train_tokens=tokenizer.special_ids.values())  # or: + chat tokens
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-3)
    ...train...
    save_adapters("out", "sft", model, cfg)           # out/sft.lora.pt, the adapters alone
    merge_lora(model)                                 # W = W0 + (alpha / r) B A: a plain GPT again
    with adapters_disabled(model): ...                # the base model, without a second copy
    reference = FrozenBase(model)                     # the same, as a model DPO or PPO can call

train_sft.py runs it with --lora_rank 8; with --quantize_base 4 the frozen base is stored in 4
bits (nanollm/quantize.py): QLoRA (Dettmers et al. 2023).

The token table is frozen too, and it is also the language head (tied). A chat format's special
tokens (<|assistant|>, <|end|>) are rows of it that pretraining never had to say, and adapters
on the blocks learn only slowly to say <|end|>: answers can come out right and run on (lesson
10). `train_tokens` trains those rows as well, a few hundred numbers (TokenRows; PEFT's
trainable_token_indices).

Where it simplifies:
1. Adapters go on the Linear layers of the blocks only, chosen by name ("c_attn", "c_proj",
   "c_fc"); the embeddings and the tied language head get no adapter (a few token rows may train).
2. merge_lora folds the adapters in for good; there is no unmerge (keep the adapters file, or a
   copy of the model, to go back).
3. One rank and one alpha for every adapted layer; no per-layer ranks (AdaLoRA) or rescaled
   alpha (rsLoRA).
"""

import dataclasses
import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanollm.checkpoint import load_checkpoint, save_checkpoint
from nanollm.errors import CheckpointError, ConfigError

# The Linear layers of a GPT block, by their own names: "c_proj" names both the attention's and
# the MLP's output projection.
BLOCK_LINEARS = ("c_attn", "c_proj", "c_fc")
# The default: the attention's query, key and value projection, as the LoRA paper adapts the
# attention weights only (and PEFT's GPT-2 default); the MLP is one flag away.
DEFAULT_TARGETS = ("c_attn",)
ADAMW_FLOATS_PER_PARAMETER = 2  # AdamW keeps two moments per trained parameter
BYTES_PER_FLOAT = 4  # float32


def lora_delta(x, A, B, scale):
    """LoRA's update of a layer's output (Hu et al. 2021, eq. 3): (alpha / r) B A x.

    x (..., in), A (r, in), B (out, r), scale = alpha / r -> (..., out). Two thin products: the
    (out x in) matrix B A is never formed, which is where the saving in compute lies."""
    return scale * F.linear(F.linear(x, A), B)  # (..., r) -> (..., out)


def merged_weight(W, A, B, scale):
    """The single matrix that does what the frozen W plus its adapter do: W + (alpha / r) B A."""
    return W + scale * (B @ A)  # (out, in)


class LoRALinear(nn.Module):
    """A frozen Linear layer (`base`, its weight and bias) plus a trainable low-rank update.

    `base` is an nn.Linear or anything with in_features, out_features and a `weight` (a
    QuantizedLinear from nanollm/quantize.py: QLoRA). Set `enabled` to False to get the base
    layer's output alone."""

    def __init__(self, base, rank, alpha, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ConfigError(f"LoRA rank {rank}: expected 1 or more")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        weight = base.weight  # (out, in), for its device and dtype
        # A like a Linear layer's weight (kaiming-uniform, as the reference implementation does;
        # the paper says random Gaussian), B zero: B A = 0, so training starts at the base model.
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device,
                                               dtype=weight.dtype))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device,
                                               dtype=weight.dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)  # on the adapter's input only; the base sees all of x
        self.enabled = True

    def forward(self, x):  # (..., in) -> (..., out)
        out = self.base(x)
        if not self.enabled:
            return out
        return out + lora_delta(self.dropout(x), self.lora_A, self.lora_B, self.scale)


class TokenRows(nn.Module):
    """The frozen token table (an nn.Embedding) with the rows of a few tokens trained: it reads as
    the table with rows `ids` replaced by the trained `rows`. Set `enabled` to False to read the
    frozen table alone."""

    def __init__(self, embedding, ids):
        super().__init__()
        self.base = embedding.requires_grad_(False)
        weight = embedding.weight  # (V, C)
        self.register_buffer("ids", torch.tensor(sorted(set(ids)), dtype=torch.long,
                                                 device=weight.device))  # (k,)
        self.rows = nn.Parameter(weight.detach()[self.ids].clone())  # (k, C), starts as the base
        self.enabled = True

    @property
    def weight(self):  # (V, C)
        if not self.enabled:
            return self.base.weight
        return self.base.weight.index_copy(0, self.ids, self.rows)

    def forward(self, idx):  # (B, T) -> (B, T, C)
        return F.embedding(idx, self.weight)


class TiedHead(nn.Module):
    """The language head of a GPT whose token table is a TokenRows: logits = h E^T with the
    trained rows, as the tied head reads the table it shares. The table is held outside the
    module tree (it is the embedding's), so its rows are one parameter, saved once."""

    def __init__(self, tokens):
        super().__init__()
        self.__dict__["tokens"] = tokens  # not a submodule

    @property
    def weight(self):  # (V, C)
        return self.tokens.weight

    def forward(self, x):  # (..., C) -> (..., V)
        return F.linear(x, self.tokens.weight)


def lora_layers(model):
    """(name, LoRALinear) of every adapted layer, in the model's order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def token_rows(model):
    """The model's TokenRows (its token table with trained rows), or None."""
    wte = model.transformer.wte
    return wte if isinstance(wte, TokenRows) else None


def add_lora(model, rank, alpha, targets=DEFAULT_TARGETS, dropout=0.0, train_tokens=()):
    """Wrap the GPT's block layers named in `targets` in LoRALinear, in place, and freeze every
    other parameter (embeddings, LayerNorms, biases, the head), except the token table's rows of
    the token ids in `train_tokens` (TokenRows, read by the tied head too). Returns the model."""
    unknown = set(targets) - set(BLOCK_LINEARS)
    if unknown or not targets:
        raise ConfigError(f"LoRA targets {sorted(unknown) or '(none)'}: choose among "
                          f"{', '.join(BLOCK_LINEARS)}")
    if lora_layers(model) or token_rows(model) is not None:
        raise ConfigError("the model has LoRA adapters already; merge them (merge_lora) first")
    model.requires_grad_(False)
    chosen = [(f"transformer.h.{i}.{name}", layer)
              for i, block in enumerate(model.transformer.h)
              for name, layer in block.named_modules() if name.split(".")[-1] in targets]
    for name, layer in chosen:
        model.set_submodule(name, LoRALinear(layer, rank, alpha, dropout))
    train_tokens = list(train_tokens)
    if train_tokens:
        if not isinstance(model.transformer.wte, nn.Embedding) or \
                model.lm_head.weight is not model.transformer.wte.weight:
            raise ConfigError("train_tokens needs a GPT whose head is tied to a float token table")
        if not all(0 <= i < model.config.vocab_size for i in train_tokens):
            raise ConfigError(f"train_tokens {train_tokens}: ids must lie in [0, "
                              f"{model.config.vocab_size})")
        model.transformer.wte = TokenRows(model.transformer.wte, train_tokens)
        model.lm_head = TiedHead(model.transformer.wte)
    return model


def lora_parameters(model):
    """The adapters' parameters, A and B of every adapted layer, and the trained token rows if
    any: what the optimizer gets."""
    rows = token_rows(model)
    return ([p for _, m in lora_layers(model) for p in (m.lora_A, m.lora_B)]
            + ([rows.rows] if rows is not None else []))


def count_trainable(model):
    """(trained, total) parameters, a tied matrix counted once. Parameters only: count before
    quantizing a base, whose weights then become buffers."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def optimizer_state_bytes(n_trained):
    """What AdamW holds beside the weights: two float32 moments per trained parameter."""
    return n_trained * ADAMW_FLOATS_PER_PARAMETER * BYTES_PER_FLOAT


def lora_summary(model):
    """One line: the share of parameters trained and the optimizer memory saved, against
    training every parameter."""
    trained, total = count_trainable(model)
    # full fine-tuning would train every parameter of the base: all but the adapters
    lora_bytes, full_bytes = optimizer_state_bytes(trained), optimizer_state_bytes(total - trained)
    return (f"LoRA: training {trained:,} of {total:,} parameters ({trained / total:.2%}); AdamW "
            f"state {lora_bytes / 1e6:.2f} MB instead of {full_bytes / 1e6:.2f} MB (saves "
            f"{(full_bytes - lora_bytes) / 1e6:.2f} MB)")


@contextmanager
def adapters_disabled(model):
    """Within it the model computes as its base (DPO's reference), without a second copy."""
    layers = [m for _, m in lora_layers(model)]
    if token_rows(model) is not None:
        layers.append(token_rows(model))
    before = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, enabled in zip(layers, before):
            m.enabled = enabled


class FrozenBase(nn.Module):
    """The base of an adapted model, read through the model itself: every call runs it with the
    adapters off, in eval mode and without gradients. DPO's and PPO's reference is the model they
    start from; with LoRA that is the trained model minus its adapters, so no second copy of the
    weights is needed. The model is held outside the module tree, so eval() and train() on the
    view (generation calls both) leave the trained model's own mode alone."""

    def __init__(self, model):
        super().__init__()
        self.__dict__["model"] = model  # not a submodule
        self.config = model.config

    def parameters(self, recurse=True):  # the device and dtype of the weights, for generation
        return self.model.parameters(recurse)

    def new_kv_cache(self, *args, **kwargs):
        return self.model.new_kv_cache(*args, **kwargs)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        training = self.model.training
        self.model.eval()
        try:
            with adapters_disabled(self.model):
                return self.model(*args, **kwargs)
        finally:
            self.model.train(training)


@torch.no_grad()
def merge_lora(model):
    """Fold every adapter into its base weight, in place: each LoRALinear becomes a plain
    nn.Linear holding W0 + (alpha / r) B A (a quantized base is dequantized first), so the model
    is an ordinary GPT whose state_dict loads like any stage's; trained token rows are written
    into the token table, the head tied to it again. Returns the model."""
    rows = token_rows(model)
    if rows is not None:
        table = rows.base  # nn.Embedding, (V, C)
        table.weight[rows.ids] = rows.rows
        model.transformer.wte = table
        model.lm_head = nn.Linear(model.config.n_embd, model.config.vocab_size, bias=False,
                                  device=table.weight.device, dtype=table.weight.dtype)
        model.lm_head.weight = table.weight  # tied again, as GPT builds it
    for name, layer in lora_layers(model):
        base = layer.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=layer.lora_A.device, dtype=layer.lora_A.dtype)
        merged.weight.copy_(merged_weight(base.weight, layer.lora_A, layer.lora_B, layer.scale))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        model.set_submodule(name, merged)
    return model


# ----------------------------------------------------------------------------------------------
# The adapters alone on disk: a few kilobytes instead of the whole model


def lora_state_dict(model):
    """{"transformer.h.0.attn.c_attn.lora_A": (r, in), ...}: the adapters (and the trained token
    rows, "transformer.wte.rows") and nothing else."""
    state = {f"{name}.{key}": getattr(m, key).detach()
             for name, m in lora_layers(model) for key in ("lora_A", "lora_B")}
    rows = token_rows(model)
    if rows is not None:
        state["transformer.wte.rows"] = rows.rows.detach()
    return state


@torch.no_grad()
def load_lora_state_dict(model, state):
    """Copy adapters saved by lora_state_dict into a model with the same adapted layers."""
    params = dict(model.named_parameters())
    expected = lora_state_dict(model)
    if set(state) != set(expected):
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        raise CheckpointError(f"the adapters do not fit the model: missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]} (other targets?)")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(f"adapter {key} has shape {tuple(tensor.shape)}, the model's "
                                  f"{tuple(expected[key].shape)}: trained with another rank?")
        params[key].copy_(tensor)


def lora_settings(model):
    """{"rank", "alpha", "targets", "dropout", "train_tokens"} of the model's adapters, to
    rebuild them."""
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("the model has no LoRA adapters")
    first = layers[0][1]
    targets = sorted({name.split(".")[-1] for name, _ in layers})
    rows = token_rows(model)
    return dict(rank=first.rank, alpha=first.alpha, targets=targets, dropout=first.dropout.p,
                train_tokens=[] if rows is None else rows.ids.tolist())


def save_adapters(out_dir, stage, model, config):
    """Write {out_dir}/{stage}.lora.pt atomically: the adapters, their settings and the run's
    dataclass `config`. Returns the path."""
    state = dict(stage=stage, adapters=lora_state_dict(model), lora=lora_settings(model),
                 train_config=dataclasses.asdict(config))
    return save_checkpoint(out_dir, f"{stage}.lora", state)


def load_adapters(out_dir, stage, model):
    """Put the adapters of {out_dir}/{stage}.lora.pt (loaded with weights_only=True) on a model
    of the base they were trained on, adding the layers first if it has none. Returns the
    file's dict."""
    state = load_checkpoint(out_dir, f"{stage}.lora")
    if not lora_layers(model):
        add_lora(model, **state["lora"])
    load_lora_state_dict(model, state["adapters"])
    return state
