"""Config flags, the LR schedule, JSONL logs, the runtime helper and the distributed fallback."""

import dataclasses
import math
import re
import socket
from typing import Literal, Optional

import numpy as np
import pytest
import torch

from nanollm.config import check_flags, config_to_dict, parse_config
from nanollm.errors import ConfigError, UserError, one_line
from nanollm.logs import JsonlLogger, newest_run, read_jsonl
from nanollm.optim import NonFiniteLoss, check_finite, lr_at
from nanollm.runtime import seed_everything, setup_runtime
from nanollm.distributed import all_reduce_mean, cleanup_distributed, init_distributed


@dataclasses.dataclass
class TrainConfig:
    """A config shaped like the training scripts' ones."""

    n_layer: int = 4
    lr: float = 3e-4
    out_dir: str = "out"
    compile: bool = False
    use_cache: bool = True
    max_steps: Optional[int] = None
    attention: Literal["sdpa", "manual"] = "sdpa"
    note: str = dataclasses.field(default="", metadata={"help": "free text, 100% optional"})


def test_defaults_without_flags():
    assert parse_config(TrainConfig, []) == TrainConfig()


def test_flag_types():
    cfg = parse_config(TrainConfig, ["--n_layer", "6", "--lr", "1e-3", "--out_dir", "runs/a",
                                     "--max_steps", "100", "--attention", "manual"])
    assert cfg.n_layer == 6 and isinstance(cfg.n_layer, int)
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.out_dir == "runs/a" and cfg.max_steps == 100 and cfg.attention == "manual"
    assert parse_config(TrainConfig, ["--max_steps", "none"]).max_steps is None


@pytest.mark.parametrize("argv, expected", [
    (["--compile"], True),
    (["--compile", "true"], True),
    (["--compile", "False"], False),
    (["--no-compile"], False),
    (["--compile", "--n_layer", "2"], True),
])
def test_bool_forms(argv, expected):
    assert parse_config(TrainConfig, argv).compile is expected


def test_no_flag_turns_off_a_true_default():
    assert parse_config(TrainConfig, ["--no-use_cache"]).use_cache is False


@pytest.mark.parametrize("argv, message", [
    (["--n_layers", "6"], "unrecognized arguments: --n_layers"),
    (["--n_layer", "six"], "invalid int value: 'six'"),
    (["--compile", "maybe"], "expected true or false"),
    (["--attention", "flash"], "invalid choice"),
])
def test_bad_flags_stop_with_a_one_line_config_error(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        parse_config(TrainConfig, argv)
    assert "\n" not in one_line(error.value) and "--help" in str(error.value)


def test_check_flags_names_the_first_flag_out_of_range():
    check_flags(TrainConfig(), positive=("n_layer", "lr", "max_steps"), non_negative=("lr",),
                fractions=("lr",))  # max_steps None: not set, not checked
    bad = dataclasses.replace(TrainConfig(), n_layer=0, lr=-1.0)
    with pytest.raises(ConfigError, match="--n_layer 0: expected a positive number"):
        check_flags(bad, positive=("n_layer", "lr"))
    with pytest.raises(ConfigError, match=r"--lr 1.0: expected in \[0, 1\)"):
        check_flags(dataclasses.replace(TrainConfig(), lr=1.0), fractions=("lr",))


def test_help_text_comes_from_field_metadata(capsys):
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--help"])
    out = capsys.readouterr().out
    assert "free text, 100% optional" in out and "--no-compile" in out


def test_unsupported_field_type_is_reported():
    @dataclasses.dataclass
    class Bad:
        sizes: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="sizes"):
        parse_config(Bad, [])


def test_config_to_dict():
    assert config_to_dict(TrainConfig(n_layer=2))["n_layer"] == 2


def test_seed_everything_repeats_draws():
    seed_everything(3)
    first = (np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert (np.random.rand(), torch.rand(1).item()) == first


def test_lr_schedule_landmarks():
    max_lr, min_lr, warmup, total = 1e-3, 1e-4, 10, 110
    schedule = [lr_at(s, max_lr, warmup, total, min_lr) for s in range(total + 20)]
    assert schedule[0] == pytest.approx(max_lr / warmup)  # first step already moves
    assert schedule[warmup - 1] == pytest.approx(max_lr)  # warmup ends at the peak
    assert schedule[warmup] == pytest.approx(max_lr)  # cosine starts at the peak
    assert schedule[60] == pytest.approx((max_lr + min_lr) / 2)  # halfway down the cosine
    assert schedule[total - 1] == pytest.approx(min_lr, abs=1e-6)
    assert schedule[total:] == [min_lr] * 20
    assert all(a <= b for a, b in zip(schedule[:warmup], schedule[1:warmup]))
    assert all(a >= b for a, b in zip(schedule[warmup:], schedule[warmup + 1:]))
    assert lr_at(0, max_lr, 0, total, min_lr) == max_lr  # no warmup at all


def test_a_non_finite_loss_stops_the_run_with_one_line_naming_the_fix():
    assert check_finite(torch.tensor(2.5), 3, "out/sft.unfinished.pt") == 2.5
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteLoss) as error:
            check_finite(torch.tensor(bad), 7, "out/sft.unfinished.pt")
        assert isinstance(error.value, UserError)  # printed as one line by the scripts
        assert all(text in str(error.value) for text in ("step 7", "out/sft.unfinished.pt",
                                                         "--lr"))


def test_jsonl_logger_round_trip(tmp_path):
    path = str(tmp_path / "logs" / "train.jsonl")
    log = JsonlLogger(path)
    log.log(step=0, loss=torch.tensor(2.5), lr=np.float32(0.5))
    log.log({"step": 1, "val_loss": 2.0})
    assert read_jsonl(path) == [{"step": 0, "loss": 2.5, "lr": 0.5}, {"step": 1, "val_loss": 2.0}]
    JsonlLogger(path).log(step=2)  # a log is appended to, never emptied
    assert len(read_jsonl(path)) == 3
    JsonlLogger(path, enabled=False).log(step=5)
    assert len(read_jsonl(path)) == 3


def test_read_run_gives_the_newest_run_and_joins_a_resumed_one():
    first = [{"run": "a", "resumed_at": None}, {"step": 0, "loss": 9.0}]
    second = [{"run": "b", "resumed_at": None}, {"step": 0, "loss": 5.0}, {"step": 1, "loss": 4.0},
              {"step": 2, "val_loss": 4.5}, {"step": 2, "loss": 3.0}]  # stopped during step 3
    resumed = [{"run": "b", "resumed_at": 2}, {"step": 2, "loss": 3.5}, {"step": 3, "loss": 2.0}]
    assert newest_run(first + second) == second[1:]
    assert newest_run(first + second + resumed) == second[1:4] + resumed[1:]
    assert newest_run([{"step": 0}]) == [{"step": 0}]  # a log without headers is one run


def test_read_jsonl_reports_the_bad_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0}\n\n{"step": 1\n')
    with pytest.raises(ValueError, match="line 3"):
        read_jsonl(str(path))


def test_runtime_on_cpu():
    rt = setup_runtime("cpu", "float32")
    assert rt.device == "cpu" and rt.device_type == "cpu" and rt.dtype == torch.float32
    assert not rt.scaler.is_enabled() and not rt.fused_adamw
    model = torch.nn.Linear(4, 4)
    assert rt.maybe_compile(model) is model
    with rt.autocast():
        assert model(torch.randn(2, 4)).dtype == torch.float32
    bf16 = setup_runtime("cpu", "bfloat16")
    with bf16.autocast():
        assert model(torch.randn(2, 4)).dtype == torch.bfloat16
    assert setup_runtime("auto").device in ("cpu", "cuda:0")


def test_runtime_errors_name_the_flag_and_the_fix():
    with pytest.raises(ConfigError, match="--dtype float16 needs CUDA"):
        setup_runtime("cpu", "float16")
    with pytest.raises(ConfigError, match="--dtype 'fp8'"):
        setup_runtime("cpu", "fp8")
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        setup_runtime("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device 'cuda': CUDA is not available"):
            setup_runtime("cuda")


def test_distributed_fallback_without_torchrun(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
    value = torch.tensor(3.0)
    assert all_reduce_mean(value) is value
    cleanup_distributed()  # a no-op, must not fail


def test_distributed_single_process_group_with_gloo(monkeypatch):
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    info = init_distributed(backend="gloo")
    try:
        assert info.enabled and info.is_main and info.world_size == 1
        assert math.isclose(all_reduce_mean(torch.tensor(3.0)).item(), 3.0)
    finally:
        cleanup_distributed()
