"""Checkpoints: a full training state survives weights_only loading; saving is atomic."""

import dataclasses
import os
import random

import numpy as np
import pytest
import torch

from nanollm.errors import CheckpointError
from nanollm.checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, \
    set_rng_state


@dataclasses.dataclass
class TinyConfig:
    n_embd: int = 8
    dropout: float = 0.0
    attention: str = "sdpa"
    bias: bool = True


def _training_state():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(2, 8)).sum().backward()
    optimizer.step()  # fills the optimizer state (step counts, moments)
    data_generator = torch.Generator().manual_seed(7)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "config": dataclasses.asdict(TinyConfig()),
        "tokenizer": {"pattern": r"\p{L}+", "merges": [[1, 2], [3, 4]], "special": {"<|end|>": 9}},
        "step": 42,
        "best_val_loss": 1.5,
        "data_generator": data_generator.get_state(),
        "rng": rng_state(),
    }


def test_round_trip_with_weights_only(tmp_path):
    state = _training_state()
    path = save_checkpoint(str(tmp_path), "pretrain", state)
    assert path == checkpoint_path(str(tmp_path), "pretrain") == str(tmp_path / "pretrain.pt")
    loaded = load_checkpoint(str(tmp_path), "pretrain")  # uses weights_only=True
    for name, tensor in state["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    for key, moments in state["optimizer"]["state"].items():
        assert torch.equal(loaded["optimizer"]["state"][key]["exp_avg"], moments["exp_avg"])
    assert loaded["config"] == state["config"]
    assert loaded["tokenizer"] == state["tokenizer"]
    assert loaded["step"] == 42 and loaded["scaler"] == state["scaler"]
    assert torch.equal(loaded["data_generator"], state["data_generator"])
    assert not os.path.exists(path + ".tmp")


def test_rng_state_round_trip_restores_every_generator(tmp_path):
    save_checkpoint(str(tmp_path), "sft", {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    random.random(), np.random.rand(), torch.rand(3)  # move every generator on
    set_rng_state(load_checkpoint(str(tmp_path), "sft")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == expected


def test_failure_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    out_dir = str(tmp_path)
    save_checkpoint(out_dir, "sft", {"step": 1, "w": torch.ones(3)})
    before = open(checkpoint_path(out_dir, "sft"), "rb").read()

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(out_dir, "sft", {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()

    assert open(checkpoint_path(out_dir, "sft"), "rb").read() == before
    loaded = load_checkpoint(out_dir, "sft")
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert os.listdir(out_dir) == ["sft.pt"]  # the partial temporary file is gone


def test_saving_twice_replaces_the_checkpoint(tmp_path):
    save_checkpoint(str(tmp_path), "dpo", {"step": 1})
    save_checkpoint(str(tmp_path), "dpo", {"step": 2})
    assert load_checkpoint(str(tmp_path), "dpo")["step"] == 2


@pytest.mark.parametrize("stage, script", [("pretrain", "train_pretrain.py"),
                                           ("sft", "train_sft.py"),
                                           ("reward", "train_reward.py"),
                                           ("rlhf", "train_rlhf.py"),
                                           ("dpo", "train_dpo.py")])
def test_missing_stage_names_path_and_script(tmp_path, stage, script):
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(str(tmp_path), stage)
    message = str(err.value)
    assert script in message and checkpoint_path(str(tmp_path), stage) in message


def test_unknown_stage_lists_the_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="known stages"):
        load_checkpoint(str(tmp_path), "nonsense")



def test_a_checkpoint_of_another_stage_is_refused_by_name_or_by_path(tmp_path):
    save_checkpoint(str(tmp_path), "sft", {"stage": "sft", "step": 3})
    assert load_checkpoint(str(tmp_path), "sft")["step"] == 3
    # --init_from may name a path: its file name is the stage it must hold
    assert load_checkpoint("elsewhere", str(tmp_path / "sft"))["step"] == 3
    os.replace(tmp_path / "sft.pt", tmp_path / "pretrain.pt")
    with pytest.raises(CheckpointError, match="holds a 'sft' checkpoint .* not the 'pretrain'"):
        load_checkpoint(str(tmp_path), "pretrain")
    (tmp_path / "dpo.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="dpo.pt cannot be read"):
        load_checkpoint(str(tmp_path), "dpo")
