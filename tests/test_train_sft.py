"""SFT: batches with assistant-only targets, truncation counts, loaders, and smoke runs (full
fine-tuning, LoRA and QLoRA)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nanollm.chat import encode_content, render_conversation
from nanollm.checkpoint import load_checkpoint
from nanollm.logs import read_jsonl
from nanollm.formats import DataFormatError, load_chats
from nanollm.losses import IGNORE_INDEX, cross_entropy
from nanollm.model import GPT, GPTConfig
from nanollm.quantize import dequantize, quantize_groups
from nanollm.sft import sft_batch, sft_example, sft_examples
from nanollm.stages import load_stage
from nanollm.tokenizer import Tokenizer
from nanollm.world import World
from scripts import run_inprocess, smoke_chain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT = [{"role": "user", "content": "Capital of Peru?"},
        {"role": "assistant", "content": "Lima."}]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train("The capital of Peru is Lima. What is the capital of Peru? " * 20, 300)


def test_targets_are_next_tokens_where_learned_only(tok):
    ids, mask = render_conversation(tok, CHAT)
    inputs, targets = sft_example(ids, mask)
    assert inputs == ids[:-1]
    learned = [t for t in targets if t != IGNORE_INDEX]
    # the answer and its end of turn, no more
    assert learned == encode_content(tok, "Lima.") + [tok.end]
    for i, t in enumerate(targets):
        assert t == (ids[i + 1] if mask[i + 1] else IGNORE_INDEX)


def test_padding_is_never_learned_and_rows_keep_their_targets(tok):
    short = sft_example(*render_conversation(tok, CHAT))
    long_chat = CHAT + [{"role": "user", "content": "And of Peru again?"},
                        {"role": "assistant", "content": "Still Lima."}]
    longer = sft_example(*render_conversation(tok, long_chat))
    x, y = sft_batch([short, longer], tok.pad)
    assert x.shape == y.shape == (2, len(longer[0]))
    assert (x[0, len(short[0]):] == tok.pad).all()
    assert (y[0, len(short[0]):] == IGNORE_INDEX).all()
    assert y[0, :len(short[1])].tolist() == short[1]


def test_fully_masked_batch_gives_finite_loss_and_zero_gradient(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=tok.vocab_size, n_layer=1, n_head=2,
                          n_embd=16))
    ids, _ = render_conversation(tok, [{"role": "user", "content": "Hello there"}])
    x, y = sft_batch([sft_example(ids, [0] * len(ids))], tok.pad)
    loss = cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert all(p.grad is None or (p.grad == 0).all() for p in model.parameters())


def test_too_long_conversations_are_truncated_or_skipped_and_counted(tok):
    long_answer = [{"role": "user", "content": "Tell me."},
                   {"role": "assistant", "content": "Lima. " * 40}]
    long_question = [{"role": "user", "content": "Peru? " * 40},
                     {"role": "assistant", "content": "Lima."}]
    examples, report = sft_examples(tok, [CHAT, long_answer, long_question], block_size=24)
    assert (report.kept, report.truncated, report.skipped) == (2, 1, 1)
    assert all(len(inputs) <= 24 for inputs, _ in examples)


def test_bad_line_is_named_and_both_formats_render_the_same(tmp_path, tok):
    good = tmp_path / "chats.jsonl"
    good.write_text(json.dumps({"messages": [{"role": "user", "content": "Capital of Peru?"},
                                             {"role": "assistant", "content": "Lima."}]})
                    + "\n" + json.dumps({"instruction": "Capital of Peru?", "input": "",
                                         "output": "Lima."}) + "\n")
    a, b = load_chats(str(good))
    assert render_conversation(tok, a) == render_conversation(tok, b)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"messages": [{"role": "user"}]}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl line 3"):
        load_chats(str(bad))


def test_smoke_run_learns_and_saves_stage_sft(tmp_path):
    def run(script, *args):
        out = subprocess.run([sys.executable, script, "--smoke", "--out_dir", str(tmp_path),
                              *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    run("train_pretrain.py", "--data_dir", tmp_path / "data")
    stdout = run("train_sft.py", "--log_every", 1)
    assert "conversations" in stdout and "held_out" in stdout
    curve = [r["loss"] for r in read_jsonl(tmp_path / "sft_log.jsonl") if "loss" in r]
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.25
    before, after = (load_checkpoint(tmp_path, s)["model"] for s in ("pretrain", "sft"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert load_checkpoint(tmp_path, "sft")["stage"] == "sft"
    for cmd in (["-m", "nanollm.chat", "--stage", "sft", "--prompt", "Capital of Peru?"],
                ["-m", "nanollm.sample", "--stage", "pretrain", "--prompt", "The capital of"]):
        out = subprocess.run([sys.executable, *cmd, "--out_dir", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout, out.stderr[-2000:]  # a tiny model may say little


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A smoke pretraining, shared by the LoRA runs (each copies pretrain.pt)."""
    return smoke_chain(tmp_path_factory.mktemp("pretrain")) / "pretrain.pt"


def held_out_loss(model, tok):
    chats = [c["messages"] for c in World(seed=0).sft_conversations(64, "held_out", seed=1)]
    examples, _ = sft_examples(tok, chats, model.config.block_size)
    x, y = sft_batch(examples, tok.pad)
    with torch.no_grad():
        return cross_entropy(model(x), y).item()


@pytest.mark.parametrize("quantize_base", [0, 4])
def test_lora_smoke_run_trains_adapters_only_and_saves_a_plain_stage(tmp_path, pretrained,
                                                                     quantize_base):
    shutil.copy(pretrained, tmp_path / "pretrain.pt")
    args = ["--smoke", "--out_dir", tmp_path, "--lora_rank", 4, "--quantize_base", quantize_base,
            "--lora_targets", "c_attn,c_proj,c_fc",  # every block matrix: the tiny model learns
            "--lr", 5e-3, "--max_steps", 60]  # a longer, faster run than full fine-tuning's
    out = subprocess.run([sys.executable, "train_sft.py", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "LoRA: training" in out.stdout
    base, tok, _ = load_stage(tmp_path, "pretrain")
    tuned, _, _ = load_stage(tmp_path, "sft")  # merged: it loads like any stage
    assert held_out_loss(tuned, tok) < held_out_loss(base, tok) - 0.03
    # Every weight is the base's, but for the adapted matrices, which are the (quantized) base
    # plus (alpha / r) B A from sft.lora.pt: nothing but the adapters trained.
    before, after = base.state_dict(), tuned.state_dict()
    saved = load_checkpoint(tmp_path, "sft.lora")
    scale = saved["lora"]["alpha"] / saved["lora"]["rank"]
    for key in before:
        layer = key.removesuffix(".weight")
        if f"{layer}.lora_A" not in saved["adapters"]:
            assert torch.equal(after[key], before[key]), key
            continue
        A, B = saved["adapters"][f"{layer}.lora_A"], saved["adapters"][f"{layer}.lora_B"]
        assert (B != 0).any()
        W = before[key]
        if quantize_base:
            W = dequantize(*quantize_groups(W, quantize_base, 32))  # the smoke's group size
        assert torch.allclose(after[key], W + scale * B @ A, atol=1e-6), key


def test_quantized_base_without_lora_is_a_one_line_error(tmp_path):
    code, output = run_inprocess("train_sft.py", ["--smoke", "--out_dir", tmp_path,
                                                  "--quantize_base", 4])
    assert code == 1 and "--lora_rank" in output and "Traceback" not in output
