"""The reward model: learn a rater's preferences from pairs of answers. Saves stage "reward".

    python train_reward.py                             # the world's pairs, from out/sft.pt
    python train_reward.py --smoke                     # seconds (after train_sft.py --smoke)
    python train_reward.py --reward_persona length --out_dir out/length_rm
    python train_reward.py --preferences my_pairs.jsonl   # {"prompt", "chosen", "rejected"} or HH
    python train_reward.py --rm_likelihood             # the likelihood-weighted variant
    python train_reward.py --resume                    # continue a stopped run, exactly

Two answers to one question, one of them preferred by a rater persona (nanollm/world/rater.py: by
default correct and concise wins), are rendered with the chat template (nanollm/pairs.py). Most
answers are the SFT model's own samples, the answers PPO will start from (InstructGPT's labellers
compared model samples too); the rest are the world's templates, every style right and wrong, for
the mistakes the model rarely samples (nanollm/world/preferences.py).

The model is InstructGPT's (nanollm/reward.py): the SFT trunk and a scalar head, starting at
zero, that reads the state at the answer's last token (its <|end|>). Both answers of a pair go
through it, and the Bradley-Terry loss asks the chosen one to score higher. Pairs about held-out
entities, which no training pair names, measure whether it learned the rater's taste or the
training answers by heart; the accuracy by kind of pair says where it fails. Afterwards the head
is normalised so the training answers' rewards have mean 0 and std 1 (PPO's beta then means the
same for every reward model). train_rlhf.py loads the result.

--rm_likelihood adds each answer token's log-likelihood under the trunk's language head, times a
learned per-token weight (RewardModel.likelihood_rewards says why): a variant, off by default.

Where it simplifies compared with InstructGPT:
1. One comparison per row, not all K*(K-1)/2 rankings of K answers to a prompt.
2. Held-out pairs of a --preferences file are its first 5%, with no notion of held-out entities.
3. One process, no torch.compile.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm import tqdm

from nanollm.checkpoint import checkpoint_path
from nanollm.config import check_flags, parse_config
from nanollm.errors import report_user_errors
from nanollm.formats import held_out_count, load_preferences
from nanollm.optim import check_finite, lr_at, optimizer_step, set_lr
from nanollm.pairs import render_pairs, score_pairs
from nanollm.plot import plot_reward_model
from nanollm.reward import (RewardModel, bradley_terry_loss, normalise_reward_head, pair_rewards,
                            preference_accuracy)
from nanollm.runs import StageRun, StopRequest
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.stages import load_stage
from nanollm.world import World
from nanollm.world.evaluate import accuracy_by_style, print_accuracy_by_style
from nanollm.world.preferences import (LABEL_TEMPERATURE, PAIRS_CACHE, SAMPLED_PAIRS,
                                        TEMPLATE_PAIRS, alignment_pairs, preference_pairs)


@dataclass
class RewardConfig:
    sft_dir: str = field(default="", metadata={"help": "folder holding sft.pt (default: out_dir)"})
    # preference data
    preferences: str = field(default="", metadata={
        "help": "JSONL preference pairs; default: the world's, labelled by --reward_persona"})
    reward_persona: Literal["default", "flattery", "length", "cautious"] = field(
        default="default",
        metadata={"help": "the rater who labels the pairs; the gold rater is always default"})
    label_temperature: float = LABEL_TEMPERATURE  # > 0: the rater chooses by Bradley-Terry
    label_noise: float = 0.0  # share of training pairs whose labels are swapped
    n_pairs: int = TEMPLATE_PAIRS  # training pairs of template answers (taught entities)
    sampled_pairs: int = SAMPLED_PAIRS  # training pairs of two answers the SFT model sampled
    max_new_tokens: int = 48  # longest sampled answer
    val_pairs: int = 2000  # held-out pairs (held-out entities)
    world_seed: int = 0
    # training
    rm_likelihood: bool = False  # add w_t * log p(token t) to the reward (the variant)
    # One epoch's worth of pairs (5,000 at 32 a step), drawn at random, as InstructGPT trains its
    # reward model for one epoch: further passes fit the training pairs and the held-out loss rises.
    steps: int = 160
    batch_size: int = 32  # pairs per step
    lr: float = 1e-4
    warmup_steps: int = 20
    eval_every: int = 80
    grad_clip: float = 1.0
    out_dir: str = "out"
    overwrite: bool = False  # replace a finished (or unfinished) reward.pt in out_dir
    resume: bool = False  # continue the unfinished run in out_dir, exactly
    stop_at: int = 0  # stop after this step, saved as unfinished, to --resume later; 0 = steps
    device: str = "auto"
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16 (CUDA)
    seed: int = 0
    smoke: bool = False


SMOKE = dict(n_pairs=200, sampled_pairs=32, val_pairs=32, max_new_tokens=12, steps=60,
             batch_size=16, lr=1e-3, warmup_steps=2, eval_every=10)

# ---------------------------------------------------------------------------- config
report_user_errors()  # a bad flag, file or checkpoint is one line, not a traceback
cfg = parse_config(RewardConfig, description=__doc__, smoke=SMOKE)  # --smoke: a run of seconds
check_flags(cfg, positive=("n_pairs", "val_pairs", "max_new_tokens", "steps", "batch_size", "lr",
                           "eval_every"),
            non_negative=("sampled_pairs", "warmup_steps", "grad_clip", "stop_at",
                          "label_temperature"),
            fractions=("label_noise",),
            at_most={"stop_at": "steps"})
run = StageRun(cfg.out_dir, "reward", cfg.steps, cfg.overwrite, cfg.resume)
runtime = setup_runtime(cfg.device, cfg.dtype)
seed_everything(cfg.seed)
t0 = time.time()

# ---------------------------------------------------------------------------- the SFT model
# It samples half of each sampled pair, then becomes the reward model's trunk.
sft_model, tokenizer, _ = load_stage(cfg.sft_dir or cfg.out_dir, "sft", runtime.device,
                                     dropout=0.0)
block_size = sft_model.config.block_size

# ---------------------------------------------------------------------------- preference data
# Pairs about taught entities train the reward model; pairs about held-out entities (questions
# it has never seen answered) measure it. Held-out labels are noise-free: accuracy on them says
# how well the rater's taste was learned.
world = None if cfg.preferences else World(seed=cfg.world_seed)
if cfg.preferences:
    pairs = load_preferences(cfg.preferences)
    n_val = held_out_count(len(pairs), cfg.preferences, "pairs")  # the first 5% held out
    val_pairs, train_pairs = pairs[:n_val], pairs[n_val:]
else:
    train_pairs = alignment_pairs(sft_model, tokenizer, world, n_template=cfg.n_pairs,
                                  n_sampled=cfg.sampled_pairs, persona=cfg.reward_persona,
                                  noise=cfg.label_noise, seed=cfg.seed,
                                  max_new_tokens=cfg.max_new_tokens, autocast=runtime.autocast,
                                  cache_path=os.path.join(cfg.out_dir, PAIRS_CACHE),
                                  temperature=cfg.label_temperature)
    val_pairs = preference_pairs(world, "held_out", cfg.val_pairs, cfg.reward_persona,
                                 seed=cfg.seed + 1)
train_rendered, report = render_pairs(tokenizer, train_pairs, block_size, "training pairs")
val_rendered, val_report = render_pairs(tokenizer, val_pairs, block_size, "held-out pairs")
print(f"reward model: train {report}; held out: {val_report}")

# ---------------------------------------------------------------------------- model
reward_model = RewardModel(sft_model, likelihood=cfg.rm_likelihood).to(runtime.device).train()
optimizer = reward_model.configure_optimizer(0.0, cfg.lr, fused=runtime.fused_adamw)


def pair_scores(rendered):  # both answers' rewards over a whole data set, in eval mode
    return pair_rewards(reward_model, rendered, tokenizer.pad, runtime.autocast)


def save_progress(steps_done):
    """Everything a resumed run needs, to reward.unfinished.pt."""
    return run.save_progress(reward_model, tokenizer, cfg, steps_done, optimizer,
                             likelihood=reward_model.likelihood, data_rng=data_rng.get_state())


# ---------------------------------------------------------------------------- training loop
data_rng = torch.Generator().manual_seed(cfg.seed)
state = run.resume_state(cfg, tokenizer, reward_model, map_location=runtime.device)
start_step = run.restore(state, reward_model, optimizer, data_rng) if state else 0  # --resume
log_path = run.log_path
log = run.open_log(start_step)
steps_done = start_step
progress = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps,
                desc="reward model", unit="step")
with StopRequest() as stop:
    for step in progress:
        set_lr(optimizer, lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr / 10))
        rows = torch.randint(len(train_rendered), (cfg.batch_size,), generator=data_rng)
        with runtime.autocast():  # both answers of every pair as one batch of 2B rows
            chosen_rewards, rejected_rewards = score_pairs(
                reward_model, [train_rendered[i] for i in rows.tolist()], tokenizer.pad,
                runtime.device)  # (B,) each
        loss = bradley_terry_loss(chosen_rewards, rejected_rewards)
        runtime.scaler.scale(loss).backward()
        loss_value = check_finite(loss, step, run.unfinished_path)
        grad_norm = optimizer_step(reward_model, optimizer, runtime.scaler, cfg.grad_clip)
        accuracy = preference_accuracy(chosen_rewards, rejected_rewards)
        progress.set_postfix(loss=f"{loss_value:.3f}", acc=f"{accuracy:.2f}")
        log.log(step=step, loss=loss_value, accuracy=accuracy, grad_norm=grad_norm,
                lr=optimizer.param_groups[0]["lr"])
        steps_done = step + 1
        stopping = stop.requested or steps_done == cfg.stop_at
        if steps_done % cfg.eval_every == 0 or steps_done == cfg.steps:
            chosen_rewards, rejected_rewards = pair_scores(val_rendered)
            val_accuracy = preference_accuracy(chosen_rewards, rejected_rewards)
            val_loss = bradley_terry_loss(chosen_rewards, rejected_rewards).item()
            tqdm.write(f"step {steps_done}: held-out pair accuracy {val_accuracy:.1%}, "
                       f"loss {val_loss:.3f}")
            log.log(step=steps_done, val_accuracy=val_accuracy, val_loss=val_loss)
            if not stopping and steps_done < cfg.steps:
                save_progress(steps_done)  # what a killed run can --resume from
        if stopping:
            break
progress.close()
if steps_done < cfg.steps:
    run.stop(save_progress(steps_done), steps_done, stop.requested)
save_progress(steps_done)  # every step kept, whatever happens while it is measured

# ---------------------------------------------------------------------------- normalise
# Rewards in units of their spread over (a spread-out 1000 of) the training answers: see
# normalise_reward_head. The ranking, and so every accuracy, is unchanged.
every = max(1, len(train_rendered) // 1000)
normalise_reward_head(reward_model, torch.cat(pair_scores(train_rendered[::every])))

# ---------------------------------------------------------------------------- measure
# One overall accuracy hides what was learned: style pairs are easy, pairs decided by a fact
# about a held-out entity are hard. The world's pairs know their kinds.
chosen_rewards, rejected_rewards = pair_scores(val_rendered)
metrics = {"val_accuracy": preference_accuracy(chosen_rewards, rejected_rewards)}
if world is not None and val_report.dropped == 0:  # pairs and rendered rows line up
    by_kind = accuracy_by_style(val_pairs, (chosen_rewards > rejected_rewards).tolist())
    print_accuracy_by_style(by_kind)
    metrics["val_accuracy_by_kind"] = {kind: accuracy for kind, (accuracy, _) in by_kind.items()}
    if cfg.reward_persona != "default":
        # how often this reward model agrees with the gold rater, who never labelled its pairs
        gold_rendered, _ = render_pairs(tokenizer, preference_pairs(
            world, "held_out", cfg.val_pairs, "default", seed=cfg.seed + 2), block_size)
        metrics["gold_accuracy"] = preference_accuracy(*pair_scores(gold_rendered))
seconds = time.time() - t0
print(f"reward model took {seconds:.0f}s: held-out pair accuracy {metrics['val_accuracy']:.1%}"
      + (f", agreement with the gold rater {metrics['gold_accuracy']:.1%}"
         if "gold_accuracy" in metrics else ""))

# ---------------------------------------------------------------------------- save
run.save_finished(reward_model, tokenizer, cfg, likelihood=reward_model.likelihood,
                  metrics=metrics, train_seconds=seconds)
plot_reward_model(log_path, os.path.join(cfg.out_dir, "reward_curves.png"))
print(f"saved {checkpoint_path(cfg.out_dir, 'reward')}, {log_path} and "
      f"{cfg.out_dir}/reward_curves.png")
