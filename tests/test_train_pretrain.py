"""train_pretrain.py and data preparation, run as a user would: as scripts, on tiny settings."""

import json
import os
import pydoc_data.topics
import subprocess
import sys
import urllib.error

import pytest
import torch

from nanollm.checkpoint import load_checkpoint
from nanollm.logs import read_jsonl
from nanollm.corpus import prepare_corpus
from nanollm.world import world_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, env=None):
    out = subprocess.run([sys.executable, *script.split(), *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    prepare_corpus("world", str(data_dir), vocab_size=300, verbose=False,
                   **world_corpus("world", 60_000))
    return data_dir


def pretrain(out_dir, data_dir, *args):
    return run("train_pretrain.py", "--smoke", "--out_dir", out_dir, "--data_dir", data_dir,
               "--log_every", 1, *args)


def losses(out_dir):
    return {r["step"]: r["loss"] for r in read_jsonl(os.path.join(out_dir, "pretrain_log.jsonl"))
            if "loss" in r}


def test_smoke_run_learns_and_writes_checkpoint_log_and_plot(tmp_path, smoke_data):
    pretrain(tmp_path, smoke_data)
    curve = losses(tmp_path)
    assert curve[max(curve)] < curve[0] - 1.0  # from ~ln(306) = 5.7 down by more than a nat
    state = load_checkpoint(tmp_path, "pretrain")
    assert state["step"] == 40 and "optimizer" in state and "tokenizer" in state
    torch.manual_seed(0)  # the script's initialisation, redone: training moved every matrix
    from nanollm.stages import model_from_state
    from nanollm.model import GPT, GPTConfig
    init = GPT(GPTConfig(**state["model_config"])).state_dict()
    trained = model_from_state(state).state_dict()
    assert all(not torch.equal(init[k], trained[k]) for k in trained if trained[k].dim() == 2)
    assert os.path.getsize(tmp_path / "pretrain_curves.png") > 1000


def test_resume_gives_the_same_losses_as_a_straight_run(tmp_path, smoke_data):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    pretrain(straight, smoke_data, "--max_steps", 20, "--dropout", 0.1)
    pretrain(halves, smoke_data, "--max_steps", 20, "--dropout", 0.1, "--stop_at", 10)
    assert max(losses(halves)) == 9
    pretrain(halves, smoke_data, "--max_steps", 20, "--dropout", 0.1, "--resume")
    a, b = losses(straight), losses(halves)
    assert sorted(a) == sorted(b) == list(range(20))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5), step


def test_torchrun_two_processes_match_one_process(tmp_path, smoke_data):
    single, double = tmp_path / "single", tmp_path / "double"
    common = ("--max_steps", 6, "--batch_size", 4, "--eval_every", 100)
    pretrain(single, smoke_data, *common, "--grad_accum", 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run("-m torch.distributed.run --standalone --nproc_per_node=2 train_pretrain.py", "--smoke",
        "--out_dir", double, "--data_dir", smoke_data, "--log_every", 1, *common, env=env)
    a, b = losses(single), losses(double)
    assert sorted(a) == sorted(b)
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4), step
    wa = load_checkpoint(single, "pretrain")["model"]
    wb = load_checkpoint(double, "pretrain")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_prepare_on_real_text_no_one_here_wrote(tmp_path):
    text_file = tmp_path / "topics.txt"
    text_file.write_text("\n\n".join(pydoc_data.topics.topics.values()))
    meta = prepare_corpus(str(text_file), str(tmp_path / "out"), vocab_size=400, verbose=False)
    assert meta["train_tokens"] > 10_000 and meta["dtype"] == "uint16"
    again = prepare_corpus(str(text_file), str(tmp_path / "out"), vocab_size=400, verbose=False)
    assert again == meta  # up to date: reused, not redone
    with open(tmp_path / "out" / "meta.json") as f:
        assert json.load(f)["source"] == str(text_file)


def test_prepare_errors_are_clear(tmp_path, monkeypatch):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        prepare_corpus(str(empty), str(tmp_path / "o1"), verbose=False)
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(ValueError, match="binary"):
        prepare_corpus(str(binary), str(tmp_path / "o2"), verbose=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(RuntimeError, match="offline"):
        prepare_corpus("shakespeare", str(tmp_path / "o3"), cache_dir=str(tmp_path / "c"),
                       verbose=False)
