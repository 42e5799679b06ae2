"""Plots of training logs: one panel per logged quantity, saved as PNG.

    plot_curves("out/pretrain_log.jsonl", ["loss", "lr"], "out/pretrain.png")
    plot_curves({"with KL": "out/a.jsonl", "no KL": "out/b.jsonl"}, ["gold_reward", "kl"], "kl.png")
    plot_xy({"beta=0.1": (kls, rewards)}, "reward_vs_kl.png", xlabel="KL", ylabel="gold reward")
    plot_reward_vs_kl("out/rlhf_log.jsonl", "out/rlhf_reward_vs_kl.png")   # PPO's rollouts

We draw on matplotlib Figure objects directly (not pyplot), so nothing here changes the global
backend: a notebook keeps showing its inline plots, and a headless machine needs no display.
"""

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nanollm.logs import read_jsonl

PANEL_WIDTH, PANEL_HEIGHT = 7.0, 2.6  # inches per subplot


def _load_runs(logs):
    """A path, a list of records, or {label: path or records} -> {label: records}."""
    if isinstance(logs, dict):
        return {label: _load_runs(source)[None] for label, source in logs.items()}
    records = read_jsonl(logs) if isinstance(logs, (str, os.PathLike)) else list(logs)
    return {None: records}


def _save(fig, out_png):
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    FigureCanvasAgg(fig)  # attaches a renderer; Figure.savefig needs one
    fig.savefig(out_png, dpi=120)
    return out_png


def plot_curves(log_path_or_records, keys, out_png, title=None, x="step"):
    """One subplot per key, value against `x`, from JSONL log records; returns out_png.

    Records lacking the key (or `x`) are skipped, since different lines log different things (train
    loss every step, validation loss every few hundred). Several runs given as {label: log}
    share each panel, with a legend. A key that no record has is an error (likely a typo).
    """
    runs = _load_runs(log_path_or_records)
    fig = Figure(figsize=(PANEL_WIDTH, PANEL_HEIGHT * len(keys)))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        found = False
        for label, records in runs.items():
            points = [(r[x], r[key]) for r in records if r.get(x) is not None
                      and r.get(key) is not None]
            if points:
                found = True
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=label, marker="." if len(points) < 30 else None)
        if not found:
            available = sorted({k for records in runs.values() for r in records for k in r})
            raise ValueError(f"no record has both '{x}' and '{key}'; logged keys: {available}")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend()
    axes[-1].set_xlabel(x)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_xy(series, out_png, xlabel, ylabel, title=None, scatter=False):
    """Plot {label: (xs, ys)} on one set of axes (lines, or points if scatter); returns out_png."""
    fig = Figure(figsize=(PANEL_WIDTH, PANEL_WIDTH * 0.6))
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
    records = [r for r in read_jsonl(log_path) if "kl" in r]
    if not records:
        raise ValueError(f"{log_path}: no rollout records (none has a \"kl\")")
    series = {"proxy (reward model)": "proxy_reward", "gold (rater)": "gold_reward"}
    return plot_xy({label: ([r["kl"] for r in records], [r[key] for r in records])
                    for label, key in series.items() if key in records[0]},
                   out_png, xlabel="KL to the reference (nats per answer)",
                   ylabel="reward of the rollouts", title="reward vs KL", scatter=True)
