"""Weight-only quantization: store a trained GPT's weights in 8, 4, 3 or 2 bits, compute in float.

A weight matrix W (out x in) is cut into groups of numbers that share one float scale; each
number is kept as a small integer q, and read back as q * scale (symmetric "absmax" scaling):

    scale = max |w| over the group / qmax,   q = round(w / scale),   w ~ q * scale

    8 bits: one group per output channel (a row), q in [-127, 127], stored as int8
    4 bits: groups of `group_size` along the input dimension, q in [-7, 7], two per byte
    3, 2 bits: the 4-bit code with q in [-3, 3] and [-1, 1], to see where quantization breaks

    python -m nanollm.quantize --stage sft --bits 4 --group_size 64        # writes out/sft.q4.pt
    python -m nanollm.quantize --stage sft --bits 8 --data_dir data/world  # + perplexity change
    python -m nanollm.sample --stage sft.q4 --prompt "The capital of France is"

The matrices of the blocks become QuantizedLinear layers and both embedding tables become
QuantizedEmbedding layers; the language head stays tied to the token embedding, so the quantized
token table serves both (GPT-2 ties them too). Why the embeddings as well: in a small model they
are a large share of the weights (the default model's token table, 2054 x 256, is a seventh of
them), and left in float32 the token table alone would be about half of a 4-bit file. LayerNorms
and biases stay in float: they are few, and every output passes through them.

Why symmetric [-7, 7] rather than [-8, 7]: the group's largest magnitude maps exactly onto +-7 so
nothing is clipped, zero stays exactly zero, and the scale alone defines the grid; the price is
one of the 16 codes unused.

Where it simplifies compared with production (bitsandbytes, GPTQ, AWQ, llama.cpp):
1. Plain round-to-nearest: no calibration data, no error compensation (GPTQ), no rescaling of
   salient channels (AWQ), no NF4 grid (QLoRA's code tuned to normally distributed weights).
2. Scales are float32, not float16 or themselves quantized (QLoRA's double quantization).
3. 3- and 2-bit codes are stored in 4-bit nibbles, so their files are as big as a 4-bit one;
   a real 3-bit format packs eight values into three bytes.
4. The weight is dequantized to float on every forward; fast kernels multiply the packed
   integers directly.
"""

import dataclasses
import io
import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanollm.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from nanollm.config import parse_config
from nanollm.data import iterate_batches, read_shard
from nanollm.errors import ConfigError, report_user_errors
from nanollm.losses import perplexity
from nanollm.stages import load_stage, trunk_from_state, unwrap
from nanollm.tokenizer import Tokenizer

BITS = (8, 4, 3, 2)
NIBBLE_OFFSET = 8  # a 4-bit code q in [-8, 7] is stored as the unsigned q + 8 in [0, 15]
EVAL_BATCH_SIZE = 8  # windows per batch of the command line's perplexity


def quantize_int8(w):
    """Symmetric absmax per output channel: w (O, I) -> q int8 (O, I), scale (O, 1).
    q = round(w / scale) with scale = max |row| / 127, so w ~ q * scale, off by <= scale / 2
    (LLM.int8()'s vector-wise quantization, Dettmers et al. 2022, without its float outliers)."""
    return quantize_groups(w, 8, w.size(1))


def quantize_groups(w, bits, group_size):
    """Symmetric absmax in groups of `group_size` along the input dimension:
    w (O, I) -> q int8 (O, I) in [-qmax, qmax], scale float32 (O, G), G = I / group_size.

        scale_g = max_{i in g} |w_i| / qmax,   q_i = round(w_i / scale_g),   qmax = 2^(bits-1) - 1

    A scale per group, not per row, keeps one large weight from coarsening the grid of all the
    others in its row (the block-wise scales of GPTQ and QLoRA, 64 or 128 weights a block)."""
    O, I = w.shape
    if group_size < 1 or I % group_size:
        raise ConfigError(f"group size {group_size} does not divide the input size {I}: "
                          "choose a divisor (e.g. 32 or 64)")
    qmax = 2 ** (bits - 1) - 1  # 127, 7, 3, 1
    groups = w.float().reshape(O, I // group_size, group_size)  # (O, G, S)
    scale = groups.abs().amax(dim=-1, keepdim=True) / qmax  # (O, G, 1)
    scale = scale.clamp(min=torch.finfo(torch.float32).tiny)  # an all-zero group: q = 0
    q = torch.round(groups / scale).clamp(-qmax, qmax).to(torch.int8)  # (O, G, S)
    return q.reshape(O, I), scale.squeeze(-1)


def quantize_int4(w, group_size):
    """4-bit groups: w (O, I) -> q int8 (O, I) in [-7, 7], scale (O, I / group_size)."""
    return quantize_groups(w, 4, group_size)


def dequantize(q, scale):
    """q (..., I) times the scale of its group, scale (..., G) -> float32 (..., I). A per-channel
    int8 scale is the case G = 1."""
    G = scale.size(-1)
    groups = q.float().unflatten(-1, (G, q.size(-1) // G))  # (..., G, S)
    return (groups * scale.unsqueeze(-1)).flatten(-2)  # (..., I)


def pack_int4(q):
    """Two 4-bit codes per byte: q int8 (..., I) in [-8, 7], I even -> uint8 (..., I / 2); the
    even columns go to the low nibble, the odd ones to the high nibble."""
    u = (q + NIBBLE_OFFSET).to(torch.uint8)  # [0, 15]
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed):
    """The exact inverse of pack_int4: uint8 (..., I / 2) -> int8 (..., I)."""
    low, high = packed & 0x0F, packed >> 4
    u = torch.stack([low, high], dim=-1).flatten(-2)  # (..., I): low, high, low, high, ...
    return u.to(torch.int8) - NIBBLE_OFFSET


class QuantizedMatrix(nn.Module):
    """A weight matrix (O, I) kept as integer codes and float scales (two buffers), read back
    whole (a Linear layer) or by rows (an embedding lookup)."""

    def __init__(self, weight, bits, group_size):
        super().__init__()
        if bits not in BITS:
            raise ConfigError(f"--bits {bits}: choose one of {', '.join(map(str, BITS))}")
        self.bits, self.shape = bits, tuple(weight.shape)
        if bits == 8:
            q, scale = quantize_int8(weight.detach())
        else:
            q, scale = quantize_groups(weight.detach(), bits, group_size)
            q = pack_int4(q)  # (O, I / 2)
        self.register_buffer("codes", q)
        self.register_buffer("scales", scale)  # (O, G)

    def dequantize(self, rows=None):
        """float32 (O, I), or only the rows picked by an index tensor: (..., I)."""
        codes = self.codes if rows is None else self.codes[rows]
        scales = self.scales if rows is None else self.scales[rows]
        return dequantize(codes if self.bits == 8 else unpack_int4(codes), scales)


class QuantizedLinear(nn.Module):
    """y = x W^T + b with W stored quantized and dequantized on the fly; the bias stays float.
    Nothing here trains: codes, scales and bias are buffers."""

    def __init__(self, matrix, bias=None):
        super().__init__()
        self.matrix = matrix
        self.out_features, self.in_features = matrix.shape
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @property
    def weight(self):  # (O, I) float32
        return self.matrix.dequantize()

    def forward(self, x):  # (..., I) -> (..., O)
        return F.linear(x, self.weight.to(x.dtype), self.bias)


class QuantizedEmbedding(nn.Module):
    """A quantized embedding table (rows of C numbers), read back row by row."""

    def __init__(self, matrix):
        super().__init__()
        self.matrix = matrix

    @property
    def weight(self):  # (N, C) float32
        return self.matrix.dequantize()

    def forward(self, idx):  # (B, T) -> (B, T, C)
        return self.matrix.dequantize(idx)


def quantize_model(model, bits, group_size=64, embeddings=True):
    """Replace the GPT's block Linear layers (those inside LoRA layers too: QLoRA) with
    QuantizedLinear, in place, and with `embeddings` both embedding tables with
    QuantizedEmbedding, the tied head reading the token table. Returns the model."""
    linears = [(f"transformer.h.{i}.{name}", m) for i, block in enumerate(model.transformer.h)
               for name, m in block.named_modules() if isinstance(m, nn.Linear)]
    for name, m in linears:
        model.set_submodule(name, QuantizedLinear(QuantizedMatrix(m.weight, bits, group_size),
                                                  m.bias))
    if embeddings:
        tokens = QuantizedMatrix(model.transformer.wte.weight, bits, group_size)
        positions = QuantizedMatrix(model.transformer.wpe.weight, bits, group_size)
        model.transformer.wte = QuantizedEmbedding(tokens)
        model.transformer.wpe = QuantizedEmbedding(positions)
        model.lm_head = QuantizedLinear(tokens)  # tied: one set of codes, two uses
    return model


@torch.no_grad()
def dequantize_model(model):
    """The inverse, in place: every quantized layer becomes a float nn.Linear or nn.Embedding
    holding the dequantized weight, the head tied to the token table again. Returns the model."""
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantizedLinear) and name != "lm_head":
            linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                               device=m.matrix.scales.device)
            linear.weight.copy_(m.weight)
            if m.bias is not None:
                linear.bias.copy_(m.bias)
            model.set_submodule(name, linear)
        elif isinstance(m, QuantizedEmbedding):
            model.set_submodule(name, nn.Embedding.from_pretrained(m.weight, freeze=False))
    if isinstance(model.lm_head, QuantizedLinear):  # a head left in float is tied already
        model.lm_head = nn.Linear(model.config.n_embd, model.config.vocab_size, bias=False,
                                  device=model.transformer.wte.weight.device)
        model.lm_head.weight = model.transformer.wte.weight  # tied again, as GPT builds it
    return model


# ----------------------------------------------------------------------------------------------
# Quantized stages on disk: {stage}.q{bits}.pt


def is_quantized_name(name):
    """True for names like "sft.q4": what save_quantized writes."""
    suffix = os.path.basename(name).rpartition(".")[2]
    return suffix[:1] == "q" and suffix[1:].isdigit()


def weights_state(stage, model, tokenizer, **extra):
    """The dict of a file of weights: the model's state_dict, config and tokenizer, and no
    optimizer state (a stage file may also hold one, twice the model's size)."""
    model = unwrap(model)
    return dict(stage=stage, model=model.state_dict(),
                model_config=dataclasses.asdict(model.config), tokenizer=tokenizer.to_dict(),
                **extra)


def save_quantized(out_dir, stage, model, tokenizer, bits, group_size):
    """Write {out_dir}/{stage}.q{bits}.pt atomically: the quantized model (quantize_model) with
    its config, tokenizer and quantization settings. Returns the path."""
    state = weights_state(stage, model, tokenizer,
                          quantization=dict(bits=bits, group_size=group_size))
    return save_checkpoint(out_dir, f"{stage}.q{bits}", state)


def load_quantized(out_dir, name, device="cpu"):
    """(model, tokenizer, state) of a file save_quantized wrote ("sft.q4"), loaded with
    weights_only=True: a GPT rebuilt with quantized layers, in eval mode."""
    state = load_checkpoint(out_dir, name)
    # the layers come from quantizing a fresh GPT of the saved config; the saved codes and
    # scales then replace its own
    model = quantize_model(trunk_from_state(state), **state["quantization"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), Tokenizer.from_dict(state["tokenizer"]), state


def saved_bytes(state):
    """How many bytes torch.save writes for `state`: a file's size, without the file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


# ----------------------------------------------------------------------------------------------
# python -m nanollm.quantize --stage sft --bits 4 --group_size 64 [--data_dir data/world]


@dataclass
class QuantizeConfig:
    stage: str = "sft"
    out_dir: str = "out"
    bits: int = 4
    group_size: int = field(default=64, metadata={"help": "numbers per scale (bits < 8)"})
    data_dir: str = field(default="", metadata={"help": "pretraining shards: perplexity of "
                                                        "val.bin before and after"})
    eval_windows: int = 16  # held-out windows for the perplexity, a cheap estimate


def held_out_perplexity(model, data_dir, windows):
    """Perplexity on the first `windows` windows of {data_dir}/val.bin."""
    data = read_shard(os.path.join(data_dir, "val.bin"), model.config.vocab_size)
    batches = iterate_batches(data, EVAL_BATCH_SIZE, model.config.block_size,
                              max_batches=math.ceil(windows / EVAL_BATCH_SIZE))
    return perplexity(model, batches)


def main(argv=None):
    cfg = parse_config(QuantizeConfig, argv, description=__doc__)
    model, tokenizer, _ = load_stage(cfg.out_dir, cfg.stage)
    fp32_bytes = saved_bytes(weights_state(cfg.stage, model, tokenizer))
    base_ppl = held_out_perplexity(model, cfg.data_dir, cfg.eval_windows) if cfg.data_dir else 0
    quantize_model(model, cfg.bits, cfg.group_size)
    path = save_quantized(cfg.out_dir, cfg.stage, model, tokenizer, cfg.bits, cfg.group_size)
    stage_bytes = os.path.getsize(checkpoint_path(cfg.out_dir, cfg.stage))
    q_bytes = os.path.getsize(path)
    print(f"{checkpoint_path(cfg.out_dir, cfg.stage)}: {stage_bytes / 1e6:.2f} MB on disk "
          "(with whatever else the stage keeps, such as the optimizer state)")
    print(f"float32 weights alone: {fp32_bytes / 1e6:.2f} MB")
    print(f"{path}: {q_bytes / 1e6:.2f} MB, {fp32_bytes / q_bytes:.1f}x smaller than float32")
    if cfg.data_dir:
        ppl = held_out_perplexity(model, cfg.data_dir, cfg.eval_windows)
        print(f"perplexity on {cfg.eval_windows} held-out windows of {cfg.data_dir}/val.bin: "
              f"{base_ppl:.3f} in float32, {ppl:.3f} in {cfg.bits} bits "
              f"({ppl / base_ppl - 1:+.2%})")


if __name__ == "__main__":
    report_user_errors()  # a missing stage or a bad flag is one line, not a traceback
    main()
