"""Results as data: run directories, provenance, and atomically appended CSV tables.

Every table kdlab writes (``results/runs.csv``, ``results/eval.csv``, ablation tables) goes
through :func:`append_rows`, which takes a cross-process file lock, reads the header, and
appends whole lines with a single write followed by fsync. Parallel runs therefore never
drop or tear rows. A row with a column the table does not have yet rewrites the table with
the union of columns (atomically, through a temporary file and ``os.replace``) so no
earlier row is lost.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from kdlab.errors import KdlabError

PACKAGES = ("kdlab", "torch", "torchvision", "torchattacks", "numpy", "pandas")


def git_commit() -> str:
    """The commit of the kdlab source tree ('-dirty' if it has uncommitted changes), or 'unknown'."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance() -> dict[str, Any]:
    """What a reader needs to reproduce a number: code version, packages and machine."""
    return {
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": platform.machine(),
        "finished_at": now(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise KdlabError(f"cannot read {path}: {error}; the run directory may be incomplete") from None


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _lock_for(path: Path) -> FileLock:
    return FileLock(str(path) + ".lock", timeout=600)


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows to a CSV table under a file lock; new columns widen the table without losing rows."""
    rows = [{key: _cell(value) for key, value in row.items()} for row in rows]
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock_for(path):
        header: list[str] = []
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as stream:
                header = next(csv.reader(stream), [])
        new_columns = [key for row in rows for key in row if key not in header]
        columns = header + list(dict.fromkeys(new_columns))
        if header and new_columns:
            with path.open(newline="") as stream:
                existing = list(csv.DictReader(stream))
            atomic_write_text(path, _render(columns, existing + rows, with_header=True))
            return
        text = _render(columns, rows, with_header=not header)
        with path.open("a", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())


def _render(columns: list[str], rows: list[dict[str, Any]], with_header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    if with_header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"table '{path}' not found: run an ablation or evaluation first, or check the path")
    with _lock_for(path):
        return pd.read_csv(path)
