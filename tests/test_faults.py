"""Fault injection: the training scripts, run as a user would at smoke sizes, meet faults.

Each case is one fault: a rerun over a finished stage, a checkpoint of the wrong stage or a
damaged one, a resume that does not fit, degenerate data, a flag out of range. Each checks
1. the exit status;
2. the one line the user reads, which names the file, line, flag or field at fault;
3. that nothing was lost: every file in the run's folder before the run is still there, byte
   for byte, except logs (*_log.jsonl), whose old content must still begin the file.

The trained stages are built once for the module; each case copies the files it needs into its
own folder. Most cases run a script in this process (runpy), which is fast; a few run it as a
real subprocess, to see exactly what a user sees: one line on stderr and no traceback.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanollm.corpus import prepare_corpus
from nanollm.runs import StopRequest
from nanollm.world import world_corpus
from scripts import run_inprocess

ROOT = Path(__file__).resolve().parent.parent
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a CPU machine")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every stage trained at smoke size, an unfinished pretraining run beside the finished one,
    and a second data folder whose tokenizer (same vocabulary size) comes from another seed."""
    out = tmp_path_factory.mktemp("built")
    chain = [("train_pretrain.py", f"--data_dir {out}/data"), ("train_sft.py", ""),
             ("train_reward.py", "--steps 10"), ("train_rlhf.py", ""),
             ("train_dpo.py", "--max_steps 4"),
             ("train_pretrain.py", f"--data_dir {out}/data --overwrite --stop_at 2")]
    with contextlib.chdir(out):
        for script, args in chain:
            code, output = run_inprocess(script, ["--smoke", "--out_dir", out, *args.split()])
            assert code == 0, output[-3000:]
    prepare_corpus("world", str(out / "data_seed1"), vocab_size=300, seed=1, verbose=False,
                   **world_corpus("world", 60_000, seed=1))
    return out


# ----------------------------------------------------------------------------------------------
# A case's folder: files copied from the built stages, then the fault put in place


def copy_as(name, new_name):
    return lambda folder, built: shutil.copy(built / name, folder / new_name)


def truncate(name):
    def setup(folder, built):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 2])
    return setup


def write(name, data):
    return lambda folder, built: (folder / name).write_bytes(data)


def other_tokenizer(folder, built):
    for name in ("tokenizer.tiktoken", "tokenizer.json"):
        shutil.copy(built / "data_seed1" / name, folder / "data" / name)


def jsonl(*rows):
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


PAIRS = [{"prompt": f"What is the capital of Land{i}?", "chosen": f"City{i}.",
          "rejected": "I am not sure."} for i in range(8)]
SAME = {"prompt": "Is it the same?", "chosen": "Yes.", "rejected": "Yes."}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
LONG_CHAT = {"messages": [{"role": "user", "content": "word " * 200},
                          {"role": "assistant", "content": "ok"}]}
NOT_UTF8 = b'{"instruction": "caf\xe9", "output": "x"}\n'  # Latin-1, not UTF-8


def prepare(tmp_path, built, files, setup):
    folder = tmp_path / "out"
    folder.mkdir()
    for name in files:
        if name == "data":
            shutil.copytree(built / "data", folder / "data")
        else:
            shutil.copy(built / name, folder / name)
    if setup:
        setup(folder, built)
    return folder


def snapshot(folder):
    """{relative path: (sha256, the bytes for a log, else None)} of every file under folder."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            log = data if path.name.endswith("_log.jsonl") else None
            files[str(path.relative_to(folder))] = (hashlib.sha256(data).hexdigest(), log)
    return files


def assert_nothing_lost(folder, before, changes=()):
    """Every file of `before` is still there, the same; a log only grew. `changes` names the
    files the run was asked to replace."""
    for name, (digest, log) in before.items():
        if name in changes:
            continue
        path = folder / name
        assert path.is_file(), f"{name} was lost"
        if log is not None:
            assert path.read_bytes().startswith(log), f"{name}: earlier records changed"
        else:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{name} changed"


def case(name, script, args, code, *expected, files=(), setup=None, creates=(), changes=(),
         marks=()):
    """One fault: `script --out_dir <folder> args` must exit with `code`; each of `expected` is
    in the message (the last line of output, or anywhere in it for a run that succeeds)."""
    return pytest.param(script, args, code, expected, files, setup, creates, changes,
                        id=name, marks=marks)


PARAMS = "script, args, code, expected, files, setup, creates, changes"
PRE = "train_pretrain.py"
PRE_DATA = "--smoke --data_dir {d}/data"  # pretraining on the built data, copied with "data"
SFT, REWARD, RLHF, DPO = "train_sft.py", "train_reward.py", "train_rlhf.py", "train_dpo.py"
REFUSES = "already holds a finished"

CASES = [
    # 1. A run never destroys a better result
    case("rerun-pretrain", PRE, PRE_DATA, 1, f"pretrain.pt {REFUSES} 'pretrain'", "--overwrite",
         files=("pretrain.pt", "pretrain_log.jsonl", "data")),
    case("rerun-sft", SFT, "--smoke", 1, f"sft.pt {REFUSES} 'sft'", "--overwrite",
         files=("pretrain.pt", "sft.pt", "sft_log.jsonl")),
    case("rerun-reward", REWARD, "--smoke", 1, f"reward.pt {REFUSES} 'reward'", "--overwrite",
         files=("sft.pt", "reward.pt", "pairs.jsonl")),
    case("rerun-rlhf", RLHF, "--smoke", 1, f"rlhf.pt {REFUSES} 'rlhf'", "--overwrite",
         files=("sft.pt", "reward.pt", "rlhf.pt")),
    case("rerun-dpo", DPO, "--smoke", 1, f"dpo.pt {REFUSES} 'dpo'", "--overwrite",
         files=("sft.pt", "dpo.pt")),
    case("zero-steps-pretrain", PRE, PRE_DATA + " --overwrite --max_steps 0", 1,
         "--max_steps 0: expected a positive number", files=("pretrain.pt", "data")),
    case("zero-steps-sft", SFT, "--smoke --overwrite --max_steps 0", 1, "--max_steps 0",
         files=("pretrain.pt", "sft.pt")),
    case("zero-steps-reward", REWARD, "--smoke --overwrite --steps 0", 1, "--steps 0",
         files=("sft.pt", "reward.pt")),
    case("zero-iters-rlhf", RLHF, "--smoke --overwrite --ppo_iters 0", 1, "--ppo_iters 0",
         files=("sft.pt", "reward.pt", "rlhf.pt")),
    case("zero-steps-dpo", DPO, "--smoke --overwrite --max_steps 0", 1, "--max_steps 0",
         files=("sft.pt", "dpo.pt")),
    case("stop-at-keeps-finished-pretrain", PRE, PRE_DATA + " --overwrite --stop_at 2", 0,
         "stopped after step 2 of 40", "pretrain.unfinished.pt", "--resume",
         files=("pretrain.pt", "pretrain_log.jsonl", "data"), creates=("pretrain.unfinished.pt",)),
    case("stop-at-keeps-finished-sft", SFT, "--smoke --overwrite --stop_at 1", 0,
         "stopped after step 1 of 30", files=("pretrain.pt", "sft.pt", "sft_log.jsonl"),
         creates=("sft.unfinished.pt",)),
    case("fresh-run-over-unfinished", PRE, PRE_DATA, 1, "pretrain.unfinished.pt already holds "
         "an unfinished 'pretrain' run (step 2 of 40)", "--overwrite", "--resume",
         files=("pretrain.unfinished.pt", "data")),
    case("resume-nothing", PRE, PRE_DATA + " --resume", 1, "--resume: no unfinished 'pretrain'",
         "pretrain.unfinished.pt does not exist", files=("data",)),
    # 2. A checkpoint is checked before use
    case("sft-as-pretrain", SFT, "--smoke", 1, "pretrain.pt holds a 'sft' checkpoint",
         setup=copy_as("sft.pt", "pretrain.pt")),
    case("sft-as-unfinished-pretrain", PRE, PRE_DATA + " --resume", 1,
         "pretrain.unfinished.pt holds a 'sft' checkpoint", files=("data",),
         setup=copy_as("sft.pt", "pretrain.unfinished.pt")),
    case("reward-as-sft-dpo", DPO, "--smoke", 1, "sft.pt holds a 'reward' checkpoint",
         setup=copy_as("reward.pt", "sft.pt")),
    case("reward-as-sft-reward", REWARD, "--smoke", 1, "sft.pt holds a 'reward' checkpoint",
         setup=copy_as("reward.pt", "sft.pt")),
    case("truncated-pretrain", SFT, "--smoke", 1, "pretrain.pt cannot be read", "truncated",
         files=("pretrain.pt",), setup=truncate("pretrain.pt")),
    case("random-bytes-sft", DPO, "--smoke", 1, "sft.pt cannot be read", "corrupt",
         setup=write("sft.pt", bytes(range(256)) * 20)),
    case("truncated-unfinished-resume", PRE, PRE_DATA + " --resume", 1,
         "pretrain.unfinished.pt cannot be read", files=("pretrain.unfinished.pt", "data"),
         setup=truncate("pretrain.unfinished.pt")),
    case("resume-other-lr", PRE, PRE_DATA + " --resume --lr 0.01", 1,
         "--lr 0.01 here, 0.003 in the checkpoint", files=("pretrain.unfinished.pt", "data")),
    case("resume-other-tokenizer", PRE, PRE_DATA + " --resume", 1, "the data's tokenizer is not",
         files=("pretrain.unfinished.pt", "data"), setup=other_tokenizer),
    case("rlhf-without-reward", RLHF, "--smoke", 1, "no reward model in", "train_reward.py",
         files=("sft.pt",)),
    # 3. Degenerate data
    case("reward-one-identical-pair", REWARD, "--smoke --preferences {d}/p.jsonl --stop_at 1", 0,
         "identical chosen and rejected: 1 pairs (line 4)", files=("sft.pt",),
         setup=write("p.jsonl", jsonl(*PAIRS[:3], SAME, *PAIRS[3:]))),
    case("reward-all-identical", REWARD, "--smoke --preferences {d}/p.jsonl", 1, "no pair fits",
         "identical chosen and rejected", "lines 2, 3", files=("sft.pt",),
         setup=write("p.jsonl", jsonl(*[SAME] * 6))),
    case("dpo-one-identical-pair", DPO, "--smoke --preferences {d}/p.jsonl --stop_at 1", 0,
         "identical chosen and rejected: 1 pairs (line 4)", files=("sft.pt",),
         setup=write("p.jsonl", jsonl(*PAIRS[:3], SAME, *PAIRS[3:]))),
    case("dpo-all-identical", DPO, "--smoke --preferences {d}/p.jsonl", 1, "no pair fits",
         "identical chosen and rejected", files=("sft.pt",),
         setup=write("p.jsonl", jsonl(*[SAME] * 6))),
    case("chats-longer-than-context", SFT, "--smoke --chats {d}/c.jsonl", 1,
         "longer than the context of 64 tokens", "(lines 2, 3, 4, 5)", files=("pretrain.pt",),
         setup=write("c.jsonl", jsonl(*[LONG_CHAT] * 5))),
    case("chats-empty-file", SFT, "--smoke --chats {d}/c.jsonl", 1, "c.jsonl: no chats",
         files=("pretrain.pt",), setup=write("c.jsonl", b"\n\n")),
    case("text-too-small", PRE, "--smoke --data_dir {d}/data --source {d}/small.txt", 1,
         "train.bin (train split of", "small.txt) has 28 tokens", "block_size + 1 = 65",
         setup=write("small.txt", b"The cat sat on the mat. " * 4)),
    case("chats-not-utf8-line-3", SFT, "--smoke --chats {d}/c.jsonl", 1, "c.jsonl line 3",
         "not UTF-8", files=("pretrain.pt",), setup=write("c.jsonl", jsonl(CHAT, CHAT)
                                                           + NOT_UTF8 + jsonl(CHAT))),
    case("preferences-not-utf8-line-3", DPO, "--smoke --preferences {d}/p.jsonl", 1,
         "p.jsonl line 3", "not UTF-8", files=("sft.pt",),
         setup=write("p.jsonl", jsonl(*PAIRS[:2]) + NOT_UTF8 + jsonl(*PAIRS[2:]))),
    # 4. Flags validated up front
    case("n_embd-not-divisible", PRE, "--n_embd 30 --n_head 4", 1, "--n_embd 30", "--n_head 4"),
    case("batch-size-0", SFT, "--smoke --batch_size 0", 1, "--batch_size 0: expected a positive"),
    case("negative-lr", REWARD, "--smoke --lr -1", 1, "--lr -1.0: expected a positive number"),
    case("dropout-1.5", PRE, "--smoke --dropout 1.5", 1, "--dropout 1.5: expected in [0, 1)"),
    case("cuda-without-gpu", SFT, "--smoke --device cuda", 1, "--device 'cuda': CUDA is not "
         "available", marks=[NO_GPU]),
    case("float16-on-cpu", DPO, "--smoke --device cpu --dtype float16", 1,
         "--dtype float16 needs CUDA"),
    case("device-nonsense", RLHF, "--smoke --device nonsense", 1, "--device 'nonsense'"),
    case("unknown-flag", REWARD, "--smoke --learning_rate 1", 1, "unrecognized arguments: "
         "--learning_rate 1"),
    case("label-smoothing-0.7", DPO, "--smoke --label_smoothing 0.7", 1,
         "--label_smoothing 0.7: expected in [0, 0.5)"),
    case("gamma-2", RLHF, "--smoke --gamma 2", 1, "--gamma 2.0"),
    # What a new user would plausibly hit
    case("resume-after-finished", SFT, "--smoke --resume", 1, "no unfinished 'sft' run",
         files=("pretrain.pt", "sft.pt")),
    case("resume-with-more-steps", PRE, PRE_DATA + " --resume --max_steps 80", 1,
         "--max_steps 80 here, 40 in the checkpoint", files=("pretrain.unfinished.pt", "data")),
    case("resume-of-overwriting-run", PRE, PRE_DATA + " --resume", 0, "done in",
         files=("pretrain.pt", "pretrain.unfinished.pt", "data"),
         changes=("pretrain.pt", "pretrain.unfinished.pt")),
    case("rerun-over-corrupt-sft", SFT, "--smoke", 1, "sft.pt", "--overwrite",
         files=("pretrain.pt", "sft.pt"), setup=truncate("sft.pt")),
    case("out-dir-is-a-file", PRE, PRE_DATA + " --out_dir {d}/file", 1, "file",
         files=("data",), setup=write("file", b"notes")),
    case("init-from-unknown-stage", SFT, "--smoke --init_from nosuch", 1,
         "no checkpoint for stage 'nosuch'", "known stages"),
    case("init-from-missing-rlhf", DPO, "--smoke --init_from rlhf", 1,
         "no checkpoint for stage 'rlhf'", "run train_rlhf.py first", files=("sft.pt",)),
    case("init-from-missing-gpt2", DPO, "--smoke --init_from gpt2:{d}/gpt2", 1, "gpt2"),
    case("preferences-missing", DPO, "--smoke --preferences {d}/p.jsonl", 1, "p.jsonl",
         files=("sft.pt",)),
    case("chats-missing", SFT, "--smoke --chats {d}/c.jsonl", 1, "c.jsonl", files=("pretrain.pt",)),
    case("chats-file-of-one-chat", SFT, "--smoke --chats {d}/c.jsonl", 1,
         "c.jsonl: 1 chats; need at least 2", files=("pretrain.pt",),
         setup=write("c.jsonl", jsonl(CHAT))),
    case("pairs-file-of-one-pair-rlhf", RLHF, "--smoke --preferences {d}/p.jsonl", 1,
         "p.jsonl: 1 pairs; need at least 2", files=("sft.pt", "reward.pt"),
         setup=write("p.jsonl", jsonl(PAIRS[0]))),
    case("chats-not-json-line-2", SFT, "--smoke --chats {d}/c.jsonl", 1,
         "c.jsonl line 2: invalid JSON", files=("pretrain.pt",),
         setup=write("c.jsonl", jsonl(CHAT) + b"{not json\n" + jsonl(CHAT))),
    case("styles-nonsense", DPO, "--smoke --styles nonsense", 1, "--styles 'nonsense'"),
    case("persona-nonsense", DPO, "--smoke --persona nobody", 1, "--persona", files=("sft.pt",)),
    case("stop-at-past-max-steps-pretrain", PRE, "--smoke --stop_at 50", 1,
         "--stop_at 50 is past --max_steps 40"),
    case("stop-at-past-max-steps-sft", SFT, "--smoke --stop_at 5 --max_steps 2", 1, "--stop_at 5",
         files=("pretrain.pt",)),
    case("tokenizer-typo", PRE, PRE_DATA + " --tokenizer gtp2 --max_steps 2", 1, "--tokenizer"),
    case("attention-typo", PRE, PRE_DATA + " --attention flash --max_steps 2", 1,
         "--attention", files=("data",)),
    case("vocab-size-100", PRE, "--smoke --data_dir {d}/data --vocab_size 100", 1,
         "--vocab_size 100"),
    case("smoke-keeps-explicit-n_head", PRE, "--smoke --n_embd 30 --n_head 4 --max_steps 2", 1,
         "--n_head 4"),
    case("pipeline-over-saved-stages", "nanollm/pipeline.py", "--smoke", 1, "sft.pt already saved",
         "--skip_existing", files=("sft.pt",)),
    case("pipeline-skip-and-overwrite", "nanollm/pipeline.py", "--skip_existing --overwrite", 1,
         "pass one of them"),
    case("prepare-vocab-size-100", "data/prepare.py", "--world_chars 60000 --vocab_size 100", 1,
         "--vocab_size 100"),
]


def check(folder, before, code, expected, creates, changes, got, output):
    shown = output.strip().splitlines()[-1] if code else output
    assert got == code, output[-3000:]
    for text in expected:
        assert text in shown, output[-3000:]
    assert_nothing_lost(folder, before, changes)
    for name in creates:
        assert (folder / name).is_file(), f"{name} was not written"


@pytest.mark.parametrize(PARAMS, CASES)
def test_fault(built, tmp_path, monkeypatch, script, args, code, expected, files, setup, creates,
               changes):
    folder = prepare(tmp_path, built, files, setup)
    before = snapshot(folder)
    monkeypatch.chdir(tmp_path)  # anything a script writes by a relative path stays here
    got, output = run_inprocess(script, ["--out_dir", folder, *args.format(d=folder).split()])
    last = output.strip().splitlines()[-1] if output.strip() else ""
    print(f"| {script} {args} | {', '.join(before) or '-'} | {got}: {last[:110]} |")  # with -s
    check(folder, before, code, expected, creates, changes, got, output)


# 5. User errors print one line: what a user sees in a terminal
SUBPROCESS_CASES = [
    case("bad-flag-value", SFT, "--smoke --lr abc", 1, "error: argument --lr: invalid float "
         "value: 'abc'"),
    case("missing-checkpoint", SFT, "--smoke", 1, "error: no checkpoint for stage 'pretrain' at",
         "run train_pretrain.py first"),
    case("checkpoint-of-wrong-stage", DPO, "--smoke", 1, "error:", "sft.pt holds a 'reward' "
         "checkpoint (made by train_reward.py)", setup=copy_as("reward.pt", "sft.pt")),
    case("data-file-not-utf8", SFT, "--smoke --chats {d}/c.jsonl", 1, "error:", "line 3",
         files=("pretrain.pt",), setup=write("c.jsonl", jsonl(CHAT, CHAT) + NOT_UTF8)),
]


@pytest.mark.parametrize(PARAMS, SUBPROCESS_CASES)
def test_fault_in_a_terminal(built, tmp_path, script, args, code, expected, files, setup,
                             creates, changes):
    folder = prepare(tmp_path, built, files, setup)
    before = snapshot(folder)
    command = [sys.executable, script, "--out_dir", str(folder), *args.format(d=folder).split()]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    check(folder, before, code, expected, creates, changes, out.returncode, out.stderr)


# 6. Ctrl-C: the first asks the loop to stop after its step, the second stops at once
def test_ctrl_c_requests_a_stop_then_interrupts(capsys):
    previous = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
    assert "stopping after the step in flight" in capsys.readouterr().out
