"""Plots from JSONL logs: files are written, missing keys are skipped per record, constant and
absent series are left out, typos fail, and each script's preset draws its story."""

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from nanollm.logs import JsonlLogger
from nanollm.plot import (plot_curves, plot_dpo, plot_panels, plot_ppo, plot_pretrain,
                          plot_reward_model, plot_reward_vs_kl, plot_sft, plot_xy, running_mean)

PNG_MAGIC = b"\x89PNG"


def _log(path, with_val=True):
    log = JsonlLogger(str(path))
    for step in range(20):
        log.log(step=step, loss=3.0 - 0.1 * step, lr=1e-3)
        if with_val and step % 5 == 0:
            log.log(step=step, val_loss=3.1 - 0.1 * step)
    return str(path)


def test_plot_curves_from_one_log(tmp_path):
    backend = matplotlib.get_backend()
    out = plot_curves(_log(tmp_path / "a.jsonl"), ["loss", "val_loss"],
                      str(tmp_path / "p" / "a.png"), title="pretraining")
    assert open(out, "rb").read(4) == PNG_MAGIC
    assert matplotlib.get_backend() == backend  # the global backend is left alone


def test_plot_curves_overlays_runs_and_records(tmp_path):
    records = [{"step": 0, "kl": 0.0}, {"step": 1, "kl": 0.5}, {"step": 2}]
    out = plot_curves({"with KL": records, "no KL": _log(tmp_path / "b.jsonl")}, ["kl"],
                      str(tmp_path / "kl.png"))
    assert open(out, "rb").read(4) == PNG_MAGIC


def test_plot_curves_unknown_key_lists_logged_keys(tmp_path):
    with pytest.raises(ValueError, match="logged keys: .*'loss'"):
        plot_curves(_log(tmp_path / "c.jsonl"), ["los"], str(tmp_path / "c.png"))


def test_plot_xy(tmp_path):
    series = {"beta 0.1": ([0.1, 0.5, 1.0], [0.2, 0.6, 0.7]), "beta 0.0": ([2, 4], [0.9, 0.3])}
    out = plot_xy(series, str(tmp_path / "xy.png"), xlabel="KL", ylabel="gold reward", scatter=True)
    assert open(out, "rb").read(4) == PNG_MAGIC


def test_plot_reward_vs_kl_reads_only_rollout_records(tmp_path):
    # train_rlhf.py's log mixes rollout records (with "kl") and evaluation records (without)
    log = JsonlLogger(str(tmp_path / "rlhf_log.jsonl"))
    log.log(iteration=0, eval_gold_reward=0.4)
    for i in range(5):
        log.log(iteration=i, kl=0.1 * i, proxy_reward=0.2 * i, gold_reward=0.5 - 0.1 * i)
    out = plot_reward_vs_kl(str(tmp_path / "rlhf_log.jsonl"), str(tmp_path / "rk.png"))
    assert open(out, "rb").read(4) == PNG_MAGIC
    proxy_only = [{"iteration": 0, "kl": 0.0, "proxy_reward": 0.1}]  # a file's prompts: no gold
    JsonlLogger(str(tmp_path / "p.jsonl")).log(proxy_only[0])
    assert open(plot_reward_vs_kl(str(tmp_path / "p.jsonl"), str(tmp_path / "p.png")),
                "rb").read(4) == PNG_MAGIC
    with pytest.raises(ValueError, match="no rollout records"):
        plot_reward_vs_kl(_log(tmp_path / "d.jsonl"), str(tmp_path / "none.png"))


class SavedFigures:
    """Catches every figure plot.py saves, to count its panels and read their legends."""

    def __init__(self, monkeypatch):
        self.figures = []
        original = Figure.savefig

        def savefig(fig, *args, **kwargs):
            self.figures.append(fig)
            return original(fig, *args, **kwargs)

        monkeypatch.setattr(Figure, "savefig", savefig)

    def panels(self):
        """{panel title: [legend labels, or the one line's label]} of the last saved figure."""
        return {ax.get_title(): [line.get_label() for line in ax.get_lines()
                                 if not line.get_label().startswith("_")]
                for ax in self.figures[-1].axes}


def test_plot_panels_leaves_out_constant_and_absent_series(tmp_path, monkeypatch):
    saved = SavedFigures(monkeypatch)
    records = [{"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-3, "beta": 0.1} for s in range(10)]
    records += [{"step": s, "val_loss": 3.2 - 0.1 * s} for s in (0, 5, 9)]
    out = plot_panels(records, [
        ("loss", [("loss", "training batch"), ("val_loss", "held-out"), "missing_key"],
         "nats per token"),
        ("learning rate", ["lr"], "learning rate"),              # constant: dropped
        ("coefficients", ["beta", "also_missing"], "beta"),      # constant and absent: dropped
    ], str(tmp_path / "panels.png"), title="a run")
    assert open(out, "rb").read(4) == PNG_MAGIC
    assert saved.panels() == {"loss": ["training batch", "held-out"]}
    ax = saved.figures[-1].axes[0]
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "nats per token"


def test_plot_panels_lays_panels_out_in_a_grid(tmp_path, monkeypatch):
    saved = SavedFigures(monkeypatch)
    records = [{"step": s, **{f"k{i}": s * i for i in range(1, 6)}} for s in range(5)]
    panels = [(f"panel {i}", [f"k{i}"], "value") for i in range(1, 6)]
    plot_panels(records, panels, str(tmp_path / "grid.png"), columns=2)
    axes = saved.figures[-1].axes
    assert len(axes) == 5
    columns = {round(ax.get_position().x0, 2) for ax in axes}
    rows = {round(ax.get_position().y0, 2) for ax in axes}
    assert len(columns) == 2 and len(rows) == 3
    # only the panels with nothing below them carry the x label
    labelled = [ax.get_title() for ax in axes if ax.get_xlabel()]
    assert labelled == ["panel 4", "panel 5"]


def test_plot_panels_with_no_key_logged_lists_the_logged_keys(tmp_path):
    records = [{"step": s, "lr": 1e-3} for s in range(5)]
    with pytest.raises(ValueError, match="nothing to plot.*'lr'"):
        plot_panels(records, [("loss", ["los"], "loss")], str(tmp_path / "none.png"))


def test_a_run_too_short_to_move_keeps_its_constant_series(tmp_path, monkeypatch):
    saved = SavedFigures(monkeypatch)
    records = [{"step": 0, "loss": 5.0, "lr": 1e-3}, {"step": 1, "val_loss": 4.9}]
    plot_panels(records, [("loss", ["loss", "val_loss"], "nats"), ("lr", ["lr"], "lr"),
                          ("absent", ["beta"], "beta")], str(tmp_path / "short.png"))
    assert saved.panels() == {"loss": ["loss", "val loss"], "lr": ["lr"]}


def test_running_mean_against_a_loop():
    ys = np.random.default_rng(0).normal(size=40)
    want = [np.mean(ys[max(0, i - 4):i + 1]) for i in range(40)]
    assert running_mean(ys, 5) == pytest.approx(want)


def test_presets_draw_each_scripts_story(tmp_path, monkeypatch):
    saved = SavedFigures(monkeypatch)
    log = JsonlLogger(str(tmp_path / "pretrain.jsonl"))
    for s in range(10):
        log.log(step=s, loss=5 - 0.1 * s, lr=1e-3 * (s + 1), grad_norm=1 + s % 3,
                tokens_per_s=900)
    for s in (5, 10):
        log.log(step=s, val_loss=4.8 - 0.01 * s, val_ppl=120 - s)
    plot_pretrain(log.path, str(tmp_path / "pretrain.png"))
    assert list(saved.panels()) == ["next-token loss", "held-out perplexity", "learning rate",
                                    "gradient norm"]
    plot_sft(log.path, str(tmp_path / "sft.png"))
    assert len(saved.figures[-1].axes) == 3

    ppo = JsonlLogger(str(tmp_path / "rlhf.jsonl"))
    for i in range(8):  # beta fixed: no panel for it
        ppo.log(iteration=i, proxy_reward=0.1 * i, gold_reward=0.5 - 0.01 * i, kl=0.2 * i,
                kl_k3=0.19 * i, beta=0.05, response_length=20 - i, entropy=1 - 0.05 * i,
                clip_fraction=0.1 + 0.01 * (i % 2), value_loss=1 / (i + 1))
    plot_ppo(ppo.path, str(tmp_path / "ppo.png"))
    panels = saved.panels()
    assert list(panels)[:2] == ["reward of the answers", "distance from the SFT model"]
    assert panels["reward of the answers"] == ["proxy (reward model), rollouts",
                                               "gold (rater), rollouts"]
    assert "KL coefficient" not in panels and len(panels) == 6
    assert saved.figures[-1].axes[0].get_xlabel() == ""  # the x label sits on the bottom row

    dpo = JsonlLogger(str(tmp_path / "dpo.jsonl"))
    for s in range(6):
        dpo.log(step=s, loss=0.69 - 0.05 * s, accuracy=0.5 + 0.05 * s, margin=0.1 * s,
                chosen=0.05 * s, rejected=-0.05 * s, lr=1e-6, grad_norm=3.0 - 0.1 * s)
    for s in (3, 6):
        dpo.log(step=s, eval_loss=0.6, eval_accuracy=0.5 + 0.01 * s, kl=0.3 * s,
                win_rate=0.5 + 0.02 * s, gold_reward=0.4 + 0.01 * s)
    plot_dpo(dpo.path, str(tmp_path / "dpo.png"))
    panels = saved.panels()
    assert panels["implied rewards"] == ["chosen answer", "rejected answer"]
    assert panels["pairs ranked right"] == ["training batch", "held-out pairs"]
    assert panels["DPO loss"] == ["training batch"]  # the held-out loss never moved

    rm = JsonlLogger(str(tmp_path / "reward.jsonl"))
    for s in range(6):
        rm.log(step=s, loss=0.7 - 0.1 * s, accuracy=0.5 + 0.05 * s, grad_norm=1.0 + s, lr=1e-4)
    for s in (3, 6):
        rm.log(step=s, val_accuracy=0.6 + 0.01 * s, val_loss=0.6 - 0.01 * s)
    plot_reward_model(rm.path, str(tmp_path / "reward.png"))
    assert list(saved.panels()) == ["pairs ranked right", "Bradley-Terry loss", "gradient norm"]
    for name in ("pretrain", "sft", "ppo", "dpo", "reward"):
        assert open(tmp_path / f"{name}.png", "rb").read(4) == PNG_MAGIC
