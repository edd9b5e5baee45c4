"""Import direction: backends/ never imports Qt; widgets/ never imports torch or backends/."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(folder: str) -> set[str]:
    names = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_backends_import_no_qt():
    assert not {"PySide6", "pyqtgraph", "widgets", "explorer"} & imported_modules("backends")


def test_widgets_import_neither_torch_nor_backends():
    assert not {"torch", "backends", "explorer"} & imported_modules("widgets")


def test_backends_and_every_operator_work_with_qt_unimportable():
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6'):
            raise ImportError('Qt is blocked in this test')
sys.meta_path.insert(0, Block())
import torch
from backends.registry import operator_names, operator_class, validated_params
for name in operator_names():
    operator_class(name)
assert 'dilated' in operator_names()
op = operator_class('dilated')()
op.run(torch.rand(1, 3, 32, 32), validated_params('dilated', {}), None)
print('ok', len(operator_names()))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
