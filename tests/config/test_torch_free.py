"""Configuration never imports torch: loading a recipe and computing its run key stay fast (a fresh interpreter)."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_a_run_key_imports_no_torch():
    result = _run("import sys; from kdlab.config.recipe import load_recipe; "
                  "load_recipe('recipes/quickstart.yaml').key(); assert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_the_dataset_facts_and_the_zoo_catalogue_import_no_torch():
    result = _run("import sys; import kdlab.config.datasets, kdlab.config.zoo, kdlab.config.paths, "
                  "kdlab.config.names; assert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr
