"""The benchmark runs end to end on a tiny size and writes a table and JSON with sane figures."""

import json

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
