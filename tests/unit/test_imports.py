"""No import cycle: every module of the package imports alone, in a fresh interpreter.

A cycle shows only when the import starts at the wrong module, so each one starts its
own interpreter; a function-local import to dodge a cycle is caught by the second test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "deploykit"
MODULES = sorted(
    ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
)


def test_every_module_of_the_package_is_listed():
    assert "deploykit.rollout.engine" in MODULES and "deploykit.commands.shell" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(module):
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_no_module_of_the_package_imports_inside_a_function():
    local = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        local.append(f"{path.relative_to(REPO_ROOT)}:{inner.lineno}")
    assert local == []
