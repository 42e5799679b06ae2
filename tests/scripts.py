"""Running the training scripts as a user would, for the tests of the later stages."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args):
    """Run `python script *args` from the repository root; fail the test on a non-zero exit."""
    out = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def smoke_chain(out_dir, *scripts):
    """The smoke pretraining, then each script in smoke mode, all in out_dir."""
    run_script("train_pretrain.py", "--smoke", "--out_dir", out_dir, "--data_dir", out_dir / "data")
    for script in scripts:
        run_script(script, "--smoke", "--out_dir", out_dir)
    return out_dir
