"""Running the training scripts as a user would, for the tests of the later stages."""

import atexit
import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nanollm.errors import UserError, one_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args):
    """Run `python script *args` from the repository root; fail the test on a non-zero exit."""
    out = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


_CHAINS = {}  # scripts run after the smoke pretraining (a tuple) -> a folder with their stages


def _chain_folder(scripts):
    """A folder of this test session holding the smoke pretraining and then `scripts`, each run
    once per session: the test modules of the later stages share the stages before theirs."""
    if scripts not in _CHAINS:
        folder = Path(tempfile.mkdtemp(prefix="smoke_chain_"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        if scripts:
            shutil.copytree(_chain_folder(scripts[:-1]), folder, dirs_exist_ok=True)
            run_script(scripts[-1], "--smoke", "--out_dir", folder)
        else:
            run_script("train_pretrain.py", "--smoke", "--out_dir", folder,
                       "--data_dir", folder / "data")
        _CHAINS[scripts] = folder
    return _CHAINS[scripts]


def smoke_chain(out_dir, *scripts):
    """out_dir holding the smoke pretraining, then each script's stage in smoke mode, as if run
    there in turn (copied from the session's folders when another module ran them already)."""
    shutil.copytree(_chain_folder(tuple(scripts)), out_dir, dirs_exist_ok=True)
    return out_dir


def run_inprocess(script, args):
    """Run `python script args` in this process: (exit status, stdout and stderr). A SystemExit
    with a message and an uncaught UserError end as the interpreter would end them: status 1
    and the message printed (for a UserError, the one line of errors.report_user_errors)."""
    argv, excepthook = sys.argv, sys.excepthook
    sys.argv = [script, *map(str, args)]
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
        if isinstance(code, str):  # raise SystemExit("message"): printed, status 1
            output.write(code + "\n")
            code = 1
    except UserError as err:
        code = 1
        output.write(one_line(err) + "\n")
    finally:
        sys.argv, sys.excepthook = argv, excepthook
    return code, output.getvalue()
