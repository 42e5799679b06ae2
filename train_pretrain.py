"""Pretraining: teach a GPT to predict the next token of a corpus. Saves stage "pretrain".

    python train_pretrain.py                        # the built-in world, on CPU, a few minutes
    python train_pretrain.py --smoke                # seconds: a tiny world and a tiny model
    python train_pretrain.py --stop_at 300          # stop early (out/pretrain.unfinished.pt) ...
    python train_pretrain.py --resume               # ... and carry on from there, exactly
    python train_pretrain.py --overwrite            # train again over a finished out/pretrain.pt
    python train_pretrain.py --source my_text/ --data_dir data/mytext
    torchrun --nproc_per_node=2 train_pretrain.py   # data parallel (gloo on CPU, nccl on GPU)

GPT-2 124M on one GPU (prepare the text first on a machine that is online):
    python train_pretrain.py --source tinystories --tokenizer gpt2 --n_layer 12 --n_head 12 \
        --n_embd 768 --block_size 1024 --batch_size 16 --grad_accum 32 --lr 6e-4 --min_lr 6e-5 \
        --max_steps 5000 --warmup_steps 200 --dtype bfloat16 --compile

Where it simplifies compared with production pretraining:
1. Random windows are drawn from one token stream each step (sampling with replacement) rather
   than walking the data in epochs.
2. A distributed run draws every step's global batch from one shared generator and gives each
   process its own slice of it, so two processes see exactly what one process with twice the
   gradient accumulation sees (handy for testing); real runs stream disjoint shards.
"""

import json
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanollm.checkpoint import rng_state
from nanollm.config import check_flags, parse_config
from nanollm.corpus import prepare_corpus
from nanollm.data import get_batch, iterate_batches, read_shard
from nanollm.distributed import (all_reduce_mean, any_process, cleanup_distributed,
                                 init_distributed)
from nanollm.errors import ConfigError, report_user_errors
from nanollm.generate import generate
from nanollm.losses import cross_entropy, perplexity
from nanollm.model import GPT, GPTConfig
from nanollm.optim import check_finite, lr_at, optimizer_step, set_lr
from nanollm.plot import plot_pretrain
from nanollm.runs import StageRun, StopRequest
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.tokenizer import Tokenizer
from nanollm.world import World, world_corpus
from nanollm.world.evaluate import fact_completion_accuracy, question_continuation_share


@dataclass
class PretrainConfig:
    # data
    source: str = field(default="world", metadata={"help": "world | a text file or folder | "
                                                            "shakespeare | tinystories"})
    data_dir: str = field(default="", metadata={"help": "shards folder (default data/<source>)"})
    tokenizer: Literal["bpe", "gpt2"] = "bpe"  # bpe (trained on the source) | gpt2
    vocab_size: int = 2048
    world_chars: int = 3_000_000
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 256
    dropout: float = 0.0
    attention: Literal["sdpa", "manual"] = "sdpa"  # PyTorch's fused attention | written out
    # optimisation
    batch_size: int = 16  # rows per micro-batch, per process
    grad_accum: int = 1  # micro-batches per step
    # the length of the learning-rate schedule: long enough that the base model learns nearly
    # every fact, held-out ones included, which the later stages know from pretraining alone
    max_steps: int = 1200
    stop_at: int = field(default=0, metadata={"help": "stop (saved as unfinished) after this "
                                                      "step, to --resume later; 0 = max_steps"})
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # evaluation and output
    eval_every: int = 250
    eval_batches: int = 20
    log_every: int = 10
    out_dir: str = "out"
    overwrite: bool = False  # replace a finished (or unfinished) pretrain.pt in out_dir
    resume: bool = False  # continue the unfinished run in out_dir, exactly
    # runtime
    device: str = "auto"
    dtype: str = "bfloat16"  # autocast: bfloat16 | float32 | float16 (CUDA only)
    compile: bool = False
    seed: int = 0
    smoke: bool = False  # a tiny run that finishes in seconds


SMOKE = dict(world_chars=60_000, vocab_size=300, data_dir="data/world_smoke", n_layer=2, n_head=2,
             n_embd=32, block_size=64, batch_size=8, max_steps=40, warmup_steps=5, eval_every=20,
             eval_batches=4, log_every=5, lr=3e-3, dtype="float32")

# ---------------------------------------------------------------------------- config and data
report_user_errors()  # a bad flag, file or checkpoint is one line, not a traceback
cfg = parse_config(PretrainConfig, description=__doc__, smoke=SMOKE)  # --smoke: a run of seconds
check_flags(cfg, positive=("vocab_size", "world_chars", "n_layer", "n_head", "n_embd",
                           "block_size", "batch_size", "grad_accum", "max_steps", "lr",
                           "eval_every", "eval_batches", "log_every"),
            non_negative=("stop_at", "min_lr", "warmup_steps", "weight_decay", "grad_clip"),
            fractions=("dropout",),
            at_most={"stop_at": "max_steps"})
if cfg.n_embd % cfg.n_head:
    raise ConfigError(f"--n_embd {cfg.n_embd} must be divisible by --n_head {cfg.n_head} "
                      "(each head gets n_embd / n_head dimensions)")
if cfg.tokenizer == "bpe" and cfg.vocab_size < 256 + 1:
    raise ConfigError(f"--vocab_size {cfg.vocab_size}: a byte-level BPE vocabulary holds the "
                      "256 bytes and at least one merge; give 257 or more")
dist = init_distributed()
run = StageRun(cfg.out_dir, "pretrain", cfg.max_steps, cfg.overwrite, cfg.resume)
runtime = setup_runtime(cfg.device, cfg.dtype, cfg.compile, local_rank=dist.local_rank)
seed_everything(cfg.seed)
data_dir = cfg.data_dir or os.path.join("data", os.path.basename(cfg.source.rstrip("/")))
if dist.is_main:  # one process prepares; the others wait for it at the barrier
    prepare_corpus(cfg.source, data_dir, cfg.vocab_size, cfg.tokenizer, seed=cfg.seed,
                   block_size=cfg.block_size,
                   **world_corpus(cfg.source, cfg.world_chars, cfg.seed))
if dist.enabled:
    torch.distributed.barrier()
tokenizer = Tokenizer.load(os.path.join(data_dir, "tokenizer.tiktoken"))
train_data = read_shard(os.path.join(data_dir, "train.bin"), tokenizer.vocab_size)
val_data = read_shard(os.path.join(data_dir, "val.bin"), tokenizer.vocab_size)
with open(os.path.join(data_dir, "meta.json")) as f:
    sample_prompts = [tokenizer.encode(p) for p in json.load(f)["sample_prompts"]]
rows_per_step = cfg.batch_size * cfg.grad_accum * dist.world_size
tokens_per_step = rows_per_step * cfg.block_size

# ---------------------------------------------------------------------------- model, optimizer
model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=tokenizer.vocab_size,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                      dropout=cfg.dropout, attention=cfg.attention)).to(runtime.device)
optimizer = model.configure_optimizer(cfg.weight_decay, cfg.lr, fused=runtime.fused_adamw)
data_rng = torch.Generator().manual_seed(cfg.seed)  # the same on every process (see docstring)
state = run.resume_state(cfg, tokenizer, model, map_location=runtime.device)
start_step = run.restore(state, model, optimizer, data_rng) if state else 0  # --resume
train_model = runtime.maybe_compile(model)
if dist.enabled:
    train_model = DDP(train_model, device_ids=[dist.local_rank] if runtime.device_type == "cuda"
                      else None)
log = run.open_log(start_step, enabled=dist.is_main)
if dist.is_main:
    print(f"model: {model.num_params() / 1e6:.2f}M parameters; {tokens_per_step:,} tokens per "
          f"step; {cfg.max_steps} steps on {runtime.device} ({cfg.dtype})")


def evaluate(step):
    """Validation loss and perplexity, plus a few greedy samples to read."""
    ppl = perplexity(model, iterate_batches(val_data, cfg.batch_size, cfg.block_size,
                                            runtime.device, cfg.eval_batches),
                     autocast=runtime.autocast)
    samples = []
    for prompt in sample_prompts:
        out = generate(model, [prompt], max_new_tokens=24, temperature=0,
                       stop_ids=[tokenizer.eot])
        samples.append(tokenizer.decode(prompt + out.responses()[0]))
    tqdm.write(f"step {step}: val loss {torch.log(torch.tensor(ppl)):.3f}, "
               f"perplexity {ppl:.2f}")
    for s in samples:
        tqdm.write(f"    {s!r}")
    return ppl


def save_progress(steps_done):
    """Everything a resumed run needs, to pretrain.unfinished.pt (one process writes)."""
    if dist.is_main:
        return run.save_progress(model, tokenizer, cfg, steps_done, optimizer,
                                 data_rng=data_rng.get_state())


# ---------------------------------------------------------------------------- training loop
steps_done, ppl = start_step, None
progress = tqdm(range(start_step, cfg.max_steps), initial=start_step, total=cfg.max_steps,
                disable=not dist.is_main, desc="pretrain", unit="step")
t0 = time.time()
with StopRequest() as stop:
    for step in progress:
        set_lr(optimizer, lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr))
        x, y = get_batch(train_data, rows_per_step, cfg.block_size, data_rng)  # (rows, T)
        # this process's share of the global batch, cut into micro-batches
        x = x.view(dist.world_size, cfg.grad_accum, cfg.batch_size, -1)[dist.rank]
        y = y.view(dist.world_size, cfg.grad_accum, cfg.batch_size, -1)[dist.rank]
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            if dist.enabled:  # average gradients across processes only on the last micro-batch
                train_model.require_backward_grad_sync = micro == cfg.grad_accum - 1
            xb = x[micro].to(runtime.device, non_blocking=True)
            yb = y[micro].to(runtime.device, non_blocking=True)
            with runtime.autocast():
                loss = cross_entropy(train_model(xb), yb) / cfg.grad_accum
            runtime.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        loss_value = check_finite(all_reduce_mean(loss_sum), step, run.unfinished_path)
        grad_norm = optimizer_step(train_model, optimizer, runtime.scaler, cfg.grad_clip)
        if dist.is_main and (step % cfg.log_every == 0 or step == cfg.max_steps - 1):
            runtime.synchronize()
            tok_s = tokens_per_step * (step + 1 - start_step) / (time.time() - t0)
            progress.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tok_s:,.0f}")
            log.log(step=step, loss=loss_value, lr=optimizer.param_groups[0]["lr"],
                    grad_norm=grad_norm, tokens_per_s=tok_s)
        steps_done = step + 1
        stopping = any_process(stop.requested) or steps_done == cfg.stop_at
        if steps_done % cfg.eval_every == 0 or steps_done == cfg.max_steps:
            if dist.is_main:
                ppl = evaluate(steps_done)
                log.log(step=steps_done, val_loss=float(torch.log(torch.tensor(ppl))),
                        val_ppl=ppl)
            if not stopping and steps_done < cfg.max_steps:
                save_progress(steps_done)  # what a killed run can --resume from
        if stopping:
            break
progress.close()
if steps_done < cfg.max_steps:
    saved = save_progress(steps_done)
    cleanup_distributed()
    if dist.is_main:
        run.stop(saved, steps_done, stop.requested)
    raise SystemExit(130 if stop.requested else 0)
save_progress(steps_done)  # every step kept, whatever happens during the evaluation
if ppl is None and dist.is_main:  # resumed after its last step: evaluate that step here
    ppl = evaluate(steps_done)

# ---------------------------------------------------------------------------- what it knows
# The world knows every answer, so the base model can be examined exactly: does it complete
# "The capital of Peru is" for taught and held-out entities alike (both were in its corpus), and
# does a bare question make it answer, or write more questions as the quiz pages it read do?
if dist.is_main and cfg.source == "world":
    world = World(seed=cfg.seed)  # the world the corpus was made from (world_corpus)
    knows = {f"fact_accuracy_{split}": fact_completion_accuracy(model, tokenizer, world, split)
             for split in ("taught", "held_out")}
    knows["question_continuation_share"] = question_continuation_share(model, tokenizer, world)
    print("fact completion: {fact_accuracy_taught:.1%} taught, {fact_accuracy_held_out:.1%} "
          "held-out; a bare question is continued by another question {question_continuation_share"
          ":.0%} of the time".format(**knows))
else:
    knows = {}
if dist.is_main:
    run.save_finished(model, tokenizer, cfg, optimizer, data_rng=data_rng.get_state(),
                      rng=rng_state(), metrics={"val_ppl": ppl, **knows,
                                                "train_seconds": time.time() - t0})

# ---------------------------------------------------------------------------- plots
if dist.is_main:
    log_path = os.path.join(cfg.out_dir, "pretrain_log.jsonl")
    plot_pretrain(log_path, os.path.join(cfg.out_dir, "pretrain_curves.png"))
    print(f"done in {time.time() - t0:.0f}s: {cfg.out_dir}/pretrain.pt, {log_path}, "
          f"{cfg.out_dir}/pretrain_curves.png")
cleanup_distributed()
