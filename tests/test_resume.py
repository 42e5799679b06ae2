"""Every resume is exact: a run stopped part way (--stop_at, as Ctrl-C stops it, between two
steps) and continued with --resume ends with the same weights, to the last bit, as a run that was
never stopped, for SFT, the reward model, PPO and DPO (pretraining: tests/test_train_pretrain.py).
Dropout is on where the script has it, so the random state must be restored too."""

import contextlib
import shutil

import pytest
import torch

from scripts import run_inprocess

# script, stage, extra flags, where to stop
RUNS = {
    "sft": ("train_sft.py", "sft", ["--dropout", "0.1"], 12),
    "reward": ("train_reward.py", "reward", ["--steps", "24", "--eval_every", "8"], 13),
    "rlhf": ("train_rlhf.py", "rlhf", [], 2),
    "dpo": ("train_dpo.py", "dpo", ["--dropout", "0.1", "--max_steps", "12"], 7),
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """pretrain.pt, sft.pt, reward.pt and pairs.jsonl at smoke size."""
    out = tmp_path_factory.mktemp("stages")
    chain = [("train_pretrain.py", ["--data_dir", out / "data"]), ("train_sft.py", []),
             ("train_reward.py", ["--steps", "10"])]
    with contextlib.chdir(out):
        for script, args in chain:
            code, output = run_inprocess(script, ["--smoke", "--out_dir", out, *args])
            assert code == 0, output[-3000:]
    return out


def train(stages, folder, script, stage, flags):
    """Copy the stages a script starts from into folder, run it there; the exit status."""
    folder.mkdir()
    for name in ("pretrain.pt", "sft.pt", "reward.pt", "pairs.jsonl"):
        if name != f"{stage}.pt":
            shutil.copy(stages / name, folder / name)
    code, output = run_inprocess(script, ["--smoke", "--out_dir", folder, *flags])
    assert code == 0, output[-3000:]
    return output


@pytest.mark.parametrize("name", RUNS)
def test_a_stopped_and_resumed_run_equals_a_straight_one(stages, tmp_path, name):
    script, stage, flags, stop_at = RUNS[name]
    train(stages, tmp_path / "straight", script, stage, flags)
    output = train(stages, tmp_path / "halves", script, stage, [*flags, "--stop_at", stop_at])
    halves = tmp_path / "halves"
    assert "stopped after" in output and (halves / f"{stage}.unfinished.pt").exists()
    assert not (halves / f"{stage}.pt").exists()  # an unfinished run never writes the stage
    code, output = run_inprocess(script, ["--smoke", "--out_dir", halves, *flags, "--resume"])
    assert code == 0, output[-3000:]
    assert not (halves / f"{stage}.unfinished.pt").exists()  # finished: progress file gone
    straight = torch.load(tmp_path / "straight" / f"{stage}.pt", weights_only=True)
    resumed = torch.load(halves / f"{stage}.pt", weights_only=True)
    assert resumed["step"] == straight["step"]
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
