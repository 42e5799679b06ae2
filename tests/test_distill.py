"""Distillation: the loss against its definition by hand, and a smoke run of each mode."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from nanollm import distill
from nanollm.data import write_shard
from nanollm.distill import distillation_loss, mixed_distillation_loss, prompt_of
from nanollm.logs import read_jsonl
from nanollm.losses import IGNORE_INDEX, cross_entropy
from nanollm.model import GPT, GPTConfig
from nanollm.stages import load_stage, save_stage
from nanollm.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("The capital of Peru is Lima. The capital of Chile is Santiago. "
        "Q: What is the capital of Peru? A: Lima. ") * 60


def logits(seed, shape=(2, 5, 11)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_zero_when_the_student_is_the_teacher():
    teacher = logits(0)
    for temperature in (0.5, 1.0, 4.0):
        assert distillation_loss(teacher.clone(), teacher, temperature).abs() < 1e-6


def test_at_temperature_1_it_is_cross_entropy_on_teacher_probs_minus_teacher_entropy():
    student, teacher = logits(0).double(), logits(1).double()
    p = teacher.softmax(-1)  # (B, T, V)
    cross = -(p * student.log_softmax(-1)).sum(-1)  # (B, T): H(p, q)
    entropy = -(p * p.log()).sum(-1)  # (B, T): H(p)
    expected = (cross - entropy).mean()
    assert torch.allclose(distillation_loss(student, teacher, 1.0).double(), expected, atol=1e-5)


def test_temperature_softens_both_and_scales_by_its_square():
    student, teacher = logits(0), logits(1)
    softened = distillation_loss(student / 3.0, teacher / 3.0, 1.0)
    assert torch.allclose(distillation_loss(student, teacher, 3.0), 9.0 * softened, atol=1e-5)


def test_gradient_is_temperature_times_q_minus_p_and_none_reaches_the_teacher():
    student, teacher = logits(0).requires_grad_(), logits(1).requires_grad_()
    distillation_loss(student, teacher, 2.0).backward()
    q, p = (student / 2.0).softmax(-1), (teacher / 2.0).softmax(-1)
    n_tokens = student.shape[0] * student.shape[1]
    assert torch.allclose(student.grad, 2.0 * (q - p).detach() / n_tokens, atol=1e-6)
    assert teacher.grad is None


def test_masked_tokens_do_not_count():
    student, teacher = logits(0), logits(1)
    mask = torch.tensor([[True, True, False, False, True], [False] * 5])
    assert torch.allclose(distillation_loss(student, teacher, 2.0, mask),
                          distillation_loss(student[mask], teacher[mask], 2.0), atol=1e-6)


def test_mixed_loss_weighs_soft_and_hard_targets():
    student, teacher = logits(0), logits(1)
    targets = torch.randint(11, (2, 5), generator=torch.Generator().manual_seed(2))
    targets[1, 3:] = IGNORE_INDEX
    counted = targets != IGNORE_INDEX
    soft = distillation_loss(student, teacher, 2.0, counted)
    hard = cross_entropy(student, targets)
    assert torch.allclose(mixed_distillation_loss(student, teacher, targets, 2.0, 0.0), hard)
    assert torch.allclose(mixed_distillation_loss(student, teacher, targets, 2.0, 1.0), soft)
    assert torch.allclose(mixed_distillation_loss(student, teacher, targets, 2.0, 0.3),
                          0.3 * soft + 0.7 * hard)


def test_a_prompt_is_what_comes_before_the_first_answer():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Peru?"},
            {"role": "assistant", "content": "Lima."}, {"role": "user", "content": "Chile?"}]
    assert prompt_of(chat) == chat[:2]


@dataclass
class RunConfig:  # what save_stage stores as the training config
    seed: int = 0


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """A teacher stage trained briefly on a tiny corpus, its shards, and a file of questions."""
    out = tmp_path_factory.mktemp("distill")
    tokenizer = Tokenizer.train(TEXT, 300)
    data_dir = out / "data"
    ids = tokenizer.encode(TEXT)
    write_shard(data_dir / "train.bin", ids, tokenizer.vocab_size)
    write_shard(data_dir / "val.bin", ids[:400], tokenizer.vocab_size)
    tokenizer.save(data_dir / "tokenizer.tiktoken")
    torch.manual_seed(0)
    teacher = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2,
                            n_embd=48))
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-2)
    window = torch.tensor(ids[:8 * 33]).view(8, 33)
    for _ in range(30):  # peaked enough that its soft targets say something
        cross_entropy(teacher(window[:, :-1]), window[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()
    save_stage(out, "teacher", teacher, tokenizer, RunConfig(), step=30)
    (out / "questions.txt").write_text("What is the capital of Peru?\n\nCapital of Chile?\n")
    return out


@pytest.mark.parametrize("mode", ["soft", "text", "sequence"])
def test_smoke_run_learns_and_saves_a_student_stage(out_dir, mode, capsys):
    student = f"student_{mode}"
    distill.main(["--smoke", "--mode", mode, "--teacher", "teacher", "--student", student,
                  "--out_dir", str(out_dir), "--data_dir", str(out_dir / "data"),
                  "--prompts", str(out_dir / "questions.txt"), "--steps", "30", "--lr", "1e-2",
                  "--log_every", "1"])
    printed = capsys.readouterr().out
    curve = [r["loss"] for r in read_jsonl(out_dir / f"{student}_log.jsonl") if "loss" in r]
    assert len(curve) == 30 and sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.1, curve
    model, _, state = load_stage(out_dir, student)
    assert (model.config.n_layer, model.config.n_embd) == (1, 32)  # the smoke student's sizes
    assert state["metrics"]["last_loss"] == curve[-1]
    assert ("held-out perplexity" in printed) == (mode != "sequence")


def test_command_line_runs_as_a_module_and_refuses_to_overwrite(out_dir):
    args = [sys.executable, "-m", "nanollm.distill", "--smoke", "--mode", "text", "--teacher",
            "teacher", "--student", "student_cli", "--out_dir", str(out_dir), "--data_dir",
            str(out_dir / "data")]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert json.loads((out_dir / "student_cli_log.jsonl").read_text().splitlines()[0])["run"]
