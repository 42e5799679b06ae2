"""Small trained stages for the lessons, made once and then reused.

Lessons 05-09 need a model that already knows the world's facts. The pipeline's default models
take several minutes to train on 2 CPU cores; the lessons use smaller ones, trained by the same
scripts with the flags in LESSON_STAGES, and keep them in out/lessons/. The first lesson that
needs a stage trains it (and the stages before it); every later lesson loads it in a second.

    model, tokenizer, checkpoint = lesson_stage("sft")

Delete out/lessons/ to train them again (after a change to the world or the scripts).
"""

import os
import subprocess
import sys
import time

from nanollm.checkpoint import checkpoint_path
from nanollm.stages import load_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON_DIR = os.path.join(ROOT, "out", "lessons")

# stage -> (the stage it starts from, script, flags). Smaller and shorter than the defaults;
# same world, same data shards (data/world), same tokenizer. 1,000 pretraining steps, because
# this small model needs that long to learn most of the world's facts, taught and held out, and
# lesson 5 needs a base model that knows them.
LESSON_STAGES = {
    "pretrain": (None, "train_pretrain.py", [
        "--n_layer", "4", "--n_head", "4", "--n_embd", "128", "--block_size", "128",
        "--batch_size", "32", "--max_steps", "1000", "--warmup_steps", "60",
        "--eval_every", "500"]),
    "sft": ("pretrain", "train_sft.py", [
        "--n_chats", "4000", "--max_steps", "150", "--lr", "3e-4", "--eval_every", "75"]),
}

# Reward models that more than one lesson reads, trained from the lesson SFT model: name -> flags
# of train_reward.py. Lesson 6 trains "rm" (the default rater's), lesson 7 "reward_length" (the
# length-loving persona's, answers sampled up to 24 tokens), lesson 14 reuses both.
LESSON_REWARD_MODELS = {
    "rm": ["--sft_dir", LESSON_DIR, "--n_pairs", "2000", "--sampled_pairs", "0",
           "--val_pairs", "400", "--steps", "150", "--batch_size", "32", "--lr", "3e-4",
           "--eval_every", "50"],
    "reward_length": ["--sft_dir", LESSON_DIR, "--reward_persona", "length", "--n_pairs", "1000",
                      "--sampled_pairs", "128", "--val_pairs", "200", "--steps", "100",
                      "--batch_size", "16", "--eval_every", "50", "--max_new_tokens", "24"],
}


def train_once(stage: str, script: str, flags: list[str], out_dir: str = LESSON_DIR) -> str:
    """Run `script --out_dir out_dir *flags` unless a finished run already left checkpoint
    `stage` in out_dir. Lessons use it for their own runs too (a PPO run with beta 0, a DPO run
    with another rater), each in its own out_dir. Returns the checkpoint's path.

    A run that finished writes `{stage}.done` beside its checkpoint; a checkpoint without it was
    saved along the way by a run that was stopped, and is trained again."""
    path = checkpoint_path(out_dir, stage)
    done_marker = os.path.join(out_dir, f"{stage}.done")
    if os.path.exists(path) and os.path.exists(done_marker):
        return path
    # --overwrite: whatever is there (an unfinished run, or a checkpoint of a run whose marker
    # was never written) is trained again
    cmd = [sys.executable, os.path.join(ROOT, script), "--out_dir", out_dir, "--overwrite", *flags]
    print(f"training {stage} once (kept in {os.path.relpath(out_dir, ROOT)}):\n  "
          + " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:]),
          flush=True)
    t0 = time.time()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    seconds = time.time() - t0
    with open(done_marker, "w") as f:
        f.write(f"{' '.join(cmd[1:])}\nfinished in {seconds:.0f}s\n")
    print(f"  done in {seconds:.0f}s", flush=True)
    return path


def ensure_lesson_stage(stage: str, out_dir: str = LESSON_DIR) -> str:
    """Train `stage` of LESSON_STAGES (and what it starts from) unless it is already in out_dir."""
    if stage not in LESSON_STAGES:
        raise ValueError(f"no lesson stage {stage!r}; expected one of {list(LESSON_STAGES)}")
    parent, script, flags = LESSON_STAGES[stage]
    if parent:
        ensure_lesson_stage(parent, out_dir)
    return train_once(stage, script, flags, out_dir)


def lesson_stage(stage: str, out_dir: str = LESSON_DIR, device: str = "cpu"):
    """(model, tokenizer, checkpoint) of a lesson stage, trained first if need be."""
    ensure_lesson_stage(stage, out_dir)
    return load_stage(out_dir, stage, device)


def lesson_reward_model(name: str) -> str:
    """The folder of LESSON_REWARD_MODELS[name] (reward.pt), trained first if need be."""
    ensure_lesson_stage("sft")
    out_dir = os.path.join(LESSON_DIR, name)
    train_once("reward", "train_reward.py", LESSON_REWARD_MODELS[name], out_dir)
    return out_dir


def lesson_ppo_on_length(beta: float) -> str:
    """The folder of lesson 7's PPO run on the length-loving reward model at KL coefficient
    `beta` (rlhf.pt, rlhf_log.jsonl), trained first if need be; lesson 14 reuses its log."""
    reward_dir = lesson_reward_model("reward_length")
    out_dir = os.path.join(LESSON_DIR, f"ppo_length_beta{beta:g}")
    train_once("rlhf", "train_rlhf.py", [
        "--sft_dir", LESSON_DIR, "--reward_dir", reward_dir, "--beta", str(beta), "--lr", "5e-5",
        "--ppo_iters", "12", "--rollout_batch", "32", "--max_new_tokens", "24",
        "--ppo_epochs", "2", "--eval_questions", "16", "--eval_every", "100"], out_dir)
    return out_dir
