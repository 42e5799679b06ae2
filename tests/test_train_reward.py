"""train_reward.py run as a user would, on top of the smoke pretraining and SFT stages."""

import json
import math
import os

import pytest

from scripts import run_script, smoke_chain

from nanollm.checkpoint import load_checkpoint
from nanollm.logs import read_jsonl
from nanollm.reward import load_reward_model


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    """pretrain -> SFT -> reward model, all in smoke mode, in one folder (built once)."""
    return smoke_chain(tmp_path_factory.mktemp("reward"), "train_sft.py", "train_reward.py")


def test_reward_model_learns_from_a_zero_start_and_is_saved(smoke_dir):
    losses = [r["loss"] for r in read_jsonl(smoke_dir / "reward_log.jsonl") if "loss" in r]
    # the head starts at zero: every pair is a coin flip, loss ln 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert sum(losses[-10:]) / 10 < math.log(2) - 0.05
    state = load_checkpoint(smoke_dir, "reward")
    assert state["stage"] == "reward" and state["step"] == state["train_config"]["steps"]
    assert os.path.getsize(smoke_dir / "reward_curves.png") > 1000
    # the textbook model: the SFT trunk and one head, nothing else
    sft = load_checkpoint(smoke_dir, "sft")
    assert set(state["model"]) == {f"gpt.{k}" for k in sft["model"]} | {"head.weight",
                                                                         "head.bias"}
    assert state["model_config"] == sft["model_config"] and not state["likelihood"]
    assert state["model"]["head.weight"].any()


def test_held_out_accuracy_overall_and_by_kind_of_pair_is_stored(smoke_dir):
    metrics = load_checkpoint(smoke_dir, "reward")["metrics"]
    by_kind = metrics["val_accuracy_by_kind"]
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert len(by_kind) > 3 and all(" > " in kind for kind in by_kind)
    assert all(0.0 <= accuracy <= 1.0 for accuracy in by_kind.values())
    assert "gold_accuracy" not in metrics  # labelled by the default rater: it is the gold one
    # the overall accuracy is the by-kind accuracies weighted by their (unstored) counts
    assert min(by_kind.values()) <= metrics["val_accuracy"] <= max(by_kind.values())


def test_the_reward_is_normalised_on_the_training_answers(smoke_dir):
    # normalise_reward_head ran: the head's bias took the shift, so it is no longer 0
    model, _, _ = load_reward_model(smoke_dir)
    assert model.head.bias.item() != 0.0 and not model.likelihood


def test_the_likelihood_variant_learns_its_weight(smoke_dir, tmp_path):
    run_script("train_reward.py", "--smoke", "--sft_dir", smoke_dir, "--out_dir", tmp_path,
        "--rm_likelihood", "--steps", 20)
    state = load_checkpoint(tmp_path, "reward")
    assert state["likelihood"]
    # the likelihood weight (0 at the start) is learned: its shared part and its per-token part
    assert state["model"]["likelihood_weight.bias"].item() != 0.0
    assert state["model"]["likelihood_weight.weight"].any()
    model, _, _ = load_reward_model(tmp_path)
    assert model.likelihood


def test_a_preference_file_trains_on_95_percent_and_holds_out_5(smoke_dir, tmp_path):
    lines = [json.dumps({"prompt": f"What is {a} plus {b}?", "chosen": f"{a + b}.",
                         "rejected": f"I think it might be {a + b + 1}."})
             for a in range(6) for b in range(7)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    out = run_script("train_reward.py", "--smoke", "--sft_dir", smoke_dir, "--out_dir", tmp_path,
              "--preferences", tmp_path / "pairs.jsonl", "--steps", 10)
    assert "40 pairs" in out  # 42 pairs: 2 held out (5%), 40 to train on
    metrics = load_checkpoint(tmp_path, "reward")["metrics"]
    assert set(metrics) == {"val_accuracy"}  # a file's pairs have no kinds and no gold rater
