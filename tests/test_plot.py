"""Plots from JSONL logs: files are written, missing keys are skipped per record, typos fail."""

import matplotlib
import pytest

from nanollm.logs import JsonlLogger
from nanollm.plot import plot_curves, plot_reward_vs_kl, plot_xy

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
