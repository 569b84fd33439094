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
