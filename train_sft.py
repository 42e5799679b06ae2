"""Supervised fine-tuning: teach the pretrained model to answer in chat format. Saves stage "sft".

    python train_sft.py                             # the built-in world's chats, from "pretrain"
    python train_sft.py --smoke                     # seconds (after train_pretrain.py --smoke)
    python train_sft.py --chats my_chats.jsonl      # messages or Alpaca JSONL
    python train_sft.py --init_from gpt2:path/to/gpt2 --chats my_chats.jsonl   # real GPT-2
    python train_sft.py --lora_rank 8 --lr 1e-3     # LoRA: train low-rank adapters only
    python train_sft.py --lora_rank 8 --lr 1e-3 --quantize_base 4   # QLoRA: on a 4-bit base

Only the assistant's tokens are learned (see nanollm/chat.py): the model is taught what to say,
not what users say. Batches are padded, not packed (see nanollm/sft.py for why).

The lesson it measures: SFT teaches the format and surfaces what pretraining put in the weights.
The chats mention only *taught* entities, yet afterwards the model answers questions about
*held-out* entities, whose facts it read only during pretraining.

With --lora_rank the base stays frozen and only small adapters train (nanollm/lora.py); with
--quantize_base 4 as well, the frozen base is held in 4 bits (nanollm/quantize.py). Either way
sft.pt holds the adapters merged into the (dequantized) base, so it loads like any stage, and
sft.lora.pt holds the adapters alone.

Where it simplifies: rows are drawn at random with replacement instead of in epochs.
"""

import os
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from nanollm.checkpoint import rng_state
from nanollm.config import check_flags, parse_config
from nanollm.errors import ConfigError, report_user_errors
from nanollm.formats import held_out_count, load_chats_with_lines
from nanollm.gpt2 import load_hf_gpt2
from nanollm.lora import add_lora, lora_summary, merge_lora, save_adapters
from nanollm.losses import cross_entropy
from nanollm.optim import check_finite, lr_at, optimizer_step, set_lr
from nanollm.plot import plot_sft
from nanollm.quantize import BITS, dequantize_model, quantize_model
from nanollm.runs import StageRun, StopRequest
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.sft import require_examples, sft_batch, sft_examples
from nanollm.stages import load_stage
from nanollm.tokenizer import Tokenizer
from nanollm.world import World
from nanollm.world.evaluate import answer_questions, evaluate_answers


@dataclass
class SFTConfig:
    init_from: str = field(default="pretrain", metadata={
        "help": "a stage in --out_dir (pretrain) or gpt2:<local Hugging Face folder>"})
    chats: str = field(default="", metadata={"help": "JSONL chats; default: the world's"})
    n_chats: int = 8000  # world chats to generate (taught entities only)
    val_chats: int = 200  # held-out chats for the validation loss
    world_seed: int = 0
    batch_size: int = 32
    max_steps: int = 300
    lr: float = 1e-4  # low: higher rates overwrite what pretraining stored
    min_lr: float = 1e-5
    warmup_steps: int = 30
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dropout: float = 0.0
    lora_rank: int = field(default=0, metadata={"help": "0 = full fine-tuning; r > 0 trains "
                                                        "rank-r adapters only (LoRA)"})
    lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
    lora_targets: str = "c_attn"  # block layers that get adapters, among c_attn, c_proj, c_fc
    quantize_base: int = field(default=0, metadata={"help": "0 = a float base; 4 = QLoRA: the "
                                                            "frozen base in 4 bits"})
    quantize_group_size: int = 64  # weights per scale of the quantized base
    eval_every: int = 100
    log_every: int = 10
    out_dir: str = "out"
    overwrite: bool = False  # replace a finished (or unfinished) sft.pt in out_dir
    resume: bool = False  # continue the unfinished run in out_dir, exactly
    stop_at: int = 0  # stop after this step, saved as unfinished, to --resume later; 0 = max_steps
    device: str = "auto"
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16 (CUDA)
    compile: bool = False
    seed: int = 0
    smoke: bool = False


SMOKE = dict(n_chats=300, val_chats=20, batch_size=8, max_steps=30, warmup_steps=3, eval_every=15,
             log_every=5, lr=2e-3, dtype="float32", quantize_group_size=32)

# ---------------------------------------------------------------------------- config and model
report_user_errors()  # a bad flag, file or checkpoint is one line, not a traceback
cfg = parse_config(SFTConfig, description=__doc__, smoke=SMOKE)  # --smoke: a run of seconds
check_flags(cfg, positive=("n_chats", "val_chats", "batch_size", "max_steps", "lr", "eval_every",
                           "log_every", "lora_alpha", "quantize_group_size"),
            non_negative=("min_lr", "warmup_steps", "weight_decay", "grad_clip", "stop_at",
                          "lora_rank"),
            fractions=("dropout",),
            at_most={"stop_at": "max_steps"})
if cfg.quantize_base and not cfg.lora_rank:
    raise ConfigError(f"--quantize_base {cfg.quantize_base} freezes a quantized base and trains "
                      "adapters on it (QLoRA): give --lora_rank too, e.g. --lora_rank 8")
if cfg.quantize_base not in (0, *BITS):
    raise ConfigError(f"--quantize_base {cfg.quantize_base}: choose 0 (none) or one of {BITS}")
run = StageRun(cfg.out_dir, "sft", cfg.max_steps, cfg.overwrite, cfg.resume)
runtime = setup_runtime(cfg.device, cfg.dtype, cfg.compile)
seed_everything(cfg.seed)
if cfg.init_from.startswith("gpt2:"):
    model = load_hf_gpt2(cfg.init_from.removeprefix("gpt2:"), dropout=cfg.dropout)
    tokenizer = Tokenizer.gpt2()
    model.resize_vocab(tokenizer.vocab_size)  # room for the chat's special tokens
else:
    model, tokenizer, _ = load_stage(cfg.out_dir, cfg.init_from, dropout=cfg.dropout)
model.to(runtime.device).train()
if cfg.lora_rank:  # the base frozen, adapters beside it; the optimizer sees the adapters alone
    add_lora(model, cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets.split(",")))
    print(lora_summary(model))
if cfg.quantize_base:  # QLoRA: the frozen base in 4 bits (embeddings and head kept in float)
    quantize_model(model, cfg.quantize_base, cfg.quantize_group_size, embeddings=False)
# AdamW over the parameters that require gradients: with LoRA, the adapters only
optimizer = model.configure_optimizer(cfg.weight_decay, cfg.lr, fused=runtime.fused_adamw)

# ---------------------------------------------------------------------------- data
world = World(seed=cfg.world_seed)
if cfg.chats:
    chats, lines = load_chats_with_lines(cfg.chats)  # lines: where each chat is in the file
    n_val = held_out_count(len(chats), cfg.chats, "chats")  # the first 5% for validation
    val_chats, val_lines, train_chats, train_lines = (chats[:n_val], lines[:n_val],
                                                      chats[n_val:], lines[n_val:])
else:
    train_chats = [c["messages"] for c in world.sft_conversations(cfg.n_chats, "taught",
                                                                  seed=cfg.seed)]
    val_chats = [c["messages"] for c in world.sft_conversations(cfg.val_chats, "held_out",
                                                                seed=cfg.seed + 1)]
    train_lines = val_lines = None
block_size = model.config.block_size
train_examples, report = sft_examples(tokenizer, train_chats, block_size, train_lines)
val_examples, val_report = sft_examples(tokenizer, val_chats, block_size, val_lines)
print(f"train: {report}\nheld out: {val_report}")
# none left after skipping: a sentence now, rather than an error (or a loss of 0) later
of_file = f" of {cfg.chats}" if cfg.chats else ""
require_examples(train_examples, report, "training chats" + of_file)
require_examples(val_examples, val_report, "held-out chats" + of_file)
data_rng = torch.Generator().manual_seed(cfg.seed)

state = run.resume_state(cfg, tokenizer, model, map_location=runtime.device)
start_step = run.restore(state, model, optimizer, data_rng) if state else 0  # --resume
train_model = runtime.maybe_compile(model)
log = run.open_log(start_step)
sample_questions = world.questions("held_out", n=3, seed=cfg.seed)


@torch.no_grad()
def validation_loss():
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(val_examples), cfg.batch_size):
        x, y = sft_batch(val_examples[i:i + cfg.batch_size], tokenizer.pad, runtime.device)
        with runtime.autocast():
            n = (y != -100).sum().item()
            total += cross_entropy(model(x), y).item() * n
            count += n
    model.train()
    return total / count  # count > 0: require_examples checked the held-out chats


def evaluate(step):
    val_loss = validation_loss()
    answers = answer_questions(model, tokenizer, sample_questions)
    tqdm.write(f"step {step}: val loss (held-out chats) {val_loss:.3f}")
    for q, a in zip(sample_questions, answers):
        tqdm.write(f"    {q.text!r} -> {a!r}")
    return val_loss


def save_progress(steps_done):
    """Everything a resumed run needs, to sft.unfinished.pt."""
    return run.save_progress(model, tokenizer, cfg, steps_done, optimizer,
                             data_rng=data_rng.get_state())


# ---------------------------------------------------------------------------- training loop
steps_done = start_step
progress = tqdm(range(start_step, cfg.max_steps), initial=start_step, total=cfg.max_steps,
                desc="sft", unit="step")
t0 = time.time()
with StopRequest() as stop:
    for step in progress:
        set_lr(optimizer, lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr))
        rows = torch.randint(len(train_examples), (cfg.batch_size,), generator=data_rng)
        x, y = sft_batch([train_examples[i] for i in rows.tolist()], tokenizer.pad,
                         runtime.device)  # (B, T) each
        with runtime.autocast():
            loss = cross_entropy(train_model(x), y)  # mean over assistant tokens only
        runtime.scaler.scale(loss).backward()
        loss_value = check_finite(loss, step, run.unfinished_path)
        grad_norm = optimizer_step(train_model, optimizer, runtime.scaler, cfg.grad_clip)
        if step % cfg.log_every == 0:
            progress.set_postfix(loss=f"{loss_value:.3f}")
            log.log(step=step, loss=loss_value, lr=optimizer.param_groups[0]["lr"],
                    grad_norm=grad_norm)
        steps_done = step + 1
        stopping = stop.requested or steps_done == cfg.stop_at
        if steps_done % cfg.eval_every == 0 or steps_done == cfg.max_steps:
            log.log(step=steps_done, val_loss=evaluate(steps_done))
            if not stopping and steps_done < cfg.max_steps:
                save_progress(steps_done)  # what a killed run can --resume from
        if stopping:
            break
progress.close()
train_time = time.time() - t0
if steps_done < cfg.max_steps:
    run.stop(save_progress(steps_done), steps_done, stop.requested)
save_progress(steps_done)  # every step kept, whatever happens during the evaluation

# ---------------------------------------------------------------------------- evaluation
# Greedy answers to one question per fact: taught entities (seen in SFT) and held-out entities
# (seen only in pretraining). The base model is asked in the same chat format.
print(f"SFT took {train_time:.0f}s. Evaluating answers (greedy) ...")
results = {"sft": {s: evaluate_answers(model, tokenizer, world, s) for s in ("taught", "held_out")}}
if not cfg.init_from.startswith("gpt2:"):
    base, _, _ = load_stage(cfg.out_dir, cfg.init_from, runtime.device)
    results["base"] = {s: evaluate_answers(base, tokenizer, world, s)
                       for s in ("taught", "held_out")}
print(f"{'model':6} {'split':9} {'accuracy':>8} {'words':>6} {'flattery':>8} {'gold':>6}")
for name, by_split in results.items():
    for split, m in by_split.items():
        print(f"{name:6} {split:9} {m['accuracy']:8.1%} {m['mean_words']:6.1f} "
              f"{m['flattery_rate']:8.1%} {m['gold_reward']:6.2f}")
if cfg.lora_rank:  # the adapters alone to sft.lora.pt; merged, sft.pt loads like any stage
    save_adapters(cfg.out_dir, "sft", model, cfg)
    if cfg.quantize_base:
        dequantize_model(model)  # the base back in float, with its 4-bit rounding
    merge_lora(model)
run.save_finished(model, tokenizer, cfg, optimizer, data_rng=data_rng.get_state(),
                  rng=rng_state(), metrics=results, train_seconds=train_time)
log.log(step=cfg.max_steps, **{f"{n}_{s}_accuracy": m["accuracy"]
                                for n, b in results.items() for s, m in b.items()})
plot_sft(os.path.join(cfg.out_dir, "sft_log.jsonl"), os.path.join(cfg.out_dir, "sft_curves.png"))
print(f"saved {cfg.out_dir}/sft.pt and {cfg.out_dir}/sft_curves.png")
