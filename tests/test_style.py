"""The code's style: ruff (the linter the field's Python projects use, pinned in the ``test`` extra so that a new
release's rules cannot fail CI on unchanged code) finds nothing in ``kdlab/`` and ``tests/`` under the settings of
``pyproject.toml``. docs/development.md, "Style"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "kdlab", "tests"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
