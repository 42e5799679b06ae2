"""The layout the project promises: the library never imports the world."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# the commands that run the world end to end may import it
WORLD_RUNNERS = {"nanollm/pipeline.py", "nanollm/lessons.py"}


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_library_never_imports_the_world():
    offenders = []
    for path in sorted((ROOT / "nanollm").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith("nanollm/world/") or name in WORLD_RUNNERS:
            continue
        offenders += [f"{name} imports {m}" for m in imported_modules(path)
                      if m == "nanollm.world" or m.startswith("nanollm.world.")]
    assert not offenders, offenders


def test_the_check_sees_a_world_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from nanollm.world.rater import PERSONAS\nimport nanollm.world\n")
    assert list(imported_modules(bad)) == ["nanollm.world.rater", "nanollm.world"]


def test_nothing_edits_sys_path():
    files = [*ROOT.glob("*.py"), *ROOT.glob("data/*.py"), *ROOT.glob("tests/*.py"),
             *(ROOT / "nanollm").rglob("*.py"), *ROOT.glob("notebooks/*.ipynb")]
    edits = [f.name for f in files if "sys.path." + "insert" in f.read_text()
             or "sys.path." + "append" in f.read_text()]
    assert not edits, edits
