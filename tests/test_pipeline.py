"""The pipeline command end to end, on tiny models: every stage runs, and the report holds the
acceptance checks, each stage's figures, the PPO-vs-DPO-vs-GRPO comparison, the arena and the
plots.
The acceptance checks, on figures made up to pass and then to fail one at a time."""

import os
import re
import subprocess
import sys

from nanollm.pipeline import acceptance_checks, host_speed, training_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _passing():
    """Comparison rows and arena rows on which every check passes."""
    rows = {"sft": dict(accuracy=0.90, sampled_disliked_rate=0.30),
            "rlhf": dict(accuracy=0.91, sampled_disliked_rate=0.05, gain=(0.05, 0.02, 0.08)),
            "dpo": dict(accuracy=0.89, sampled_disliked_rate=0.08, gain=(0.04, 0.01, 0.07))}
    arena = [dict(name="dpo", low=1100, high=1150), dict(name="rlhf", low=1080, high=1140),
             dict(name="sft", low=1000, high=1050), dict(name="pretrain", low=850, high=950)]
    return rows, arena


def _failed(rows, arena):
    return [statement for statement, passed, _ in acceptance_checks(rows, arena) if not passed]


def test_acceptance_checks_pass_and_fail_on_the_figures():
    rows, arena = _passing()
    checks = acceptance_checks(rows, arena)
    assert len(checks) == 9 and all(passed for _, passed, _ in checks)
    assert any("+0.050, +0.020 to +0.080" in evidence for _, _, evidence in checks)

    rows, arena = _passing()
    rows["dpo"]["gain"] = (0.02, -0.01, 0.05)  # an interval that straddles 0
    assert _failed(rows, arena) == ["DPO's gain in gold reward over SFT: the 95% interval lies "
                                    "above 0"]
    rows, arena = _passing()
    rows["sft"]["sampled_disliked_rate"] = 0.19
    assert _failed(rows, arena) == ["SFT's sampled answers: at least 20% in a disliked style"]
    rows, arena = _passing()
    rows["rlhf"]["sampled_disliked_rate"] = 0.16  # more than half of SFT's 30%
    assert _failed(rows, arena) == ["PPO's sampled answers: disliked styles at most half of "
                                    "SFT's"]
    rows, arena = _passing()
    rows["rlhf"]["accuracy"] = 0.87  # 3 points below SFT
    assert _failed(rows, arena) == ["PPO's held-out accuracy at most 2 points below SFT's"]
    rows, arena = _passing()
    rows["rlhf"]["accuracy"] = 0.99  # far above SFT: a gain, not a failure
    assert _failed(rows, arena) == []
    rows, arena = _passing()
    arena[1]["low"] = 1040  # PPO's interval overlaps SFT's
    assert _failed(rows, arena) == ["arena: DPO and PPO above SFT, their intervals clear of "
                                    "SFT's"]
    rows, arena = _passing()
    arena[3]["high"] = 1010
    assert _failed(rows, arena) == ["arena: SFT above pretrain, the intervals clear of each "
                                    "other"]


def test_host_speed_is_measured():
    gflops = float(re.match(r"(\d+) GFLOP/s", host_speed(n=256, seconds=0.2)).group(1))
    assert gflops > 0


def test_smoke_pipeline_writes_the_report(tmp_path):
    out_dir = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "nanollm.pipeline", "--smoke", "--out_dir",
                           str(out_dir), "--arena_questions", "20", "--held_out_questions", "40",
                           "--kl_questions", "16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for run in training_runs(str(out_dir)):
        assert os.path.exists(os.path.join(run.folder, f"{run.stage}.pt")), run.name
    assert (out_dir / "grpo" / "rlhf.pt").exists()  # GRPO beside PPO, not over it
    report = (out_dir / "report" / "report.md").read_text()
    for heading in ("## Acceptance", "## Stages", "### sft", "### grpo",
                    "## PPO against DPO and GRPO", "## Arena"):
        assert heading in report
    assert re.search(r"Host: \d+ GFLOP/s .* Total time: \d+ s\.", report)
    acceptance = report.split("## Acceptance")[1].split("## Stages")[0]
    assert len(re.findall(r"^- \*\*(PASS|FAIL)\*\* ", acceptance, flags=re.M)) == 9
    for model in ("| sft |", "| rlhf |", "| dpo |", "| grpo |"):  # rows of the comparison
        assert model in report
    for model in ("rlhf", "grpo"):  # the gain over SFT with its interval
        assert re.search(rf"\| {model} \| [+-]\d\.\d{{3}} \| [+-]\d\.\d{{3}} to "
                         r"[+-]\d\.\d{3} \|", report), model
    # PPO and GRPO record their peak memory and wall time; the DPO checkpoint holds no memory
    for model in ("rlhf", "grpo"):
        assert re.search(rf"^\| {model} \| -?\d\.\d{{3}} .*\| \d+ MiB \| \d+ s \|$", report,
                         flags=re.M), model
    assert re.search(r"^\| dpo \| -?\d\.\d{3} .*\| - \| \d+ s \|$", report, flags=re.M)
    arena = report.split("## Arena")[1]
    assert all(name in arena for name in ("pretrain", "sft", "rlhf", "dpo"))
    assert (out_dir / "report" / "pretrain_curves.png").exists()
    assert (out_dir / "report" / "grpo_rlhf_curves.png").exists()
    assert "pipeline finished" in done.stdout
