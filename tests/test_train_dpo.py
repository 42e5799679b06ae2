"""DPO: preference pairs rendered into masked batches, and train_dpo.py run as a user would."""

import ast
import json
import math
import os
import subprocess
import sys
from functools import partial

import pytest
import torch

from nanollm.chat import encode_content, render_conversation, render_prompt
from nanollm.checkpoint import load_checkpoint
from nanollm.dpo import response_logprob
from nanollm.logs import read_jsonl
from nanollm.model import GPT, GPTConfig
from nanollm.pairs import (pair_batch, render_pair_batch, render_pairs, score_pair_dataset,
                           score_pairs)
from nanollm.tokenizer import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIR = {"prompt": "What is the capital of Peru?", "chosen": "Lima.",
        "rejected": "What a great question! The capital of Peru is Quito."}
MULTI_TURN = {"prompt": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Capital of Peru?"},
                         {"role": "assistant", "content": "Lima."},
                         {"role": "user", "content": "And of Chile?"}],
              "chosen": "Santiago.", "rejected": "I am not sure."}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train("The capital of Peru is Lima. What is the capital of Chile? " * 20, 300)


# ---------------------------------------------------------------------------- nanollm/pairs.py

def test_response_mask_is_exactly_the_answer_and_its_end(tok):
    chosen, rejected, report = render_pair_batch(tok, [PAIR, MULTI_TURN], block_size=64)
    assert report.kept == 2 and report.truncated == report.skipped == 0
    prompt_len = len(render_prompt(tok, [{"role": "user", "content": PAIR["prompt"]}]))
    for key, (ids, pad_mask, response_mask) in (("chosen", chosen), ("rejected", rejected)):
        answer = PAIR[key]
        row_ids, row_pad, row_response = ids[0], pad_mask[0], response_mask[0]
        assert row_ids[row_response].tolist() == encode_content(tok, answer) + [tok.end]
        assert not row_response[:prompt_len].any()  # no prompt token, no role token
        assert not (row_response & ~row_pad).any()  # no padding
        assert (row_ids[~row_pad] == tok.pad).all()
        assert row_pad.sum() == prompt_len + len(encode_content(tok, answer)) + 1


def test_the_whole_sequence_is_the_chat_template_and_earlier_answers_are_prompt(tok):
    (ids, pad_mask, response_mask), _, _ = render_pair_batch(tok, [MULTI_TURN], block_size=64)
    expected, _ = render_conversation(tok, MULTI_TURN["prompt"] + [
        {"role": "assistant", "content": MULTI_TURN["chosen"]}])
    assert ids[0][pad_mask[0]].tolist() == expected
    # "Lima." was an assistant turn, but of the prompt: only the final answer is learned
    assert ids[0][response_mask[0]].tolist() == encode_content(tok, "Santiago.") + [tok.end]


def test_chosen_and_rejected_share_one_length_and_rows_keep_their_order(tok):
    pairs = [PAIR, MULTI_TURN, {**PAIR, "chosen": "Lima, the capital of Peru, it is."}]
    chosen, rejected, _ = render_pair_batch(tok, pairs, block_size=64)
    assert chosen[0].shape == rejected[0].shape == (3, chosen[0].shape[1])
    rendered, _ = render_pairs(tok, pairs, block_size=64)
    again, _ = pair_batch(rendered[2:], tok.pad)  # a batch of one, padded to its own length
    n = again[1][0].sum()
    assert torch.equal(again[0][0][:n], chosen[0][2][:n])


def test_truncation_and_skipping_are_counted(tok):
    prompt_len = len(render_prompt(tok, [{"role": "user", "content": PAIR["prompt"]}]))
    long_prompt = {**PAIR, "prompt": "What is the capital of Chile? " * 20}
    pairs = [PAIR, long_prompt]
    chosen, rejected, report = render_pair_batch(tok, pairs, block_size=prompt_len + 3)
    assert (report.kept, report.truncated, report.skipped) == (1, 1, 1)
    assert chosen[0].shape[0] == 1 and chosen[0].shape[1] == prompt_len + 3
    # what is left of the long answer is answer only: 3 tokens, its cut-off <|end|> not among them
    assert rejected[2].sum() == 3 and not rejected[2][0, :prompt_len].any()
    assert tok.end not in rejected[0][0][rejected[2][0]].tolist()
    with pytest.raises(ValueError, match="no pair fits"):
        render_pair_batch(tok, [long_prompt], block_size=prompt_len + 3)


def test_score_pairs_gives_each_answer_the_score_it_has_alone(tok):
    """Both sides stacked as 2B padded rows, split again: each answer scores as it does unpadded
    and on its own, in its pair's row; score_pair_dataset concatenates batches in order."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    score = partial(response_logprob, model)
    pairs = [PAIR, MULTI_TURN, {**PAIR, "chosen": "Lima, the capital of Peru, it is."}]
    rendered, _ = render_pairs(tok, pairs, block_size=64)
    with torch.no_grad():
        chosen, rejected = score_pairs(score, rendered, tok.pad)  # (3,) each
    for row, pair in enumerate(rendered):
        for (ids, mask), batched in zip(pair, (chosen[row], rejected[row])):
            with torch.no_grad():
                alone = score(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool),
                              torch.tensor([mask]))
            assert batched.item() == pytest.approx(alone.item(), abs=1e-4)
    assert not torch.allclose(chosen, rejected)  # the two sides were not mixed up into one
    whole_chosen, whole_rejected = score_pair_dataset(score, rendered, tok.pad, batch_size=2)
    torch.testing.assert_close(whole_chosen, chosen, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(whole_rejected, rejected, atol=1e-4, rtol=1e-4)
    assert not whole_chosen.requires_grad  # evaluation: no graph is kept


# ---------------------------------------------------------------------------- train_dpo.py

def script_defaults(script, config_class):
    """The literal defaults of a script's config dataclass, read without running the script."""
    tree = ast.parse(open(os.path.join(ROOT, script)).read())
    cls = next(node for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name == config_class)
    return {node.target.id: ast.literal_eval(node.value) for node in cls.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant)}


TEXTBOOK_DPO = dict(loss="dpo", beta=0.1, nll_weight=0.0, average_logprobs=False,
                    label_smoothing=0.0)


def test_the_default_is_the_papers_dpo():
    defaults = script_defaults("train_dpo.py", "DPOConfig")
    assert {name: defaults[name] for name in TEXTBOOK_DPO} == TEXTBOOK_DPO


# the smallest evaluation, for runs that test something else
QUICK_EVAL = ("--eval_every", 100, "--eval_pairs", 4, "--eval_questions", 4, "--kl_samples", 2)


def run(script, out_dir, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared machine: no threads fighting for it
    out = subprocess.run([sys.executable, script, "--smoke", "--out_dir", str(out_dir),
                          *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dpo")
    # block 128: room for the smoke world's questions plus the answers generated in evaluation
    run("train_pretrain.py", out_dir, "--data_dir", out_dir / "data", "--block_size", 128)
    run("train_sft.py", out_dir)
    return out_dir


@pytest.fixture(scope="module")
def smoke_run(sft_dir):
    return run("train_dpo.py", sft_dir), sft_dir  # the defaults: the paper's DPO


@pytest.mark.parametrize("flags,first_loss", [
    # IPO starts at (0 - 1 / (2 beta))^2 = 625, plus the NLL term
    (("--loss", "ipo", "--beta", 0.02, "--nll_weight", 0.5), (625, math.inf)),
    # conservative DPO mixes log 2 with log 2 at margin 0, on mean log-probabilities too
    (("--label_smoothing", 0.1, "--average_logprobs", "--beta", 1), (0.691, 0.695)),
])
def test_each_variant_runs_and_its_loss_falls(sft_dir, tmp_path, flags, first_loss):
    os.symlink(sft_dir / "sft.pt", tmp_path / "sft.pt")
    run("train_dpo.py", tmp_path, *flags, *QUICK_EVAL)
    curve = [r["loss"] for r in read_jsonl(tmp_path / "dpo_log.jsonl") if "loss" in r]
    assert first_loss[0] < curve[0] < first_loss[1]
    assert sum(curve[-5:]) / 5 < sum(curve[:3]) / 3


def test_smoke_run_learns_and_saves_stage_dpo(smoke_run):
    stdout, out_dir = smoke_run
    log = read_jsonl(out_dir / "dpo_log.jsonl")
    curve = [r["loss"] for r in log if "loss" in r]
    # the policy starts as the reference: every margin is 0 and the loss is exactly log 2
    assert curve[0] == pytest.approx(math.log(2), abs=2e-3)
    assert sum(curve[-5:]) / 5 < sum(curve[:3]) / 3 - 0.05
    before, after = (load_checkpoint(out_dir, s)["model"] for s in ("sft", "dpo"))
    assert all(not torch.equal(before[k], after[k]) for k in before if before[k].dim() == 2)
    state = load_checkpoint(out_dir, "dpo")
    assert state["stage"] == "dpo"
    assert {name: state["train_config"][name] for name in TEXTBOOK_DPO} == TEXTBOOK_DPO
    metrics = state["metrics"]
    for split, n_pairs in (("train", 32), ("held_out", 16)):  # the smoke sample sizes
        accuracy = metrics[f"{split}_pair_accuracy"]
        assert accuracy * n_pairs == pytest.approx(round(accuracy * n_pairs))  # a share of pairs
        by_kind = metrics[f"{split}_pair_accuracy_by_kind"]
        assert by_kind and all(0 <= a <= 1 and " > " in kind for kind, a in by_kind.items())
    assert metrics["held_out_pair_accuracy"] == log[-1]["eval_accuracy"]
    assert f"training pairs {metrics['train_pair_accuracy']:.1%} (32 pairs)" in stdout
    row = metrics["table_row"]
    assert set(row) == {"gold_reward", "win_rate_vs_sft", "kl", "mean_words", "wall_seconds"}
    assert 0.0 <= row["win_rate_vs_sft"] <= 1.0 and row["kl"] > 0
    assert "PPO-vs-DPO row" in stdout
    evals = [r for r in log if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert os.path.getsize(out_dir / "dpo_curves.png") > 1000


def test_reference_on_the_fly_matches_the_precomputed_reference(sft_dir, tmp_path):
    """Computing the reference once and indexing it by row must give the very numbers a fresh
    forward pass gives at every step; float32, so that padding lengths change nothing."""
    common = ("--max_steps", 4, "--n_pairs", 32, "--dtype", "float32", *QUICK_EVAL)
    losses = {}
    for name, extra in (("once", ()), ("on_the_fly", ("--ref_on_the_fly",))):
        out_dir = tmp_path / name
        out_dir.mkdir()
        os.symlink(sft_dir / "sft.pt", out_dir / "sft.pt")
        run("train_dpo.py", out_dir, *common, *extra)
        losses[name] = [r["loss"] for r in read_jsonl(out_dir / "dpo_log.jsonl") if "loss" in r]
    assert losses["once"] == pytest.approx(losses["on_the_fly"], rel=1e-5, abs=1e-5)


def test_users_preference_file(sft_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"What is {i % 10} plus 1?", "chosen": f"{i % 10 + 1}.",
                                "rejected": "I am not sure, sorry."}) + "\n")
    out_dir = tmp_path / "user"
    out_dir.mkdir()
    os.symlink(sft_dir / "sft.pt", out_dir / "sft.pt")
    stdout = run("train_dpo.py", out_dir, "--preferences", pairs, "--max_steps", 3, *QUICK_EVAL)
    assert "38 pairs (0 truncated" in stdout  # 5% (2 pairs) held out for evaluation
    assert load_checkpoint(out_dir, "dpo")["stage"] == "dpo"


def test_unknown_style_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "train_dpo.py", "--out_dir", str(tmp_path),
                          "--styles", "terse,rude"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "--styles 'terse,rude'" in out.stderr and "Traceback" not in out.stderr


def test_lora_dpo_starts_at_the_reference_and_changes_only_the_adapted_matrices(sft_dir, tmp_path):
    """With --lora_rank the reference is the policy with its adapters off: at step 0 the two
    are the same model, so every pair's margin is 0 and the loss is exactly log 2 (float32)."""
    os.symlink(sft_dir / "sft.pt", tmp_path / "sft.pt")
    stdout = run("train_dpo.py", tmp_path, "--lora_rank", 4, "--dtype", "float32",
                 "--max_steps", 4, "--n_pairs", 32, *QUICK_EVAL)
    assert "LoRA: training" in stdout
    first = read_jsonl(tmp_path / "dpo_log.jsonl")[1]  # after the run's header line
    assert first["step"] == 0 and first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    sft, dpo = (load_checkpoint(tmp_path, stage)["model"] for stage in ("sft", "dpo"))
    changed = {key for key in sft if not torch.equal(sft[key], dpo[key])}
    assert changed and all(key.endswith("attn.c_attn.weight") for key in changed)  # merged in
    assert set(load_checkpoint(tmp_path, "dpo.lora")["adapters"]) == {
        key.removesuffix(".weight") + suffix for key in changed for suffix in (".lora_A", ".lora_B")}
