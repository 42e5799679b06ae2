"""Where and how a model runs: device, precision, compilation and seeding, in one place.

    seed_everything(cfg.seed)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.compile)
    model = rt.maybe_compile(model.to(rt.device))
    with rt.autocast():
        loss = ...
    rt.scaler.scale(loss).backward()                 # a no-op wrapper unless float16 on CUDA

The speed plumbing (autocast, gradient scaling, TF32, compile, fused AdamW) lives in one object,
Runtime, so that the training loops stay readable.

Simplifications:
1. Device choice is CUDA if available, else CPU (no Apple MPS path).
"""

import dataclasses
import random
from contextlib import nullcontext

import numpy as np
import torch

from nanollm.errors import ConfigError


def seed_everything(seed):
    """Seed Python, NumPy and torch (CPU and every GPU) random number generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)



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
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") \
            from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: unsupported; use auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r}: CUDA is not available on this machine "
                          "(torch.cuda.is_available() is False); use --device cpu or auto")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device!r}: this machine has "
                          f"{torch.cuda.device_count()} GPU(s)")
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
        raise ConfigError(f"--dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    is_cuda = torch.device(device).type == "cuda"
    if dtype == "float16" and not is_cuda:
        raise ConfigError("--dtype float16 needs CUDA (it relies on gradient scaling there); "
                          "use --dtype bfloat16 or float32 on CPU")
    if dtype == "bfloat16" and is_cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("--dtype bfloat16: this GPU does not support it; use --dtype float16")
    if is_cuda:
        torch.cuda.set_device(device)
        # TF32 runs float32 matrix products on tensor cores with a 10-bit mantissa: several
        # times faster, and precise enough for training.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device=device, dtype=DTYPES[dtype], compile=compile)
