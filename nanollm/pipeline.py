"""The whole pipeline on the built-in world, one stage after another, ending with a report.

    python -m nanollm.pipeline                  # about 20 minutes on 2 CPU cores
    python -m nanollm.pipeline --smoke          # a few minutes: tiny models, to check the plumbing
    python -m nanollm.pipeline --skip_existing  # reuse stages already in --out_dir
    python -m nanollm.pipeline --overwrite      # train every stage again

    train_pretrain.py -> train_sft.py -> train_reward.py -> train_rlhf.py -> train_dpo.py
    -> train_rlhf.py --algo grpo --reward verifiable (in {out_dir}/grpo/)
    -> arena -> PPO against DPO and GRPO -> acceptance checks -> report

Each stage is its own script, run here exactly as a person would run it (scripts never import
scripts). GRPO saves stage "rlhf" as PPO does, so it trains in a folder of its own, from the
same SFT model, rewarded by the world's check of each answer instead of a reward model. Then
the measurements that need every stage at once:

1. The arena: every checkpoint answers the same held-out and taught questions, the world's gold
   rater judges each pair of answers, and Bradley-Terry and Elo rate the checkpoints, with
   bootstrap intervals (nanollm/elo.py).
2. PPO against DPO and GRPO on the same held-out questions: greedy answers judged by the gold
   rater, the gain in gold reward over the SFT model all three started from with its paired
   bootstrap interval (nanollm/bootstrap.py), how often sampled answers fall into a style the
   rater dislikes, and the training time and peak memory each checkpoint records.
3. Acceptance checks: what the pipeline promises (alignment raises the gold reward, removes the
   disliked styles SFT learned from its crowd-written chats, keeps the facts, and the arena
   orders the stages), each computed and marked PASS or FAIL. They hold PPO and DPO to them;
   GRPO learns from right or wrong answers, not from the rater's taste in style.

The report (each stage's own figures, the comparison, the arena, the checks, the host's speed and
every plot) is written to {out_dir}/report/report.md and printed.
"""

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from nanollm.bootstrap import paired_bootstrap_interval
from nanollm.checkpoint import checkpoint_path, load_checkpoint
from nanollm.config import parse_config
from nanollm.elo import format_table, play_arena, rating_table
from nanollm.errors import ConfigError, report_user_errors
from nanollm.report import format_checks, format_comparison, format_stage_metrics
from nanollm.runs import stage_files
from nanollm.stages import load_stage
from nanollm.world import PERSONAS, World
from nanollm.world.evaluate import answer_metrics, answer_questions, sampled_kl, win_rate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARENA_PLAYERS = ("pretrain", "sft", "rlhf", "dpo")
ALIGNED = {"rlhf": "PPO", "dpo": "DPO"}  # compared with the SFT model they started from
COMPARED = (*ALIGNED, "grpo")  # GRPO is measured beside them, not held to the checks on style
GAIN_LEVEL = 0.95  # the bootstrap intervals of the gains
# The acceptance checks: SFT learned the disliked styles from its crowd-written chats, alignment
# removes most of them, and it changes how the models answer, not what they know.
SFT_DISLIKED_AT_LEAST = 0.20  # share of SFT's sampled answers in a disliked style
ALIGNED_DISLIKED_AT_MOST = 0.5  # an aligned model's share, as a fraction of SFT's
ACCURACY_TOLERANCE = 0.02  # held-out accuracy of an aligned model against SFT's


@dataclass
class PipelineConfig:
    out_dir: str = "out"
    smoke: bool = False
    skip_existing: bool = False  # keep a stage whose checkpoint is already there
    overwrite: bool = False  # train again every stage whose checkpoint is already there
    arena_questions: int = 200  # questions each checkpoint answers in the arena
    held_out_questions: int = 400  # held-out questions of the PPO-vs-DPO-vs-GRPO comparison
    kl_questions: int = 200  # of those, the ones whose sampled answers measure the KL to SFT
    n_boot: int = 1000  # bootstrap resamples of the questions, per gain
    seed: int = 0


class TrainingRun(NamedTuple):
    """One run of a training script: where it saves its stage, and with which flags."""
    name: str  # what the report calls it
    folder: str  # the script's --out_dir
    stage: str  # the checkpoint it saves there: {folder}/{stage}.pt
    script: str
    flags: list


def training_runs(out_dir):
    """Every training run of the pipeline, in order."""
    grpo_flags = ["--sft_dir", out_dir, "--algo", "grpo", "--reward", "verifiable"]
    return (TrainingRun("pretrain", out_dir, "pretrain", "train_pretrain.py", []),
            TrainingRun("sft", out_dir, "sft", "train_sft.py", []),
            TrainingRun("reward", out_dir, "reward", "train_reward.py", []),
            TrainingRun("rlhf", out_dir, "rlhf", "train_rlhf.py", []),
            TrainingRun("dpo", out_dir, "dpo", "train_dpo.py", []),
            TrainingRun("grpo", os.path.join(out_dir, "grpo"), "rlhf", "train_rlhf.py",
                        grpo_flags))


def run_stage(run, cfg):
    """Run one training script as a subprocess; stop the pipeline if it fails."""
    cmd = [sys.executable, os.path.join(ROOT, run.script), "--out_dir", run.folder, *run.flags]
    if cfg.smoke:
        cmd.append("--smoke")
    if cfg.overwrite:
        cmd.append("--overwrite")
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise SystemExit(f"{run.script} failed; the stages before it are saved in "
                         f"{cfg.out_dir}")
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


def training_cost(state):
    """(seconds, peak MiB) of the training a finished checkpoint records, None where it records
    nothing: DPO keeps its seconds among its metrics, and older checkpoints hold no peak memory."""
    seconds = state.get("train_seconds", state.get("metrics", {}).get("train_seconds"))
    return seconds, state.get("peak_memory_mb")


def held_out_comparison(cfg):
    """The SFT model and the aligned models, measured the same way on the same held-out
    questions. Greedy answers, judged by the gold rater: reward, accuracy, win rate against the
    SFT model's answer, length, flattery, and for an aligned model its gain in gold reward over
    SFT with a paired bootstrap interval (the same questions answered by both). Sampled answers
    (temperature 1, one seed for every model): the KL to the SFT model, and the share in a style
    the rater dislikes, which greedy decoding would hide (it shows only the likeliest style).
    What training cost, from each checkpoint: its seconds and peak memory."""
    world = World(seed=cfg.seed)
    questions = world.questions("held_out", n=cfg.held_out_questions, seed=cfg.seed + 11)
    gold = PERSONAS["default"]
    runs = {run.name: run for run in training_runs(cfg.out_dir)}
    sft, tokenizer, sft_state = load_stage(cfg.out_dir, "sft")
    rows, scores, greedy = {}, {}, {}
    for name in ("sft", *COMPARED):
        if name == "sft":
            model, state = sft, sft_state
        else:
            model, _, state = load_stage(runs[name].folder, runs[name].stage)
        seconds, peak_memory_mb = training_cost(state)
        greedy[name] = answer_questions(model, tokenizer, questions)
        scores[name] = [gold.score(q.fact, a, world) for q, a in zip(questions, greedy[name])]
        sampled = answer_questions(model, tokenizer, questions, temperature=1.0,
                                   generator=torch.Generator().manual_seed(cfg.seed))
        rows[name] = {**answer_metrics(world, questions, greedy[name]),
                      "sampled_disliked_rate": answer_metrics(world, questions,
                                                              sampled)["disliked_rate"],
                      "win_rate": 0.5, "kl": 0.0, "seconds": seconds,
                      "peak_memory_mb": peak_memory_mb}
        if name != "sft":
            rows[name]["win_rate"] = win_rate(world, questions, greedy[name], greedy["sft"])
            rows[name]["kl"] = sampled_kl(model, sft, tokenizer, questions[:cfg.kl_questions],
                                          generator=torch.Generator().manual_seed(cfg.seed))
            rows[name]["gain"] = paired_bootstrap_interval(
                scores["sft"], scores[name], cfg.n_boot, cfg.seed, GAIN_LEVEL)
    return rows


def acceptance_checks(rows, arena_rows):
    """What the pipeline promises, each as (statement, passed, evidence), computed from the
    comparison's rows and the arena's rating table."""
    sft, rated = rows["sft"], {row["name"]: row for row in arena_rows}
    disliked = sft["sampled_disliked_rate"]
    checks = []
    for name, method in ALIGNED.items():
        gain, low, high = rows[name]["gain"]
        checks.append((f"{method}'s gain in gold reward over SFT: the {GAIN_LEVEL:.0%} interval "
                       f"lies above 0", low > 0, f"{gain:+.3f}, {low:+.3f} to {high:+.3f}"))
    checks.append((f"SFT's sampled answers: at least {SFT_DISLIKED_AT_LEAST:.0%} in a disliked "
                   f"style", disliked >= SFT_DISLIKED_AT_LEAST, f"{disliked:.1%}"))
    for name, method in ALIGNED.items():
        share = rows[name]["sampled_disliked_rate"]
        checks.append((f"{method}'s sampled answers: disliked styles at most half of SFT's",
                       share <= ALIGNED_DISLIKED_AT_MOST * disliked,
                       f"{share:.1%} against {disliked:.1%}"))
    for name, method in ALIGNED.items():
        accuracy = rows[name]["accuracy"]
        checks.append((f"{method}'s held-out accuracy at most {ACCURACY_TOLERANCE * 100:.0f} "
                       f"points below SFT's", accuracy >= sft["accuracy"] - ACCURACY_TOLERANCE,
                       f"{accuracy:.1%} against {sft['accuracy']:.1%}"))

    def intervals(*names):
        return ", ".join(f"{n} {rated[n]['low']:.0f}..{rated[n]['high']:.0f}" for n in names)

    checks.append(("arena: DPO and PPO above SFT, their intervals clear of SFT's",
                   min(rated[name]["low"] for name in ALIGNED) > rated["sft"]["high"],
                   intervals(*ALIGNED, "sft")))
    checks.append(("arena: SFT above pretrain, the intervals clear of each other",
                   rated["sft"]["low"] > rated["pretrain"]["high"],
                   intervals("sft", "pretrain")))
    return checks


def host_speed(n=1024, seconds=1.5):
    """The host's float32 matrix-product speed, measured for `seconds` with torch's threads (the
    training scripts use as many): run times compare only between hosts of similar speed."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    products, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        products += 1
    gflops = products * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9  # 2 n^3 FLOPs a product
    return (f"{gflops:.0f} GFLOP/s (float32 {n} x {n} matrix products, "
            f"{torch.get_num_threads()} threads)")


def write_report(cfg, seconds, arena_rows, rows, checks, host, total_seconds):
    report_dir = os.path.join(cfg.out_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    lines = ["# nanollm pipeline report", "",
             f"Host: {host}. Total time: {total_seconds:.0f} s.", "",
             "## Acceptance", "", *format_checks(checks), "",
             "## Stages (each checkpoint's own figures)"]
    runs = training_runs(cfg.out_dir)
    for run in runs:
        ran = f" ({seconds[run.name]:.0f} s)" if run.name in seconds else ""
        metrics = load_checkpoint(run.folder, run.stage).get("metrics", {})
        lines += ["", f"### {run.name}{ran}", "", *format_stage_metrics(metrics)]
    lines += ["", f"## PPO against DPO and GRPO ({cfg.held_out_questions} held-out questions, "
              "gold rater)", "", *format_comparison(rows), "",
              "rlhf: PPO with the reward model. dpo: DPO. grpo: GRPO with the world's check as "
              "its reward (1 right, 0 wrong), no reward model. Peak memory and wall time: what "
              "each checkpoint records of its training (- where it records none).", "",
              "## Arena (gold rater judges every pair of answers)", "", "```",
              format_table(arena_rows), "```", ""]
    for folder in dict.fromkeys(run.folder for run in runs):
        # a run in a folder of its own draws plots named like another run's: prefix its name
        prefix = "" if folder == cfg.out_dir else f"{os.path.basename(folder)}_"
        for png in sorted(glob.glob(os.path.join(folder, "*.png"))):
            name = prefix + os.path.basename(png)
            shutil.copy(png, os.path.join(report_dir, name))
            lines.append(f"![{name}]({name})")
    with open(os.path.join(report_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def check_nothing_replaced(cfg):
    """Stop before any work when a stage the pipeline would train is already saved, finished or
    not, unless the user said what to do with it (--skip_existing or --overwrite)."""
    if cfg.skip_existing and cfg.overwrite:
        raise ConfigError("--skip_existing keeps saved stages and --overwrite trains them again: "
                          "pass one of them")
    saved = [path for run in training_runs(cfg.out_dir)
             for path in stage_files(run.folder, run.stage)]
    if cfg.skip_existing:  # finished stages are kept; an unfinished one is in the way
        saved = [path for path in saved if path.endswith(".unfinished.pt")
                 and not os.path.exists(path.replace(".unfinished.pt", ".pt"))]
    if saved and not cfg.overwrite:
        raise ConfigError(f"{', '.join(saved)} already saved: pass --skip_existing to keep the "
                          "finished stages (and train only what is missing), --overwrite to "
                          "train everything again, or choose another --out_dir; an unfinished "
                          "run continues with its script's --resume")


if __name__ == "__main__":
    report_user_errors()
    cfg = parse_config(PipelineConfig, description=__doc__)
    check_nothing_replaced(cfg)
    start, seconds = time.time(), {}
    host = host_speed()  # first, while nothing else of ours runs
    print(f"host: {host}")
    for run in training_runs(cfg.out_dir):
        path = checkpoint_path(run.folder, run.stage)
        if cfg.skip_existing and os.path.exists(path):
            print(f"=== {run.name}: reusing {path}")
            continue
        seconds[run.name] = run_stage(run, cfg)
    print("\n=== arena", flush=True)
    arena_rows = arena(cfg, ARENA_PLAYERS)
    print("=== PPO against DPO and GRPO", flush=True)
    rows = held_out_comparison(cfg)
    checks = acceptance_checks(rows, arena_rows)
    report = write_report(cfg, seconds, arena_rows, rows, checks, host, time.time() - start)
    print("\n" + report)
    print(f"\npipeline finished in {time.time() - start:.0f}s; "
          f"report in {os.path.join(cfg.out_dir, 'report', 'report.md')}")
