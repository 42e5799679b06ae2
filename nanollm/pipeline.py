"""The whole pipeline on the built-in world, one stage after another, ending with a report.

    python -m nanollm.pipeline                  # 16 to 26 minutes on 2 CPU cores, by host
    python -m nanollm.pipeline --smoke          # seconds: tiny models, to check the plumbing
    python -m nanollm.pipeline --skip_existing  # reuse stages already in --out_dir

    prepare -> train_pretrain.py -> train_sft.py -> train_rlhf.py -> train_dpo.py -> arena -> report

Each stage is its own script, run here exactly as a person would run it (scripts never import
scripts). The arena then asks every checkpoint the same held-out and taught questions, lets the
world's gold rater judge each pair of answers, and rates the checkpoints with Bradley-Terry and
Elo (nanollm/elo.py). The report (a table of each stage's key figures, the arena, and every plot)
is written to {out_dir}/report/.
"""

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from nanollm.checkpoint import checkpoint_path, load_checkpoint
from nanollm.config import parse_config
from nanollm.elo import format_table, play_arena, rating_table
from nanollm.world.evaluate import answer_metrics, answer_questions, sampled_kl, win_rate
from nanollm.stages import load_stage
from nanollm.world import PERSONAS, World

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = (  # (stage written, script, extra flags)
    ("pretrain", "train_pretrain.py", []),
    ("sft", "train_sft.py", []),
    ("rlhf", "train_rlhf.py", []),
    ("dpo", "train_dpo.py", []),
)
ARENA_PLAYERS = ("pretrain", "sft", "rlhf", "dpo")


@dataclass
class PipelineConfig:
    out_dir: str = "out"
    smoke: bool = False
    skip_existing: bool = False  # keep a stage whose checkpoint is already there
    arena_questions: int = 200  # questions each checkpoint answers in the arena
    seed: int = 0


def run_stage(script, cfg, extra):
    """Run one training script as a subprocess; stop the pipeline if it fails."""
    cmd = [sys.executable, os.path.join(ROOT, script), "--out_dir", cfg.out_dir, *extra]
    if cfg.smoke:
        cmd.append("--smoke")
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise SystemExit(f"{script} failed; the stages before it are saved in {cfg.out_dir}")
    return time.time() - t0


def arena(cfg, players):
    """Every checkpoint answers the same questions; the gold rater judges every pair."""
    world = World(seed=cfg.seed)
    questions = (world.questions("held_out", n=cfg.arena_questions // 2, seed=cfg.seed + 7)
                 + world.questions("taught", n=cfg.arena_questions // 2, seed=cfg.seed + 7))
    gold = PERSONAS["default"]
    scores, generator = {}, torch.Generator().manual_seed(cfg.seed)
    for name in players:
        model, tokenizer, _ = load_stage(cfg.out_dir, name)
        # sampled, not greedy: the arena compares what each model tends to say
        answers = answer_questions(model, tokenizer, questions, temperature=1.0,
                                   generator=generator)
        scores[name] = [gold.score(q.fact, a, world) for q, a in zip(questions, answers)]
    return rating_table(list(players), play_arena(scores), seed=cfg.seed)


def alignment_table(cfg, seconds, n_questions=200, kl_questions=64):
    """PPO against DPO, measured the same way on the same held-out questions: greedy answers
    judged by the gold rater (reward, accuracy, win rate against the SFT model's answer), the KL
    to the SFT model they both started from (sampled answers), answer length, and each script's
    wall time (train_rlhf.py includes its reward model)."""
    world = World(seed=cfg.seed)
    questions = world.questions("held_out", n=n_questions, seed=cfg.seed + 11)
    sft, tokenizer, _ = load_stage(cfg.out_dir, "sft")
    sft_answers = answer_questions(sft, tokenizer, questions)
    rows = {"sft": {**answer_metrics(world, questions, sft_answers), "win_rate": 0.5, "kl": 0.0}}
    for name in ("rlhf", "dpo"):
        model, _, _ = load_stage(cfg.out_dir, name)
        answers = answer_questions(model, tokenizer, questions)
        generator = torch.Generator().manual_seed(cfg.seed)
        rows[name] = {**answer_metrics(world, questions, answers),
                      "win_rate": win_rate(world, questions, answers, sft_answers),
                      "kl": sampled_kl(model, sft, tokenizer, questions[:kl_questions],
                                       generator=generator),
                      "seconds": seconds.get(name)}
    return rows


def format_alignment_table(rows):
    lines = ["| model | gold reward | accuracy | win rate vs SFT | KL to SFT (nats) | words "
             "| flattery | wall time |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        wall = f"{r['seconds']:.0f} s" if r.get("seconds") else ""
        lines.append(f"| {name} | {r['gold_reward']:.3f} | {r['accuracy']:.1%} | "
                     f"{r['win_rate']:.1%} | {r['kl']:.2f} | {r['mean_words']:.1f} | "
                     f"{r['flattery_rate']:.1%} | {wall} |")
    return "\n".join(lines)


def stage_figures(out_dir, stage):
    """The key figures a stage stored in its checkpoint (its "metrics"), flattened."""
    metrics = load_checkpoint(out_dir, stage).get("metrics", {})
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k} / " if prefix or k else k, v)
        elif isinstance(value, (int, float)):
            flat[prefix.rstrip(" /")] = value

    walk("", metrics)
    return flat


def write_report(cfg, seconds, table, alignment):
    report_dir = os.path.join(cfg.out_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    lines = ["# nanollm pipeline report", "", "| stage | seconds | figure | value |",
             "|---|---|---|---|"]
    for stage, _, _ in STAGES:
        for key, value in stage_figures(cfg.out_dir, stage).items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            lines.append(f"| {stage} | {seconds.get(stage, 0):.0f} | {key} | {shown} |")
    lines += ["", "## PPO against DPO (held-out questions, greedy answers, gold rater)", "",
              format_alignment_table(alignment), "",
              "## Arena (gold rater judges every pair of answers)", "", "```",
              format_table(table), "```", ""]
    for png in sorted(glob.glob(os.path.join(cfg.out_dir, "*.png"))):
        shutil.copy(png, report_dir)
        lines.append(f"![{os.path.basename(png)}]({os.path.basename(png)})")
    with open(os.path.join(report_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


if __name__ == "__main__":
    cfg = parse_config(PipelineConfig, description=__doc__)
    start, seconds = time.time(), {}
    for stage, script, extra in STAGES:
        if cfg.skip_existing and os.path.exists(checkpoint_path(cfg.out_dir, stage)):
            print(f"=== {stage}: reusing {checkpoint_path(cfg.out_dir, stage)}")
            continue
        seconds[stage] = run_stage(script, cfg, extra)
    print("\n=== arena", flush=True)
    table = arena(cfg, ARENA_PLAYERS)
    print("=== PPO against DPO", flush=True)
    alignment = alignment_table(cfg, seconds)
    report = write_report(cfg, seconds, table, alignment)
    print("\n" + report)
    print(f"\npipeline finished in {time.time() - start:.0f}s; "
          f"report in {os.path.join(cfg.out_dir, 'report', 'report.md')}")
