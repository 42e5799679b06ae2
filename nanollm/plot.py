"""Plots of training logs that show a run's point first, saved as PNG.

    plot_ppo("out/rlhf_log.jsonl", "out/rlhf_curves.png")          # one preset per script
    plot_panels("out/dpo_log.jsonl", [("implied rewards", ["chosen", "rejected"], "reward")],
                "out/dpo_rewards.png")
    plot_curves({"with KL": "out/a.jsonl", "no KL": "out/b.jsonl"}, ["gold_reward"], "kl.png")
    plot_xy({"beta=0.1": (kls, rewards)}, "reward_vs_kl.png", xlabel="KL", ylabel="gold reward")
    plot_reward_vs_kl("out/rlhf_log.jsonl", "out/rlhf_reward_vs_kl.png")   # PPO's rollouts

A figure is a compact grid of panels, each a question with an answer: several series that belong
together on one axis (PPO's proxy and gold reward; DPO's chosen and rejected rewards), a legend,
axes labelled in words. A series that is constant (a fixed KL coefficient, a flat learning rate)
or absent from the log is left out, and a panel left with nothing is dropped, so one preset fits
every variant of its script. The first row is drawn taller: it holds the story.

We draw on matplotlib Figure objects directly (not pyplot), so nothing here changes the global
backend: a notebook keeps showing its inline plots, and a headless machine needs no display.
"""

import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nanollm.logs import read_run

PANEL_WIDTH, PANEL_HEIGHT = 5.0, 2.8  # inches per panel of the grid
XY_SIZE = (7.0, 4.2)                  # inches, the one panel of plot_xy
FIRST_ROW_HEIGHT = 1.3                # the first row, which holds the point, relative to the rest
FEW_POINTS = 30                       # below this many points a series gets markers
SMOOTH_ABOVE = 60                     # above this many points, draw the noisy raw values faintly
SMOOTH_SHARE = 0.05                   # ... under their running mean over this share of the points
X_LABELS = {"step": "training step", "iteration": "PPO iteration (one rollout each)"}


def _load_runs(logs):
    """A path, a list of records, or {label: path or records} -> {label: records}."""
    if isinstance(logs, dict):
        return {label: _load_runs(source)[None] for label, source in logs.items()}
    records = read_run(logs) if isinstance(logs, (str, os.PathLike)) else list(logs)
    return {None: records}


def _save(fig, out_png):
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    FigureCanvasAgg(fig)  # attaches a renderer; Figure.savefig needs one
    fig.savefig(out_png, dpi=120)
    return out_png


def series_points(records, key, x="step"):
    """(xs, ys) of the records that have both `x` and `key`: different lines log different things
    (train loss every step, validation loss every few hundred)."""
    points = [(r[x], r[key]) for r in records if r.get(x) is not None and r.get(key) is not None]
    return tuple(zip(*points)) if points else ((), ())


def is_informative(ys):
    """A series worth a line: at least two points and not all of them equal."""
    return len(ys) >= 2 and max(ys) > min(ys)


def running_mean(ys, window):
    """Mean of each value and the window - 1 before it (fewer at the start), as a NumPy array."""
    sums = np.concatenate([[0.0], np.cumsum(ys, dtype=np.float64)])  # sums[i] = sum of ys[:i]
    ends = np.arange(1, len(ys) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _series_label(key):
    """A panel entry is a log key or (log key, name in words); returns (key, name)."""
    return (key, key.replace("_", " ")) if isinstance(key, str) else key


def _draw_series(ax, xs, ys, label):
    if len(ys) > SMOOTH_ABOVE:
        line, = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)
        window = max(2, round(SMOOTH_SHARE * len(ys)))
        ax.plot(xs, running_mean(ys, window), color=line.get_color(), label=label)
    else:
        ax.plot(xs, ys, label=label, marker="." if len(ys) < FEW_POINTS else None)


def plot_panels(logs, panels, out_png, title=None, x="step", columns=2, xlabel=None):
    """A grid of panels from JSONL log records; returns out_png.

    logs: a path, a list of records, or {run label: path or records} to overlay runs.
    panels: [(panel title, [key or (key, name in words), ...], y label in words), ...], drawn in
    order, `columns` to a row. Series that are constant or absent are left out, and so is a panel
    left empty. A run too short for any series to move (a step or two) keeps its constant ones;
    a log with none of the keys is an error (likely a typo), which lists the logged keys.
    """
    runs = _load_runs(logs)
    drawn = []  # (title, [(xs, ys, legend label)], y label) of the panels with a series logged
    for panel_title, keys, ylabel in panels:
        lines = []
        for key, name in map(_series_label, keys):
            for run, records in runs.items():
                xs, ys = series_points(records, key, x)
                if ys:
                    lines.append((xs, ys, name if run is None else f"{run}, {name}"))
        drawn.append((panel_title, lines, ylabel))
    if not any(lines for _, lines, _ in drawn):
        logged = sorted({k for records in runs.values() for r in records for k in r})
        raise ValueError(f"nothing to plot: no record has '{x}' and one of the keys; logged "
                         f"keys: {logged}")
    kept = [(title, [line for line in lines if is_informative(line[1])], ylabel)
            for title, lines, ylabel in drawn]
    kept = [panel for panel in kept if panel[1]] or [panel for panel in drawn if panel[1]]

    columns = min(columns, len(kept))
    rows = math.ceil(len(kept) / columns)
    heights = [FIRST_ROW_HEIGHT] + [1.0] * (rows - 1)
    fig = Figure(figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * sum(heights)
                          + (0.4 if title else 0.0)), layout="constrained")
    grid = fig.add_gridspec(rows, columns, height_ratios=heights)
    for i, (panel_title, lines, ylabel) in enumerate(kept):
        ax = fig.add_subplot(grid[i // columns, i % columns])
        for xs, ys, label in lines:
            _draw_series(ax, xs, ys, label)
        ax.set_title(panel_title, fontsize="medium")
        if all(isinstance(v, int) for xs, _, _ in lines for v in xs):  # steps, iterations
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if i + columns >= len(kept):  # nothing below it: this panel carries the x label
            ax.set_xlabel(xlabel or X_LABELS.get(x, x))
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title, fontweight="bold")
    return _save(fig, out_png)


def plot_curves(log_path_or_records, keys, out_png, title=None, x="step"):
    """One panel per key, value against `x`, in one column; returns out_png.

    Several runs given as {label: log} share each panel, with a legend. A key that no record has
    is an error (likely a typo)."""
    runs = _load_runs(log_path_or_records)
    for key in keys:
        if not any(series_points(records, key, x)[0] for records in runs.values()):
            available = sorted({k for records in runs.values() for r in records for k in r})
            raise ValueError(f"no record has both '{x}' and '{key}'; logged keys: {available}")
    return plot_panels(runs, [(key.replace("_", " "), [key], key) for key in keys],
                       out_png, title=title, x=x, columns=1)


# -------------------------------------------------------------------------------------------
# One preset per training script: the panels that tell its story, most important first.

TRAIN, HELD_OUT = "training batch", "held-out"
LEARNING_RATE = ("learning rate", ["lr"], "learning rate")
GRADIENT_NORM = ("gradient norm", ["grad_norm"], "norm before clipping")


def plot_pretrain(log_path, out_png, title="pretraining"):
    """train_pretrain.py: the loss on training and held-out text, perplexity, the schedule."""
    return plot_panels(log_path, [
        ("next-token loss", [("loss", TRAIN), ("val_loss", HELD_OUT)], "nats per token"),
        ("held-out perplexity", [("val_ppl", HELD_OUT)], "perplexity"),
        LEARNING_RATE, GRADIENT_NORM,
    ], out_png, title=title)


def plot_sft(log_path, out_png, title="SFT"):
    """train_sft.py: the loss on the assistant's tokens of training and held-out chats."""
    return plot_panels(log_path, [
        ("loss on the assistant's tokens", [("loss", TRAIN), ("val_loss", "held-out chats")],
         "nats per token"),
        LEARNING_RATE, GRADIENT_NORM,
    ], out_png, title=title, columns=3)


def plot_reward_model(log_path, out_png, title="reward model"):
    """train_reward.py: how often the chosen answer scores higher, and the Bradley-Terry loss."""
    return plot_panels(log_path, [
        ("pairs ranked right", [("accuracy", TRAIN), ("val_accuracy", "held-out pairs")],
         "share of pairs"),
        ("Bradley-Terry loss", [("loss", TRAIN), ("val_loss", "held-out pairs")],
         "nats per pair"),
        LEARNING_RATE, GRADIENT_NORM,
    ], out_png, title=title)


def plot_ppo(log_path, out_png, title="PPO"):
    """train_rlhf.py: the proxy reward PPO climbs and the gold reward it is meant to raise, on one
    axis, with the KL to the SFT model beside them; then the answers' length and PPO's health."""
    return plot_panels(log_path, [
        ("reward of the answers", [("proxy_reward", "proxy (reward model), rollouts"),
                                   ("gold_reward", "gold (rater), rollouts"),
                                   ("eval_proxy_reward", "proxy, greedy held-out"),
                                   ("eval_gold_reward", "gold, greedy held-out")],
         "mean reward per answer"),
        ("distance from the SFT model", [("kl", "KL (k1)"), ("kl_k3", "KL (k3)")],
         "nats per answer"),
        ("answer length", [("response_length", "rollouts")], "tokens per answer"),
        ("policy entropy", [("entropy", "rollouts")], "nats per token"),
        ("clipped updates", [("clip_fraction", "share of tokens clipped")], "share of tokens"),
        ("critic", [("value_loss", "value loss")], "squared error"),
        ("KL coefficient", [("beta", "beta")], "beta"),
    ], out_png, title=title, x="iteration")


def plot_dpo(log_path, out_png, title="DPO"):
    """train_dpo.py: the implied rewards of the chosen and rejected answers on one axis, how often
    they rank a pair right (training and held-out) beside them; then margin, KL, loss and how the
    gold rater judges the greedy answers."""
    return plot_panels(log_path, [
        ("implied rewards", [("chosen", "chosen answer"), ("rejected", "rejected answer")],
         "beta times log-ratio to the SFT model"),
        ("pairs ranked right", [("accuracy", TRAIN), ("eval_accuracy", "held-out pairs")],
         "share of pairs"),
        ("reward margin", [("margin", "chosen - rejected")], "implied reward gap"),
        ("distance from the SFT model", [("kl", "KL, sampled answers")], "nats per answer"),
        ("DPO loss", [("loss", TRAIN), ("eval_loss", "held-out pairs")], "nats per pair"),
        ("greedy held-out answers", [("gold_reward", "gold reward"),
                                     ("win_rate", "win rate vs SFT")], "reward or share"),
    ], out_png, title=title)


# -------------------------------------------------------------------------------------------
# Points rather than curves


def plot_xy(series, out_png, xlabel, ylabel, title=None, scatter=False):
    """Plot {label: (xs, ys)} on one set of axes (lines, or points if scatter); returns out_png."""
    fig = Figure(figsize=XY_SIZE)
    ax = fig.subplots()
    for label, (xs, ys) in series.items():
        if scatter:
            ax.scatter(xs, ys, label=label, s=12)
        else:
            ax.plot(xs, ys, label=label, marker=".")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_reward_vs_kl(log_path, out_png):
    """PPO's rollouts (records of train_rlhf.py's log with a "kl"), one point each: the proxy
    reward and, where logged, the gold reward against the KL to the reference.

    The proxy keeps rising with the distance travelled from the reference; the gold reward rises,
    peaks and, once the policy exploits the reward model's mistakes, falls (Gao et al. 2022,
    "Scaling Laws for Reward Model Overoptimization")."""
    records = [r for r in read_run(log_path) if "kl" in r]
    if not records:
        raise ValueError(f"{log_path}: no rollout records (none has a \"kl\")")
    series = {"proxy (reward model)": "proxy_reward", "gold (rater)": "gold_reward"}
    return plot_xy({label: ([r["kl"] for r in records], [r[key] for r in records])
                    for label, key in series.items() if key in records[0]},
                   out_png, xlabel="KL to the reference (nats per answer)",
                   ylabel="reward of the rollouts", title="reward vs KL", scatter=True)
