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
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kdlab.errors import KdlabError

PACKAGES = ("kdlab", "torch", "torchvision", "torchattacks", "numpy", "pandas")


# What produced a number: the package, its build file, recipes and scripts. Result files (results/) are
# written by kdlab itself, so they never make the code "dirty".
CODE_PATHS = ("kdlab", "pyproject.toml", "recipes", "scripts", "benchmarks")


def _git(args: list[str], cwd: Path, ok_codes: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode not in ok_codes:
        raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
    return done.stdout


def code_state(source: Path | None = None) -> tuple[str, str]:
    """``(commit, diff)`` of the git checkout holding kdlab's source: the HEAD commit and the uncommitted
    changes to the code (tracked changes and untracked files under :data:`CODE_PATHS`, as one patch).
    ``("unknown", "")`` outside a git checkout (an installed package)."""
    source = source or Path(__file__).resolve().parent
    try:
        root = Path(_git(["rev-parse", "--show-toplevel"], source).strip())
        commit = _git(["rev-parse", "HEAD"], root).strip()
        paths = [path for path in CODE_PATHS if (root / path).exists()]
        if not paths:
            return commit, ""
        diff = _git(["diff", "HEAD", "--binary", "--", *paths], root)
        untracked = _git(["ls-files", "--others", "--exclude-standard", "--", *paths], root).split("\n")
        for name in filter(None, untracked):
            # --no-index exits 1 when the files differ, which they always do here
            diff += _git(["diff", "--binary", "--no-index", "--", "/dev/null", name], root, ok_codes=(0, 1))
    except (OSError, subprocess.SubprocessError):
        return "unknown", ""
    return commit, diff


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_facts() -> dict[str, str]:
    """The machine's compute device: ``device_name`` (the CUDA GPU's name when torch sees one, else the CPU's
    model), ``cpu_name`` and ``cuda`` (the CUDA version torch was built with, ``none`` for a CPU-only build), so
    the rows of a study that spans machines say which machine computed each."""
    import torch

    cuda = torch.version.cuda or "none"
    cpu = cpu_name()
    try:
        gpu = torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else ""
    except (RuntimeError, AssertionError):
        gpu = ""
    return {"device_name": gpu or cpu, "cpu_name": cpu, "cuda": cuda}


# A dirty tree's patch is stored beside the results it produced (results/diffs/<digest>.patch); one larger than
# this is refused: such a change (a data file, a checkpoint under recipes/) belongs in a commit, not in a patch
DIFF_LIMIT_BYTES = 1 << 20
DIFFS_FOLDER = "diffs"


def diff_digest(diff: str) -> str:
    """The ``git_diff_sha256`` of a patch: the first 16 hex digits of the SHA-256 of its UTF-8 bytes (the name of
    its file under ``results/diffs/``)."""
    return hashlib.sha256(diff.encode()).hexdigest()[:16]


def results_folder(table: str | Path) -> Path:
    """The results folder a table belongs to: its own folder (``results/runs.csv``, ``results/eval.csv``), or
    the one above for a table in an ``ablations`` folder (``results/ablations/<table>.csv``)."""
    folder = Path(table).parent
    return folder.parent if folder.name == "ablations" else folder


def store_diff(diff: str, results: str | Path) -> Path:
    """Save a dirty tree's patch as ``<results>/diffs/<digest>.patch`` (:func:`diff_digest`; ``git apply`` on a
    clean checkout of the row's commit restores the code) and return its path. Content-addressed: written once,
    atomically (a temporary file hard-linked into place), never overwritten; a patch over
    :data:`DIFF_LIMIT_BYTES` is refused before any work, naming the fix."""
    data = diff.encode()
    if len(data) > DIFF_LIMIT_BYTES:
        raise KdlabError(f"the uncommitted code changes are {len(data) / 2**20:.1f} MiB, over the "
                         f"{DIFF_LIMIT_BYTES // 2**20} MiB a results/{DIFFS_FOLDER}/ patch may hold: commit your "
                         f"changes (or move large files out of {', '.join(CODE_PATHS)}) and run again")
    path = Path(results) / DIFFS_FOLDER / f"{diff_digest(diff)}.patch"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)  # fails if another process stored it first: never overwritten
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    return path


def provenance(diff_to: Path | None = None, diffs: str | Path | None = None) -> dict[str, Any]:
    """What a reader needs to reproduce a number: code version, packages and machine (its device: :func:`device_facts`).

    When the code is dirty the commit reads ``<sha>-dirty`` and ``git_diff_sha256`` is the SHA-256 prefix of
    the uncommitted patch (:func:`diff_digest`); with ``diff_to`` the patch itself is saved there (``git apply``
    restores the code), and with ``diffs`` (a results folder, :func:`results_folder`) it is stored there under
    ``diffs/<git_diff_sha256>.patch`` (:func:`store_diff`), where ``kdlab verify`` finds it.
    """
    commit, diff = code_state()
    digest = diff_digest(diff) if diff else ""
    if diff and diffs is not None:
        store_diff(diff, diffs)
    if diff and diff_to is not None:
        atomic_write_text(diff_to, diff)
    return {
        "git_commit": commit + ("-dirty" if diff else ""),
        "git_diff_sha256": digest,
        "versions": package_versions(),
        "machine": platform.machine(),
        **device_facts(),
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


_WRITING: set[Path] = set()  # the tables whose writer lock this process holds (sole_writer nests)


@contextmanager
def sole_writer(*tables: str | Path) -> Iterator[None]:
    """Held while one process runs the cells of an ablation table or evaluates its runs (``kdlab ablate``,
    ``kdlab eval TABLE.csv``, ``kdlab table --with-eval``): each rewrites the whole CSV from the rows it has read
    and recorded, so a second process on the same table would drop the other's rows from it. The second is
    refused at once, with the fix (the lock dies with its process: a killed run leaves nothing to clean).
    ``kdlab ablate`` takes its tables' locks before its plan check where their folder exists, so a second one is
    refused before any work; a table this process already writes is not locked again (the commands nest)."""
    taken: list[tuple[Path, FileLock]] = []
    try:
        for table in map(Path, tables):
            if not table.parent.is_dir():
                raise KdlabError(f"table '{table}': its folder {table.parent} does not exist: check the path")
            key = table.resolve()
            if key in _WRITING:
                continue
            lock = FileLock(str(table) + ".writer.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise KdlabError(f"another kdlab process is writing {table} (kdlab ablate or kdlab eval of this "
                                 "table): wait for it to finish or stop it; one kdlab ablate runs cells in parallel "
                                 "with --jobs N") from None
            _WRITING.add(key)
            taken.append((key, lock))
        yield
    finally:
        for key, lock in reversed(taken):
            _WRITING.discard(key)
            lock.release()


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
        _append_locked(path, rows)


def _append_locked(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to the table at ``path``; the caller holds its lock."""
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


def replace_rows(path: str | Path, rows: Iterable[dict[str, Any]], key: str | tuple[str, ...]) -> None:
    """Like :func:`append_rows`, but first drop the table's rows whose ``key`` columns all equal a new row's: one
    row per ``key`` (e.g. one per run directory and device, so a run forced and finished again is not listed
    twice, while the same run trained on another processor, whose weights differ, keeps its own row)."""
    keys = (key,) if isinstance(key, str) else tuple(key)
    rows = [{name: _cell(value) for name, value in row.items()} for row in rows]
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replaced = {tuple(str(row.get(name, "")) for name in keys) for row in rows}
    with _lock_for(path):
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as stream:
                reader = csv.DictReader(stream)
                header = list(reader.fieldnames or [])
                existing = list(reader)
            kept = [row for row in existing if tuple(row.get(name) or "" for name in keys) not in replaced]
            if len(kept) < len(existing):
                new_columns = (name for row in rows for name in row if name not in header)
                columns = header + list(dict.fromkeys(new_columns))
                atomic_write_text(path, _render(columns, kept + rows, with_header=True))
                return
        _append_locked(path, rows)


def _render(columns: list[str], rows: list[dict[str, Any]], with_header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    if with_header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a table as the text written (no float parsing), read under its lock; ``[]`` if it is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    with _lock_for(path), path.open(newline="") as stream:
        return list(csv.DictReader(stream))


# Columns of kdlab's tables that hold hashes: always read as text. A hex digest that happens to look like a number
# (0123456789, 1234e56789: about 1 in 50 ten-digit ones) would otherwise be read as one and compare unequal.
DIGEST_COLUMNS = ("plan", "study_sha256", "teacher_sha256", "git_diff_sha256", "git_commit", "run_key",
                  "checkpoint_sha256", "test_sha256")


COUNT_COLUMNS = ("seed", "best_epoch", "eval_n", "eval_steps", "torch_threads", "tune_round", "tune_seeds",
                 "study_runs")
"""Columns of kdlab's tables that hold counts (and every ``<attack>_n``): :func:`table_csv` writes them as integers,
not as the floats pandas reads a column with a blank into (a diverged row's): a table rewritten after such a row
keeps the text of its other rows (``5``, not ``5.0``)."""

VERSION_COLUMNS = ("torch", "cuda", "final_eval_torch")
"""Columns holding a version, read back as text: CUDA ``12.10`` is not the number 12.1."""


def table_csv(frame: Any) -> str:
    """A table (a DataFrame) as CSV text, its :data:`COUNT_COLUMNS` whose values are all whole numbers written as
    integers, a blank where a row has none."""
    import pandas as pd

    frame = frame.copy()
    for column in frame.columns:
        if column not in COUNT_COLUMNS and not column.endswith("_n"):
            continue
        values = frame[column]
        given = values.notna() & (values.astype(str) != "")
        numbers = pd.to_numeric(values.where(given), errors="coerce")
        if numbers[given].notna().all() and (numbers[given] % 1 == 0).all():
            frame[column] = numbers.astype("Int64")
    return frame.to_csv(index=False)


def blank(value: Any) -> bool:
    """Whether a table cell holds nothing: None, an empty string, or the NaN pandas reads for an empty field."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def read_table(path: str | Path, text: tuple[str, ...] = ()):
    """A CSV table as a DataFrame, read under its lock (:func:`read_table_held`)."""
    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"table '{path}' not found: run an ablation or evaluation first, or check the path")
    with _lock_for(path):
        return read_table_held(path, text)


def read_table_held(path: str | Path, text: tuple[str, ...] = ()):
    """A CSV table as a DataFrame, read by a caller that holds its lock already (to rewrite it): the
    :data:`DIGEST_COLUMNS`, :data:`VERSION_COLUMNS` and the ``text`` columns as written (a digest such as
    ``0123456789abcdef`` or ``12e4...`` is not a number), so :func:`table_csv` writes them back unchanged."""
    import pandas as pd

    return pd.read_csv(path, dtype={column: str for column in (*DIGEST_COLUMNS, *VERSION_COLUMNS, *text)})


def rewrite_table(path: str | Path, change: Callable[[Any], Any]) -> Any:
    """Rewrite a CSV table in place under its lock: its rows read as written (:func:`read_table_held`), ``change``
    applied to that DataFrame (in place), the result written back atomically by :func:`table_csv` (nothing is
    written when ``change`` raises). Returns what ``change`` returns. The caller holds :func:`sole_writer`."""
    path = Path(path)
    with _lock_for(path):
        frame = read_table_held(path)
        result = change(frame)
        atomic_write_text(path, table_csv(frame))
    return result


def existing_ancestor(path: Path) -> Path:
    """``path`` if it exists, else its nearest ancestor that does: where kdlab will create what is missing."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_problem(folder: Path, existing_file: Path | None = None) -> str | None:
    """Whether kdlab can really write in ``folder``: write and delete a temporary file in the nearest folder that
    exists (``folder`` itself, or the ancestor where kdlab will create the missing ones: creating a folder needs
    the same rights as creating a file there), and open ``existing_file`` for appending (without writing). None
    when it can; else the OS's reason. Permission bits alone say nothing for root, on /proc or a read-only mount:
    the one probe of the plan check's output paths and of ``kdlab eval --out``. It creates no folder, so probes
    running at once (every torchrun rank checks its plan) cannot remove one another's folders or collide on one."""
    try:
        handle, name = tempfile.mkstemp(dir=existing_ancestor(folder), prefix=".kdlab-write-check-")
        os.close(handle)
        os.unlink(name)
        if existing_file is not None:
            with open(existing_file, "a"):
                pass
    except OSError as error:
        return error.strerror or str(error)
    return None
