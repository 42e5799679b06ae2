"""The lesson notebooks, run top to bottom as a learner would run them.

Each lesson ends by printing the number behind its claim and asserting it, so a library change
that breaks a lesson (or the claim it makes) fails here. A notebook is read from notebooks/, run in
memory from the repository root, and never written back: the committed copy keeps its outputs.

    python -m pytest tests/test_notebooks.py             # every lesson, one test each
    python -m pytest tests/test_notebooks.py -k 02_      # one lesson

The time each notebook took is printed after the test results.
"""

import sys
import time
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 900  # per cell: the first lesson to need a model trains it (about 6 min on 2 cores)
KERNEL_NAME = "python3"


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, this_python_kernel, run_times, record_property):
    nb = nbformat.read(path, as_version=4)  # executed in memory; the file is left as it is
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(ROOT)}})  # cwd: the repo root
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, with the cell and traceback, on an error
    finally:
        seconds = time.perf_counter() - start
        run_times[path.name] = seconds
        record_property("seconds", round(seconds, 1))
