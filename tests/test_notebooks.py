"""The lesson notebooks, run top to bottom as a learner would run them.

Each lesson ends by printing the number behind its claim and asserting it, so a library change
that breaks a lesson (or the claim it makes) fails here. A notebook is read from notebooks/, run in
memory from the repository root, and never written back: the committed copy keeps its outputs.

    python -m pytest tests/test_notebooks.py             # every lesson, one test each
    python -m pytest tests/test_notebooks.py -k 02_      # one lesson

The lessons run two at a time (one per core, each kernel on one thread; NOTEBOOK_WORKERS), in
subprocesses started when the first lesson test runs: most lessons train small models, which
use one core about as well as two, so two at once take little more than one. The first lesson to
need the shared lesson stages starts first, the lessons that need none run beside it while it
trains them, and nanollm.lessons.train_once makes any other lesson that needs a stage wait for
it rather than train it again. The time each notebook took (sharing the machine) is printed after
the test results.
"""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager

from nanollm.corpus import prepare_corpus
from nanollm.world import world_corpus

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 1800  # per cell: the first lesson to need a model trains it (about 8 min on 1 core)
KERNEL_NAME = "python3"
NOTEBOOK_WORKERS = max(1, min(2, os.cpu_count() or 1))  # lessons run at once
# needing one of these, a lesson waits for the shared stages (nanollm/lessons.py)
NEEDS_STAGES = ("lesson_stage(", "lesson_reward_model(", "lesson_ppo_on_length(", "LESSON_DIR")
RUN_ONE = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)  # executed in memory; the file is left as it is
NotebookClient(nb, timeout=int(sys.argv[2]), kernel_name=sys.argv[3],
               resources={"metadata": {"path": sys.argv[4]}}).execute()  # cwd: the repo root
"""


class RunTimes:
    """A pytest plugin that lists how long each notebook took, after the results (even with -q)."""

    def __init__(self):
        self.seconds = {}

    def pytest_terminal_summary(self, terminalreporter):
        if self.seconds:
            terminalreporter.write_sep("-", "notebook run times")
            for name, seconds in self.seconds.items():
                terminalreporter.write_line(f"{seconds:6.1f} s  {name}")


@pytest.fixture(scope="session")
def run_times(pytestconfig):
    plugin = RunTimes()
    pytestconfig.pluginmanager.register(plugin, "nanollm-notebook-run-times")
    return plugin.seconds


@pytest.fixture(scope="session")
def this_python_kernel(tmp_path_factory):
    """Make the "python3" kernel start the interpreter that runs pytest.

    Otherwise Jupyter picks the first "python3" kernel spec it finds, and one left in a user folder
    (~/.local/share/jupyter/kernels) can start another Python that lacks torch or nanollm. Folders
    in JUPYTER_PATH are searched first, so a spec written there for sys.executable wins.
    """
    folder = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(folder / "kernels" / KERNEL_NAME)  # argv: [sys.executable, "-m", ...]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(folder))
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        assert spec.argv[0] == sys.executable, spec.argv
        yield


def test_there_are_lessons():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_with_outputs(path):
    """Learners read the outputs on GitHub: every code cell ran, in order, without an error."""
    nb = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1)), (
        f"{path.name}: run it top to bottom in a fresh kernel and save it with its outputs")
    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name} was saved with an error: {errors[0].ename}"


def needs_stages(path):
    return any(name in path.read_text() for name in NEEDS_STAGES)


def run_order(paths):
    """The first lesson that needs the shared stages (it trains them), then every lesson that
    needs none (they run beside it), then the rest in order."""
    staged = [p for p in paths if needs_stages(p)]
    return staged[:1] + [p for p in paths if not needs_stages(p)] + staged[1:]


def execute(path):
    """Run one notebook top to bottom in a fresh kernel: (seconds, None or the error's text)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUN_ONE, str(path), str(CELL_TIMEOUT_S),
                          KERNEL_NAME, str(ROOT)], cwd=ROOT, capture_output=True, text=True)
    error = None if out.returncode == 0 else (out.stdout + out.stderr)[-6000:]
    return time.perf_counter() - start, error


@pytest.fixture(scope="session")
def notebook_runs(request, this_python_kernel):
    """The run of every notebook this session tests, all started at once in NOTEBOOK_WORKERS
    subprocesses: path -> future of execute(path). The world's corpus is prepared first, so
    that no two lessons write it."""
    selected = [item.callspec.params["path"] for item in request.session.items
                if item.originalname == "test_notebook_runs"]
    prepare_corpus("world", str(ROOT / "data" / "world"), verbose=False,
                   **world_corpus("world", 3_000_000))
    threads = max(1, (os.cpu_count() or 1) // NOTEBOOK_WORKERS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", str(threads))  # torch's threads in each kernel
        pool = ThreadPoolExecutor(NOTEBOOK_WORKERS)
        futures = {path: pool.submit(execute, path) for path in run_order(selected)}
        yield futures
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, notebook_runs, run_times, record_property):
    seconds, error = notebook_runs[path].result()
    run_times[path.name] = seconds
    record_property("seconds", round(seconds, 1))
    assert error is None, f"{path.name} failed:\n{error}"


def test_run_order_starts_the_stages_first():
    order = run_order(NOTEBOOKS)
    assert sorted(order) == sorted(NOTEBOOKS)
    first_staged = next(p for p in NOTEBOOKS if needs_stages(p))
    assert order[0] == first_staged
    free = [p for p in NOTEBOOKS if not needs_stages(p)]
    assert order[1:1 + len(free)] == free
