"""GPU-only tests: every test in this folder is marked ``gpu`` (``pytest -m gpu`` runs just them, ``-m "not gpu"``
leaves them out); each module still skips itself where no CUDA GPU is visible."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the marks
def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.gpu)
