"""Speed benchmark: training and generation throughput, memory and MFU, as a table and JSON.

    python -m nanollm.bench                     # CPU: a few minutes
    python -m nanollm.bench --sizes tiny --quick
    python -m nanollm.bench --sizes 6x384 --loss_steps 200   # and bf16's cost in loss
    python -m nanollm.bench --device cuda --sizes gpt2 --compile_modes eager,compiled

Training throughput counts tokens of (x, y) per second through forward, backward and the AdamW
step. MFU (model FLOPs utilisation) = achieved FLOP/s / the device's peak, with the usual
estimate of 6 N + 12 L T C FLOPs per token (N parameters, L layers, T context, C width). On a
CPU the peak is measured at the start (a 2048 x 2048 matrix product in the row's dtype) and
printed, since hosts of one machine kind differ.
"""

import copy
import functools
import json
import os
import resource
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from nanollm.config import parse_config
from nanollm.runtime import setup_runtime
from nanollm.data import get_batch, read_shard
from nanollm.generate import generate
from nanollm.logprobs import sequence_logprobs
from nanollm.losses import cross_entropy
from nanollm.model import GPT, GPTConfig
from nanollm.ppo import Critic, ppo_clip_loss, state_values, value_loss
from nanollm.reward import RewardModel
from nanollm.rollout import rollout

SIZES = {  # name: (model config, batch size)
    "tiny": (dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=2054), 32),
    "6x384": (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=2054), 12),
    "gpt2": (dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304), 8),
}
PEAK_FLOPS = {  # dense matrix-product peaks, FLOP/s, from the vendors' data sheets
    ("NVIDIA H100", torch.bfloat16): 989e12,  # SXM, dense
    ("NVIDIA H200", torch.bfloat16): 989e12,
}


@dataclass
class BenchConfig:
    device: str = "auto"
    sizes: str = field(default="tiny,6x384", metadata={"help": "comma list of " + ",".join(SIZES)})
    dtypes: str = "float32,bfloat16"
    compile_modes: str = "eager"  # eager,compiled
    train_steps: int = 6
    gen_tokens: int = 256
    gen_batches: str = "1,64"
    quick: bool = False  # fewer steps and tokens, to check the benchmark itself
    loss_steps: int = field(default=0, metadata={"help": "> 0: also train 6x384 this many steps "
                            "on the world's text in every dtype and compare the losses"})
    data: str = "data/world/train.bin"  # token shard for --loss_steps (train_pretrain.py makes it)
    json_out: str = "out/bench.json"


def flops_per_token(model):
    c = model.config
    return 6 * model.num_params(non_embedding=False) + 12 * c.n_layer * c.block_size * c.n_embd


def peak_flops(device, dtype):
    """The peak MFU is measured against: a GPU's data-sheet figure, or a CPU's measured one."""
    if device.startswith("cpu"):
        return cpu_matmul_peak(dtype)
    name = torch.cuda.get_device_name(device)
    return next((v for (d, t), v in PEAK_FLOPS.items() if name.startswith(d) and t == dtype), None)


@functools.cache
def cpu_matmul_peak(dtype, n=2048, repeats=5):
    """FLOP/s of a large square matrix product in dtype on this CPU, with torch's threads.
    CPUs differ too much for a table: hosts of one machine kind differ widely."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * n ** 3 / (time.perf_counter() - t0)


def train_throughput(model, runtime, batch_size, steps):
    """Tokens per second of full training steps (after two warm-up steps)."""
    T = model.config.block_size
    opt = model.configure_optimizer(0.1, 1e-4, fused=runtime.fused_adamw)
    step_model = runtime.maybe_compile(model)
    x = torch.randint(model.config.vocab_size, (batch_size, T), device=runtime.device)
    y = torch.randint(model.config.vocab_size, (batch_size, T), device=runtime.device)

    def step():
        with runtime.autocast():
            loss = cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    runtime.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    runtime.synchronize()
    return steps * batch_size * T / (time.perf_counter() - t0)


def generation_throughput(model, runtime, batch_size, new_tokens, use_cache):
    """Generated tokens per second (all rows together), sampling with temperature 1."""
    prompts = [[1, 2, 3, 4]] * batch_size
    with runtime.autocast():
        generate(model, prompts, 4, use_cache=use_cache)  # warm-up
        runtime.synchronize()
        t0 = time.perf_counter()
        out = generate(model, prompts, new_tokens, use_cache=use_cache)
        runtime.synchronize()
    return int(out.response_mask.sum()) / (time.perf_counter() - t0)


def ppo_iteration_seconds(model_args, runtime, batch_size=64, new_tokens=48, minibatch=16,
                          epochs=4):
    """Seconds for one PPO iteration as train_rlhf.py runs it: a rollout (the policy samples,
    four models score) and `epochs` passes of policy and critic updates over it. Random weights
    and prompts: the time depends on the shapes, not on what the models know."""
    torch.manual_seed(0)
    policy = GPT(GPTConfig(**model_args)).to(runtime.device)
    reward_model = RewardModel(GPT(GPTConfig(**model_args))).to(runtime.device).eval()
    reference, critic = copy.deepcopy(policy).eval(), Critic.from_reward_model(reward_model)
    opts = [m.configure_optimizer(0.0, 1e-6) for m in (policy, critic)]
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8]] * batch_size
    runtime.synchronize()
    t0 = time.perf_counter()
    batch = rollout(policy, reference, critic, reward_model, prompts, new_tokens, stop_ids=(),
                    pad_id=0, autocast=runtime.autocast)
    mask = batch.response_mask
    for _ in range(epochs):
        for start in range(0, batch_size, minibatch):
            rows = slice(start, start + minibatch)
            with runtime.autocast():
                logprobs = sequence_logprobs(policy, batch.ids[rows], batch.pad_mask[rows])
                values = state_values(critic, batch.ids[rows], batch.pad_mask[rows])
            loss = ppo_clip_loss(logprobs, batch.logprobs[rows], torch.randn_like(logprobs),
                                 mask[rows], 0.2)[0]
            loss = loss + value_loss(values, batch.values[rows], torch.zeros_like(values),
                                     mask[rows], 0.2)
            loss.backward()
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=True)
    runtime.synchronize()
    return time.perf_counter() - t0


def loss_after_training(runtime, data, steps, seed=0, size="6x384"):
    """Mean training loss over the last tenth of `steps` AdamW steps of the model `size` (of
    SIZES) on real text. The same initial weights and the same batches in every dtype, so the
    losses differ only by the arithmetic: this is how much bfloat16 autocast costs in quality."""
    model_args, batch_size = SIZES[size]
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**model_args)).to(runtime.device)
    opt = model.configure_optimizer(0.1, 1e-3, fused=runtime.fused_adamw)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc=f"loss check ({runtime.dtype})", unit="step"):
        x, y = get_batch(data, batch_size, model.config.block_size, generator, runtime.device)
        with runtime.autocast():
            loss = cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10):]
    return sum(tail) / len(tail)


def peak_memory_mb(runtime):
    if runtime.device_type == "cuda":
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # whole process, KiB -> MiB


def state_memory_mb(modules, optimizers=()):
    """MiB held by the models' parameters and gradients and the optimizers' state, each tensor
    counted once (a frozen reference that shares the policy's weights adds nothing): the part of
    the memory that depends on how many models an algorithm keeps, whatever the device."""
    tensors = {}
    for module in modules:
        for p in module.parameters():
            tensors[p.data_ptr()] = p
            if p.grad is not None:
                tensors[p.grad.data_ptr()] = p.grad
    for optimizer in optimizers:
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    tensors[value.data_ptr()] = value
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__)
    steps = 2 if cfg.quick else cfg.train_steps
    gen_tokens = 32 if cfg.quick else cfg.gen_tokens
    rows = []
    for size in cfg.sizes.split(","):
        model_args, batch_size = SIZES[size]
        for dtype in cfg.dtypes.split(","):
            for mode in cfg.compile_modes.split(","):
                runtime = setup_runtime(cfg.device, dtype, compile=mode == "compiled")
                torch.manual_seed(0)
                model = GPT(GPTConfig(**model_args)).to(runtime.device)
                tok_s = train_throughput(model, runtime, batch_size, steps)
                peak = peak_flops(runtime.device, runtime.dtype)
                mfu = tok_s * flops_per_token(model) / peak if peak else None
                rows.append(dict(what="train", size=size, dtype=dtype, mode=mode,
                                 batch=batch_size, tokens_per_s=tok_s, mfu=mfu, peak_flops=peak,
                                 peak_mem_mb=peak_memory_mb(runtime)))
                print(rows[-1], flush=True)
                if mode != "eager":
                    continue
                model.eval()
                for batch in map(int, cfg.gen_batches.split(",")):
                    for use_cache in (True, False):
                        if not use_cache and batch > 1:
                            continue  # the uncached baseline at batch 1 is enough to compare
                        n = min(gen_tokens, model.config.block_size - 4)
                        rows.append(dict(what="generate", size=size, dtype=dtype,
                                         mode="kv-cache" if use_cache else "no cache",
                                         batch=batch, tokens_per_s=generation_throughput(
                                             model, runtime, batch, n, use_cache)))
                        print(rows[-1], flush=True)
                if size != "gpt2":  # one PPO iteration as train_rlhf.py runs it (batch 64)
                    seconds = ppo_iteration_seconds(model_args, runtime,
                                                    new_tokens=16 if cfg.quick else 48)
                    rows.append(dict(what="ppo iteration", size=size, dtype=dtype, mode="eager",
                                     batch=64, seconds=seconds))
                    print(rows[-1], flush=True)
    if cfg.loss_steps:
        if not os.path.exists(cfg.data):
            raise SystemExit(f"--data {cfg.data}: no such token shard; train_pretrain.py makes "
                             "the world's (data/world/train.bin), or name another")
        data = read_shard(cfg.data, SIZES["6x384"][0]["vocab_size"])
        losses = {dtype: loss_after_training(setup_runtime(cfg.device, dtype), data,
                                             cfg.loss_steps) for dtype in cfg.dtypes.split(",")}
        reference = losses[cfg.dtypes.split(",")[0]]
        for dtype, loss in losses.items():
            rows.append(dict(what=f"loss after {cfg.loss_steps} steps", size="6x384",
                             dtype=dtype, mode="eager", batch=SIZES["6x384"][1], loss=loss,
                             vs_first_dtype=loss / reference - 1))
            print(rows[-1], flush=True)
    print(format_rows(rows))
    os.makedirs(os.path.dirname(cfg.json_out) or ".", exist_ok=True)
    with open(cfg.json_out, "w") as f:
        json.dump({"device": runtime.device, "torch": torch.__version__, "rows": rows}, f,
                  indent=2)
    print(f"wrote {cfg.json_out}")


def format_rows(rows):
    lines = ["| what | size | dtype | mode | batch | tokens/s | seconds (loss) "
             "| MFU of peak FLOP/s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{r['mfu']:.0%} of {r['peak_flops'] / 1e9:,.0f} G" if r.get("mfu") else ""
        tok_s = f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else ""
        seconds = f"{r['seconds']:.1f}" if "seconds" in r else ""
        mem = f"{r['peak_mem_mb']:,.0f}" if "peak_mem_mb" in r else ""
        if "loss" in r:  # the loss check: loss, and its difference from the first dtype's
            seconds = f"loss {r['loss']:.4f} ({r['vs_first_dtype']:+.2%})"
        lines.append(f"| {r['what']} | {r['size']} | {r['dtype']} | {r['mode']} | {r['batch']} "
                     f"| {tok_s} | {seconds} | {mfu} | {mem} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
