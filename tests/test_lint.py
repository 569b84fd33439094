"""Lint as part of the test command: ruff (the version pinned in requirements-dev.txt) finds nothing under
pyproject.toml's [tool.ruff] rules."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_reports_nothing():
    # --no-cache: nothing written into the checkout; ruff reads pyproject.toml from REPO (its working directory).
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "No module named ruff" not in run.stderr, "ruff is a test dependency: pip install -r requirements-dev.txt"
    assert run.returncode == 0, f"ruff check found problems:\n{run.stdout}{run.stderr}"


MAX_FUNCTION_LINES = 60  # a longer function is split into named steps (STYLE: small pieces, one idea each)


def test_no_function_outside_the_tests_is_over_60_lines():
    import ast

    long = []
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if parts[0] == "tests" or any(part.startswith(".") or part == "site-packages" for part in parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # from `def` to its last line
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these into named steps:\n" + "\n".join(long)
