"""The pipeline command end to end, on tiny models: every stage runs, and the report holds each
stage's figures, the PPO-vs-DPO table, the arena and the plots."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_pipeline_writes_the_report(tmp_path):
    out_dir = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "nanollm.pipeline", "--smoke", "--out_dir",
                           str(out_dir), "--arena_questions", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("pretrain", "sft", "reward", "rlhf", "dpo"):
        assert (out_dir / f"{stage}.pt").exists(), stage
    report = (out_dir / "report" / "report.md").read_text()
    for heading in ("| stage | seconds | figure | value |", "## PPO against DPO", "## Arena"):
        assert heading in report
    for model in ("| sft |", "| rlhf |", "| dpo |"):  # rows of the PPO-vs-DPO table
        assert model in report
    arena = report.split("## Arena")[1]
    assert all(name in arena for name in ("pretrain", "sft", "rlhf", "dpo"))
    assert (out_dir / "report" / "pretrain_curves.png").exists()
    assert "pipeline finished" in done.stdout
