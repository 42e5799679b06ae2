"""Small pieces every training script shares: config flags, seeding, LR schedule, logs, devices.

    cfg = parse_config(TrainConfig)                  # dataclass fields become --flags
    seed_everything(cfg.seed)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.compile)
    model = rt.maybe_compile(model.to(rt.device))
    with rt.autocast():
        loss = ...
    rt.scaler.scale(loss).backward()                 # a no-op wrapper unless float16 on CUDA
    lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr)
    log.log(step=step, loss=loss.item(), lr=lr)      # one JSON line per call

The speed plumbing (autocast, gradient scaling, TF32, compile, fused AdamW) lives in one object,
Runtime, so that the training loops stay readable.

Simplifications:
1. Flags cover int, float, str, bool, Literal choices and Optional of those; no lists or nesting.
2. Device choice is CUDA if available, else CPU (no Apple MPS path).
"""

import argparse
import dataclasses
import json
import math
import os
import random
import types
import typing
from contextlib import nullcontext

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------
# Configuration: a dataclass becomes command-line flags

_TRUE_WORDS = ("true", "yes", "1", "on")
_FALSE_WORDS = ("false", "no", "0", "off")
_NONE_WORDS = ("none", "null")


def _parse_bool(text):
    word = text.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _unwrap_optional(annotation):
    """Optional[X] / X | None -> (X, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _value_parser(base, optional):
    """The argparse `type=` callable for one field: text -> value (or None for 'none')."""
    parse = _parse_bool if base is bool else base

    def parse_value(text):
        if optional and text.lower() in _NONE_WORDS:
            return None
        return parse(text)

    # argparse names the type in its errors ("invalid int value: 'x'").
    parse_value.__name__ = base.__name__
    return parse_value


def _field_default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _add_field(parser, field, annotation):
    base, optional = _unwrap_optional(annotation)
    flag = f"--{field.name}"
    default = _field_default(field)
    help_text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats with %
    kwargs = {"dest": field.name}
    if default is dataclasses.MISSING:
        kwargs.update(required=True, help=f"{help_text} (required)".strip())
    else:
        kwargs.update(default=default, help=f"{help_text} (default: %(default)s)".strip())

    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
        parser.add_argument(flag, type=type(choices[0]), choices=choices, **kwargs)
    elif base is bool:
        # --flag, --flag true, --flag false, --no-flag all work.
        parser.add_argument(flag, type=_value_parser(bool, optional), nargs="?", const=True,
                            metavar="{true,false}", **kwargs)
        # SUPPRESS: this second flag must not supply a default of its own for the same field.
        parser.add_argument(f"--no-{field.name}", dest=field.name, action="store_false",
                            default=argparse.SUPPRESS, help=f"same as {flag} false")
    elif base in (int, float, str):
        parser.add_argument(flag, type=_value_parser(base, optional), metavar=base.__name__.upper(),
                            **kwargs)
    else:
        raise TypeError(f"parse_config: field '{field.name}' has type {annotation}; "
                        "only int, float, str, bool, Literal and Optional of those become flags")


def parse_config(cls, argv=None, description=None):
    """Build an instance of dataclass `cls` from command-line flags (`--name value`).

    argv defaults to sys.argv[1:]. Help text comes from field(metadata={"help": ...}). An unknown
    flag or a bad value stops with argparse's usage message and exit status 2.
    """
    # Raw description: a script's docstring keeps its line breaks and examples in --help.
    parser = argparse.ArgumentParser(description=description or cls.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # get_type_hints resolves string annotations (from `from __future__ import annotations`).
    hints = typing.get_type_hints(cls, include_extras=False)
    for field in dataclasses.fields(cls):
        if field.init:
            _add_field(parser, field, hints[field.name])
    args = parser.parse_args(argv)
    return cls(**vars(args))


def config_to_dict(cfg):
    """A dataclass config as a plain dict (for checkpoints and logs)."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------------------------
# Seeding and the learning-rate schedule


def seed_everything(seed):
    """Seed Python, NumPy and torch (CPU and every GPU) random number generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step, max_lr, warmup_steps, total_steps, min_lr):
    """Learning rate at `step` (0-based): linear warmup, cosine decay, then constant min_lr.

        warmup   (step < W):      lr = max_lr * (step + 1) / W
        decay    (W <= step < S): lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2,
                                  p = (step - W) / (S - W)
        after    (step >= S):     lr = min_lr

    with W = warmup_steps and S = total_steps. Warmup keeps the first updates small while Adam's
    moment estimates are still noise; the (step + 1) makes the very first update non-zero.
    Cosine decay lowers the LR smoothly so the end of training settles into a minimum.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------
# JSONL logs: one JSON object per line, easy to plot and to read back


def _json_value(value):
    """json.dumps fallback: one-element tensors and NumPy scalars become Python numbers."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1:
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to a JSON log")


class JsonlLogger:
    """Append one JSON line per .log() call to `path`.

    The file starts empty unless append=True (resuming a run). enabled=False makes every call a
    no-op, for the non-main processes of a distributed run. Each line is written and flushed at
    once, so a crashed run keeps its log up to the crash.
    """

    def __init__(self, path, enabled=True, append=False):
        self.path = path
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if not append:
                open(path, "w").close()

    def log(self, record=None, **fields):
        """log(step=3, loss=2.1) or log({"step": 3, "loss": 2.1})."""
        if not self.enabled:
            return
        line = json.dumps({**(record or {}), **fields}, default=_json_value)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()


def read_jsonl(path):
    """All records of a JSONL file, skipping blank lines."""
    records = []
    with open(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {line_number}: invalid JSON ({err.msg})") from None
    return records


# ----------------------------------------------------------------------------------------------
# Device, precision and compilation: the speed plumbing in one place

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class Runtime:
    """Where and how the model runs. Build it with setup_runtime()."""

    device: str  # e.g. "cpu", "cuda:0"
    dtype: torch.dtype  # autocast dtype; float32 means no autocast
    compile: bool = False

    def __post_init__(self):
        # Gradient scaling exists for float16, whose small range underflows small gradients;
        # bfloat16 has float32's range and needs none. Disabled, the scaler passes values through.
        use_scaler = self.dtype == torch.float16 and self.device_type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=use_scaler)

    @property
    def device_type(self):
        """"cpu" or "cuda" (what torch.autocast and GradScaler want)."""
        return torch.device(self.device).type

    @property
    def fused_adamw(self):
        """Whether to ask AdamW for its fused kernel (one kernel for all parameters, CUDA only)."""
        return self.device_type == "cuda"

    def autocast(self):
        """Context manager: matrix products in the low-precision dtype (weights stay fp32)."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def maybe_compile(self, model):
        """torch.compile(model) when compile=True (slow first step, faster after on GPU)."""
        return torch.compile(model) if self.compile else model

    def synchronize(self):
        """Wait for queued GPU work, so that wall-clock timings measure the work itself."""
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.device)


def _resolve_device(device, local_rank):
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' was requested but CUDA is not available "
                           "(torch.cuda.is_available() is False); use --device cpu or auto")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device '{device}': use auto, cpu or cuda")
    if device == "cuda":
        device = f"cuda:{local_rank}"  # one GPU per process under torchrun
    return device


def setup_runtime(device="auto", dtype="float32", compile=False, local_rank=0):
    """Pick the device and precision, check they work together, turn on TF32 on CUDA.

    device: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
    dtype: "float32", "bfloat16" or "float16" (the autocast dtype).
    local_rank: the GPU index used for a bare "cuda" or "auto" (from init_distributed()).
    """
    device = _resolve_device(device, local_rank)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}': choose one of {sorted(DTYPES)}")
    is_cuda = torch.device(device).type == "cuda"
    if dtype == "float16" and not is_cuda:
        raise ValueError("float16 autocast needs CUDA (it relies on gradient scaling there); "
                         "use --dtype bfloat16 on CPU")
    if dtype == "bfloat16" and is_cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bfloat16; use --dtype float16")
    if is_cuda:
        torch.cuda.set_device(device)
        # TF32 runs float32 matrix products on tensor cores with a 10-bit mantissa: several
        # times faster, and precise enough for training.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device=device, dtype=DTYPES[dtype], compile=compile)
