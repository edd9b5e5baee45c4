"""The dependency rules of docs/ARCHITECTURE.md, each a test that fails when broken.

Imports anywhere in a module count, including those inside functions."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)
MAX_LINES = 420  # "about 400": an operator module or an explorer module past this is split


def imports_of(path: Path) -> set[str]:
    """Dotted names a module imports (absolute imports; the project uses no relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}"
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def modules(folder: str) -> dict[str, set[str]]:
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        out[str(path.relative_to(ROOT))] = imports_of(path)
    return out


def offenders(folder: str, forbidden) -> list[str]:
    return [f"{mod} imports {name}" for mod, names in modules(folder).items() for name in sorted(names)
            if forbidden(mod, name)]


def top(name: str) -> str:
    return name.split(".")[0]


def test_backends_import_no_qt_widgets_or_explorer():
    assert not offenders("backends", lambda m, n: top(n) in {"PySide6", "pyqtgraph", "shiboken6", "widgets", "explorer"})


def test_widgets_import_neither_torch_nor_backends_nor_explorer():
    assert not offenders("widgets", lambda m, n: top(n) in {"torch", "backends", "explorer"})


def _owner(module_stem: str) -> str:
    """The operator a module of backends/ops belongs to: deformable.py, _deformable_panels.py and
    _deformable_offsets.py all to deformable (the longest operator name that prefixes it)."""
    public = sorted((p.stem for p in (ROOT / "backends/ops").glob("[!_]*.py")), key=len, reverse=True)
    bare = module_stem.lstrip("_")
    return next((p for p in public if bare == p or bare.startswith(p + "_")), bare)


def test_operators_never_import_other_operators():
    """An operator's modules (it and its private siblings _<name>_*.py) import no other operator's."""
    def bad(mod: str, name: str) -> bool:
        parts = name.split(".")
        if parts[:2] != ["backends", "ops"] or len(parts) < 3:
            return False
        target = parts[2]
        if not (ROOT / "backends/ops" / f"{target}.py").exists():
            return False  # a name imported from backends.ops itself
        return _owner(target) != _owner(Path(mod).stem)
    assert not offenders("backends/ops", bad)


def test_training_never_imports_operators():
    assert not offenders("backends/training", lambda m, n: n.startswith("backends.ops"))


def test_models_import_neither_operators_nor_training():
    assert not offenders("backends/models", lambda m, n: n.startswith(("backends.ops", "backends.training")))


def test_data_imports_no_operators_training_or_models():
    assert not offenders("backends/data", lambda m, n: n.startswith(("backends.ops", "backends.training", "backends.models")))


def test_lab_imports_only_functional_imaging_and_models():
    """backends/lab (the user's own models) may use functional, imaging and models; never operators."""
    def bad(mod: str, name: str) -> bool:
        return top(name) == "backends" and not name.startswith(
            ("backends.lab", "backends.functional", "backends.imaging", "backends.models"))
    assert not offenders("backends/lab", bad)


def test_functional_cores_import_only_numerics_and_each_other():
    allowed = {"torch", "numpy", "cv2"} | STDLIB

    def bad(mod: str, name: str) -> bool:
        if name.startswith(("backends.functional", "backends.imaging")):
            return False
        return top(name) not in allowed or top(name) == "backends"
    if not (ROOT / "backends/functional").is_dir():
        pytest.fail("backends/functional/ is missing")
    assert not offenders("backends/functional", bad)


@pytest.mark.parametrize("folder", ["backends/ops", "explorer"])
def test_no_module_is_a_god_file(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).glob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these (over {MAX_LINES} lines): {long}"


QT_BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6'):
            raise ImportError('Qt is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def run_without_qt(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", QT_BLOCKER + code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_backends_and_every_operator_work_with_qt_unimportable():
    proc = run_without_qt("""
import torch
from backends.registry import operator_names, operator_class, validated_params
for name in operator_names():
    operator_class(name)
assert 'dilated' in operator_names()
op = operator_class('dilated')()
op.compute(torch.rand(1, 3, 32, 32), validated_params('dilated', {}), None)
print('ok', len(operator_names()))
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_the_engine_and_the_display_encoding_run_without_qt():
    """What a remote worker needs: requests in, display-form layers out, no GUI toolkit."""
    proc = run_without_qt("""
import numpy as np, torch
from explorer.engine import ComputeEngine
from explorer.messages import Frame, Request, freeze
from backends.registry import validated_params
engine = ComputeEngine(torch.device('cpu'))
frame = engine.compute(Request(1, 'dilated', freeze(validated_params('dilated', {})), None, 1,
                               np.zeros((24, 32, 3), np.float32)))
assert isinstance(frame, Frame), frame
print('ok', frame.result.names)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
