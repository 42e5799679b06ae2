"""The benchmark runs end to end on a tiny size and writes a table and JSON with sane figures."""

import json
import math

import numpy as np

from nanollm import bench


def test_quick_benchmark_writes_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--sizes", "tiny", "--dtypes", "float32", "--quick", "--json_out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    kinds = {(r["what"], r["mode"], r["batch"]) for r in rows}
    assert {("train", "eager", 32), ("generate", "kv-cache", 1), ("generate", "no cache", 1),
            ("generate", "kv-cache", 64), ("ppo iteration", "eager", 64)} <= kinds
    assert all(r.get("tokens_per_s", 1) > 0 and r.get("seconds", 1) > 0 for r in rows)
    train = next(r for r in rows if r["what"] == "train")
    assert 0 < train["mfu"] < 1  # a fraction of the machine's peak, never more
    assert "| train | tiny | float32 |" in capsys.readouterr().out


def test_loss_check_is_deterministic_and_learns():
    """Same weights and batches for every dtype: two float32 runs agree exactly, and the loss
    ends below its start (ln V for random weights)."""
    from nanollm.runtime import setup_runtime
    data = np.tile(np.arange(50, dtype=np.uint16), 200)  # a repeating pattern, easy to learn
    runtime = setup_runtime("cpu", "float32")
    first, second = (bench.loss_after_training(runtime, data, steps=3, size="tiny")
                     for _ in range(2))
    assert first == second
    assert first < math.log(bench.SIZES["tiny"][0]["vocab_size"])
