"""Knowledge distillation: train a small student GPT to imitate a larger teacher GPT.

A teacher's next-token distribution says more than the one token that came next: that " Lima"
is likely, and " Quito" less so but far likelier than " banana". Hinton et al. (2015) train the
student on these soft targets, both distributions softened by a temperature T > 1 so the small
probabilities carry weight:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross-entropy(student, true next token)

Sequence-level distillation (Kim & Rush 2016) instead lets the teacher answer prompts and
fine-tunes the student on those answers, as SFT would on human ones.

    python -m nanollm.distill --teacher sft --mode soft      # soft targets on pretraining text
    python -m nanollm.distill --teacher sft --mode text      # the same text, hard targets
    python -m nanollm.distill --teacher sft --mode sequence --prompts questions.txt
    python -m nanollm.distill --teacher sft --mode soft --smoke   # seconds

--mode text trains the same student on the same windows without the teacher: the baseline that
tells how much the soft targets add. The student is saved as a stage ("student" by default), so
nanollm.sample and nanollm.chat load it like any other. --prompts holds one question per line,
or chats in JSONL (the messages before the first assistant turn are the prompt).

Where it simplifies:
1. The student is a new, smaller GPT with the teacher's tokenizer and context (or a saved stage,
   --init_from); no layers are copied from the teacher to start it.
2. The teacher runs at every step; production runs often store its top-k log-probabilities once.
3. Sequence-level distillation takes the teacher's greedy answer, not a beam search's.

Shapes: B batch, T time, V vocabulary; in the code the temperature is spelled out.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from nanollm.chat import decode_content, render_prompt
from nanollm.config import check_flags, parse_config
from nanollm.data import get_batch, iterate_batches, read_shard
from nanollm.errors import ConfigError, DataError, report_user_errors
from nanollm.formats import load_chats
from nanollm.generate import generate
from nanollm.losses import IGNORE_INDEX, cross_entropy, perplexity
from nanollm.model import GPT, GPTConfig
from nanollm.optim import check_finite, lr_at, optimizer_step, set_lr
from nanollm.runs import StageRun
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.sft import require_examples, sft_batch, sft_examples
from nanollm.stages import load_stage
from nanollm.tokenizer import Tokenizer


def distillation_loss(student_logits, teacher_logits, temperature, mask=None):
    """Hinton et al. (2015): T^2 * KL(p_T || q_T), averaged over tokens, where
    p_T = softmax(teacher_logits / T) and q_T = softmax(student_logits / T).

    logits (B, T, V) each (or (N, V)); mask (B, T) bool: the tokens that count (all if None).
    The gradient of the softened KL shrinks as 1 / T^2; the T^2 factor keeps its size
    comparable to the cross-entropy's when the two are mixed. The teacher is a fixed target:
    no gradient flows into it."""
    teacher_logp = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, T, V)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(dim=-1)  # (B, T)
    if mask is None:
        mask = torch.ones_like(kl, dtype=torch.bool)
    kl_mean = torch.where(mask, kl, 0.0).sum() / mask.sum().clamp(min=1)
    return temperature ** 2 * kl_mean


def mixed_distillation_loss(student_logits, teacher_logits, targets, temperature, alpha):
    """alpha * distillation_loss + (1 - alpha) * cross-entropy on the true next tokens: Hinton's
    weighted average of the soft and the hard objective. Tokens whose target is IGNORE_INDEX
    count in neither. targets (B, T)."""
    counted = targets != IGNORE_INDEX  # (B, T)
    soft = distillation_loss(student_logits, teacher_logits, temperature, counted)
    hard = cross_entropy(student_logits, targets)
    return alpha * soft + (1 - alpha) * hard


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts, max_new_tokens, batch_size=32):
    """The model's greedy answer to each prompt (a list of messages), as chats: the prompt's
    messages and then the answer. With a teacher: the data of sequence-level distillation."""
    chats = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i:i + batch_size]
        out = generate(model, [render_prompt(tokenizer, m) for m in batch], max_new_tokens,
                       temperature=0, stop_ids=[tokenizer.end, tokenizer.eot],
                       pad_id=tokenizer.pad)
        for messages, answer in zip(batch, out.responses()):
            text = decode_content(tokenizer, answer)
            chats.append(messages + [{"role": "assistant", "content": text}])
    return chats


def prompt_of(messages):
    """The messages before the first assistant turn: what the teacher is asked."""
    roles = [m["role"] for m in messages]
    return messages[:roles.index("assistant")] if "assistant" in roles else messages


def read_prompts(path):
    """Prompts as message lists: one question per line of a text file, or from a chats JSONL
    file (prompt_of each chat)."""
    if not path or not os.path.exists(path):
        raise ConfigError(f"--prompts {path!r}: --mode sequence needs a file of prompts (one "
                          "question per line, or chats in JSONL)")
    if path.endswith(".jsonl"):
        prompts = [prompt_of(messages) for messages in load_chats(path)]
    else:
        with open(path, encoding="utf-8") as f:
            prompts = [[{"role": "user", "content": line.strip()}] for line in f if line.strip()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise DataError(f"{path} holds no prompt")
    return prompts


def train_student(student, next_batch, runtime, steps, lr, teacher=None, temperature=1.0,
                  alpha=0.0, log=None, log_every=10, warmup_steps=0, weight_decay=0.1,
                  grad_clip=1.0):
    """AdamW for `steps` batches (x, y) = next_batch(), both (B, T): cross-entropy on y, mixed
    with the teacher's soft targets when alpha > 0; the learning rate warms up, then decays to
    a tenth (optim.lr_at). Returns the loss of every step."""
    optimizer = student.configure_optimizer(weight_decay, lr, fused=runtime.fused_adamw)
    student.train()
    losses = []
    for step in range(steps):
        set_lr(optimizer, lr_at(step, lr, warmup_steps, steps, lr / 10))
        x, y = next_batch()
        with runtime.autocast():
            logits = student(x)  # (B, T, V)
            if alpha > 0:
                with torch.no_grad():
                    teacher_logits = teacher(x)  # (B, T, V)
                loss = mixed_distillation_loss(logits, teacher_logits, y, temperature, alpha)
            else:
                loss = cross_entropy(logits, y)
        runtime.scaler.scale(loss).backward()
        losses.append(check_finite(loss, step, "the student's stage file"))
        optimizer_step(student, optimizer, runtime.scaler, grad_clip)
        if log is not None and step % log_every == 0:
            log.log(step=step, loss=losses[-1], lr=optimizer.param_groups[0]["lr"])
            print(f"step {step}: loss {losses[-1]:.3f}")
    return losses


# ----------------------------------------------------------------------------------------------
# python -m nanollm.distill --teacher sft --mode soft|text|sequence


@dataclass
class DistillConfig:
    teacher: str = "sft"  # a stage in --out_dir
    mode: Literal["soft", "text", "sequence"] = "soft"
    student: str = "student"  # the stage name the student is saved as
    init_from: str = field(default="", metadata={"help": "a stage to start the student from; "
                                                         "default: a new GPT of the sizes below"})
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    data_dir: str = field(default="data/world", metadata={"help": "pretraining shards (soft, "
                                                                  "text)"})
    prompts: str = field(default="", metadata={"help": "sequence: questions or chats JSONL"})
    max_new_tokens: int = 48  # the teacher's longest answer in sequence mode
    temperature: float = 2.0
    alpha: float = 0.9  # weight of the soft targets in soft mode (Hinton weighted them high)
    steps: int = 200
    batch_size: int = 16
    block_size: int = 0  # window length in soft and text modes; 0 = the teacher's context
    lr: float = 2e-3
    warmup_steps: int = 20
    eval_windows: int = 32  # held-out windows of val.bin for the perplexities
    log_every: int = 10
    out_dir: str = "out"
    overwrite: bool = False  # replace a saved student stage
    device: str = "auto"
    dtype: str = "bfloat16"
    seed: int = 0
    smoke: bool = False


SMOKE = dict(n_layer=1, n_head=2, n_embd=32, steps=20, batch_size=4, block_size=32,
             warmup_steps=2, eval_windows=4, log_every=2, max_new_tokens=12, dtype="float32")


def pretraining_shards(data_dir, tokenizer, teacher_name):
    """train.bin and val.bin of data_dir, checked to be tokenized as the teacher reads."""
    tokenizer_file = os.path.join(data_dir, "tokenizer.tiktoken")
    if not os.path.exists(tokenizer_file):
        raise DataError(f"--data_dir {data_dir} holds no pretraining shards (no "
                        f"{tokenizer_file}); give the folder the teacher was pretrained on")
    if Tokenizer.load(tokenizer_file).to_dict() != tokenizer.to_dict():
        raise DataError(f"{data_dir} was tokenized with another tokenizer than the teacher "
                        f"'{teacher_name}' reads; give the folder it was pretrained on")
    return tuple(read_shard(os.path.join(data_dir, f"{split}.bin"), tokenizer.vocab_size)
                 for split in ("train", "val"))


def main(argv=None):
    cfg = parse_config(DistillConfig, argv, description=__doc__, smoke=SMOKE)
    check_flags(cfg, positive=("n_layer", "n_head", "n_embd", "max_new_tokens", "temperature",
                               "steps", "batch_size", "lr", "eval_windows", "log_every"),
                non_negative=("block_size", "warmup_steps", "alpha"))
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(f"--n_embd {cfg.n_embd} must be divisible by --n_head {cfg.n_head}")
    if cfg.alpha > 1:
        raise ConfigError(f"--alpha {cfg.alpha}: the soft targets' weight lies in [0, 1]")
    run = StageRun(cfg.out_dir, cfg.student, cfg.steps, cfg.overwrite)
    runtime = setup_runtime(cfg.device, cfg.dtype)
    seed_everything(cfg.seed)
    teacher, tokenizer, _ = load_stage(cfg.out_dir, cfg.teacher, runtime.device)
    if cfg.init_from:
        student, _, _ = load_stage(cfg.out_dir, cfg.init_from, runtime.device)
    else:
        student = GPT(GPTConfig(block_size=teacher.config.block_size,
                                vocab_size=teacher.config.vocab_size, n_layer=cfg.n_layer,
                                n_head=cfg.n_head, n_embd=cfg.n_embd)).to(runtime.device)
    print(f"teacher '{cfg.teacher}': {teacher.num_params() / 1e6:.2f}M parameters; student: "
          f"{student.num_params() / 1e6:.2f}M; mode {cfg.mode}")
    data_rng = torch.Generator().manual_seed(cfg.seed)

    if cfg.mode == "sequence":  # the teacher's answers are the data; hard targets on them
        prompts = read_prompts(cfg.prompts)
        chats = greedy_answers(teacher, tokenizer, prompts, cfg.max_new_tokens)
        examples, report = sft_examples(tokenizer, chats, teacher.config.block_size)
        require_examples(examples, report, f"teacher answers to {cfg.prompts}")

        def next_batch():
            rows = torch.randint(len(examples), (cfg.batch_size,), generator=data_rng)
            return sft_batch([examples[i] for i in rows.tolist()], tokenizer.pad, runtime.device)
    else:  # windows of pretraining text: soft targets from the teacher, or none (text)
        train_data, val_data = pretraining_shards(cfg.data_dir, tokenizer, cfg.teacher)
        block_size = cfg.block_size or teacher.config.block_size

        def next_batch():
            return get_batch(train_data, cfg.batch_size, block_size, data_rng, runtime.device)

    log = run.open_log()
    alpha = cfg.alpha if cfg.mode == "soft" else 0.0  # text and sequence: hard targets only
    losses = train_student(student, next_batch, runtime, cfg.steps, cfg.lr, teacher=teacher,
                           temperature=cfg.temperature, alpha=alpha, log=log,
                           log_every=cfg.log_every, warmup_steps=cfg.warmup_steps)
    metrics = {"first_loss": losses[0], "last_loss": losses[-1]}
    if cfg.mode == "sequence":
        for chat, answer in zip(chats[:3], greedy_answers(student, tokenizer, prompts[:3],
                                                          cfg.max_new_tokens)):
            print(f"{chat[-2]['content']!r}: teacher {chat[-1]['content']!r}, "
                  f"student {answer[-1]['content']!r}")
    else:
        for name, model in (("teacher", teacher), ("student", student)):
            batches = iterate_batches(val_data, cfg.batch_size, block_size,
                                      max_batches=math.ceil(cfg.eval_windows / cfg.batch_size))
            metrics[f"{name}_val_ppl"] = perplexity(model, batches, runtime.autocast,
                                                    runtime.device)
        print(f"held-out perplexity: teacher {metrics['teacher_val_ppl']:.2f}, student "
              f"{metrics['student_val_ppl']:.2f}")
    path = run.save_finished(student, tokenizer, cfg, metrics=metrics)
    print(f"saved {path}")


if __name__ == "__main__":
    report_user_errors()  # a bad flag, file or checkpoint is one line, not a traceback
    main()
