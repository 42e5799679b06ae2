"""RLHF: the rollout helpers on tiny models, then train_rlhf.py (PPO) run as a user would."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from scripts import run_script, smoke_chain

from nanollm.checkpoint import load_checkpoint
from nanollm.logs import read_jsonl
from nanollm.logprobs import sequence_logprobs
from nanollm.model import GPT, GPTConfig
from nanollm.ppo import Critic, state_values
from nanollm.reward import RewardModel
from nanollm.rollout import rollout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)
PAD, STOP = 60, 7
LOGGED_EVERY_ITERATION = ("proxy_reward", "gold_reward", "kl", "response_length",
                          "clip_fraction", "value_loss", "entropy", "beta")


def tiny(seed, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


# -----------------------------------------------------------------------------
# Library pieces: rollouts


def test_rollout_scores_exactly_the_sampled_tokens():
    policy, reference = tiny(0), tiny(1)
    critic, reward_model = Critic(tiny(2)).eval(), RewardModel(tiny(3)).eval()
    torch.nn.init.normal_(critic.head.weight)
    torch.nn.init.normal_(reward_model.head.weight)
    prompts = [[1, 2, 3], [4, 5], [6, 8, 9, 10, 11]]
    batch = rollout(policy, reference, critic, reward_model, prompts, max_new_tokens=8,
                    stop_ids=[STOP], pad_id=PAD, generator=torch.Generator().manual_seed(0))
    mask = batch.response_mask
    assert mask.sum(1).min() >= 1 and not (mask & ~batch.pad_mask).any()
    torch.testing.assert_close(batch.logprobs, sequence_logprobs(policy, batch.ids,
                                                                 batch.pad_mask))
    torch.testing.assert_close(batch.ref_logprobs, sequence_logprobs(reference, batch.ids,
                                                                     batch.pad_mask))
    torch.testing.assert_close(batch.values, state_values(critic, batch.ids, batch.pad_mask))
    with torch.no_grad():
        expected = reward_model(batch.ids, batch.pad_mask, mask)  # (B,)
    torch.testing.assert_close(batch.scores, expected)
    assert (batch.rewards[~mask] == 0).all()  # the plain reward sits on the last answer token
    assert batch.finished.tolist() == [row[-1] == STOP for row in batch.responses()]
    assert 0 < batch.entropy < math.log(TINY["vocab_size"]) + 1e-4


# -----------------------------------------------------------------------------
# The script, on top of the smoke pretraining and SFT stages


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    """pretrain -> SFT -> reward model -> PPO, all in smoke mode, in one folder (built once)."""
    return smoke_chain(tmp_path_factory.mktemp("rlhf"), "train_sft.py", "train_reward.py",
                       "train_rlhf.py")


def test_without_a_reward_model_it_stops_and_names_the_script_that_makes_one(tmp_path):
    out = subprocess.run([sys.executable, "train_rlhf.py", "--smoke", "--out_dir", tmp_path],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    message = out.stderr.strip()
    assert "\n" not in message and "train_reward.py" in message and str(tmp_path) in message


def test_ppo_moves_the_policy_logs_every_iteration_and_saves_stage_rlhf(smoke_dir):
    sft, rlhf = (load_checkpoint(smoke_dir, s) for s in ("sft", "rlhf"))
    assert rlhf["stage"] == "rlhf" and rlhf["step"] == rlhf["train_config"]["ppo_iters"]
    changed = [k for k in sft["model"] if not torch.equal(sft["model"][k], rlhf["model"][k])]
    assert len(changed) > len(sft["model"]) // 2
    records = read_jsonl(smoke_dir / "rlhf_log.jsonl")
    iterations = [r for r in records if "proxy_reward" in r]
    assert [r["iteration"] for r in iterations] == list(range(rlhf["step"]))
    for r in iterations:
        assert all(k in r and math.isfinite(r[k]) for k in LOGGED_EVERY_ITERATION), r
    assert iterations[0]["kl"] == 0.0  # the first rollout comes from the reference itself
    metrics = rlhf["metrics"]
    for model in ("sft", "rlhf"):
        assert {"proxy_reward", "gold_reward", "accuracy", "mean_words",
                "flattery_rate"} <= set(metrics[model]["held_out"])
    assert any("eval_gold_reward" in r for r in records)
    for png in ("rlhf_curves.png", "rlhf_reward_vs_kl.png"):
        assert os.path.getsize(smoke_dir / png) > 1000


def test_kl_in_the_loss_with_an_adaptive_beta(smoke_dir, tmp_path):
    run_script("train_rlhf.py", "--smoke", "--sft_dir", smoke_dir, "--reward_dir", smoke_dir,
        "--out_dir", tmp_path, "--kl_in_loss", "--target_kl", 0.01, "--kl_horizon", 16,
        "--ppo_iters", 2)
    betas = [r["beta"] for r in read_jsonl(tmp_path / "rlhf_log.jsonl") if "beta" in r]
    assert len(betas) == 2 and betas[1] != betas[0]  # the controller moved beta
    assert load_checkpoint(tmp_path, "rlhf")["stage"] == "rlhf"
    assert not (tmp_path / "reward.pt").exists()  # read from --reward_dir, not copied


def test_prompts_of_a_preference_file_report_proxy_and_kl_only(smoke_dir, tmp_path):
    # a user's prompts: PPO answers them, and no gold rater can judge those answers
    lines = [json.dumps({"prompt": f"What is {a} plus {b}?", "chosen": f"{a + b}.",
                         "rejected": f"I think it might be {a + b + 1}."})
             for a in range(6) for b in range(7)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    run_script("train_rlhf.py", "--smoke", "--sft_dir", smoke_dir, "--reward_dir", smoke_dir,
        "--out_dir", tmp_path, "--preferences", tmp_path / "pairs.jsonl", "--ppo_iters", 2)
    metrics = load_checkpoint(tmp_path, "rlhf")["metrics"]
    assert set(metrics) == {"sft", "rlhf"} and set(metrics["rlhf"]) == {"held_out"}
    assert "proxy_reward" in metrics["rlhf"]["held_out"]
    assert "gold_reward" not in metrics["rlhf"]["held_out"]
    records = [r for r in read_jsonl(tmp_path / "rlhf_log.jsonl") if "kl" in r]
    assert len(records) == 2 and not any("gold_reward" in r for r in records)
    assert os.path.getsize(tmp_path / "rlhf_reward_vs_kl.png") > 1000


def test_lora_ppo_trains_the_adapted_matrices_only(smoke_dir, tmp_path):
    for stage in ("sft", "reward"):
        os.symlink(smoke_dir / f"{stage}.pt", tmp_path / f"{stage}.pt")
    args = ["--smoke", "--out_dir", tmp_path, "--lora_rank", 4, "--lr", 1e-2]
    out = subprocess.run([sys.executable, "train_rlhf.py", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "LoRA: training" in out.stdout
    records = [r for r in read_jsonl(tmp_path / "rlhf_log.jsonl") if "kl" in r]
    assert records[0]["kl"] == 0.0  # the reference is the policy's base: the same model at first
    sft, rlhf = (load_checkpoint(tmp_path, stage)["model"] for stage in ("sft", "rlhf"))
    changed = {key for key in sft if not torch.equal(sft[key], rlhf[key])}
    assert changed and all(key.endswith("attn.c_attn.weight") for key in changed)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_a_verifiable_reward_needs_no_reward_model(smoke_dir, tmp_path, algo):
    os.symlink(smoke_dir / "sft.pt", tmp_path / "sft.pt")  # no reward.pt in the folder
    out = run_script("train_rlhf.py", "--smoke", "--out_dir", tmp_path, "--algo", algo,
                     "--reward", "verifiable", "--lr", 1e-2)
    assert "peak memory" in out
    records = [r for r in read_jsonl(tmp_path / "rlhf_log.jsonl") if "kl" in r]
    assert len(records) == 3 and records[0]["kl"] == 0.0
    for r in records:  # the proxy is the share of right answers: the accuracy, exactly
        assert r["proxy_reward"] == pytest.approx(r["accuracy"])
    sft, rlhf = (load_checkpoint(tmp_path, stage) for stage in ("sft", "rlhf"))
    changed = any(not torch.equal(sft["model"][k], rlhf["model"][k]) for k in sft["model"])
    assert rlhf["peak_memory_mb"] > 0
    if algo == "grpo":
        # the smoke model never answers right: every group scores all 0, every advantage is 0,
        # and at the reference the KL term's gradient is 0 too, so nothing moves at all
        assert all(r["silent_groups"] == 1 and r["accuracy"] == 0 for r in records)
        assert not changed
    else:  # PPO's critic (from the SFT trunk) still predicts nonzero values: advantages move
        assert "silent_groups" not in records[0] and changed


def test_grpo_with_the_reward_model_moves_the_policy_without_a_critic(smoke_dir, tmp_path):
    run_script("train_rlhf.py", "--smoke", "--sft_dir", smoke_dir, "--reward_dir", smoke_dir,
               "--out_dir", tmp_path, "--algo", "grpo", "--lr", 1e-2)
    records = [r for r in read_jsonl(tmp_path / "rlhf_log.jsonl") if "kl" in r]
    assert records[0]["kl"] == 0.0 and records[-1]["kl"] != 0.0
    assert all(r["value_loss"] == 0 and r["silent_groups"] < 1 for r in records)
    sft, rlhf = (load_checkpoint(d, stage)["model"] for d, stage in ((smoke_dir, "sft"),
                                                                     (tmp_path, "rlhf")))
    assert any(not torch.equal(sft[k], rlhf[k]) for k in sft)
    assert not (tmp_path / "rlhf.unfinished.pt").exists()


@pytest.mark.parametrize("flags, message", [
    (["--algo", "grpo", "--group_size", 3], "not a multiple of --group_size 3"),
    (["--reward", "verifiable", "--preferences", "pairs.jsonl"], "use --reward model"),
])
def test_grpo_and_verifiable_flags_are_checked(tmp_path, flags, message):
    out = subprocess.run([sys.executable, "train_rlhf.py", "--smoke", "--out_dir", tmp_path,
                          *map(str, flags)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and message in out.stderr
