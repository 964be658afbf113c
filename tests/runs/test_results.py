"""Results tables: atomic, locked appends never lose or tear rows; new columns keep old rows."""

import csv
import multiprocessing
import subprocess
from pathlib import Path

from kdlab.results import append_rows, package_versions, provenance


def _writer(path: str, worker: int, rows: int) -> None:
    for index in range(rows):
        append_rows(path, [{"worker": worker, "index": index, "payload": "x" * 200}])


def test_concurrent_writers_lose_no_rows(tmp_path):
    path = str(tmp_path / "table.csv")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
        assert process.exitcode == 0
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 160
    assert {(r["worker"], r["index"]) for r in rows} == {(str(w), str(i)) for w in range(4) for i in range(40)}
    assert all(r["payload"] == "x" * 200 for r in rows)


def test_new_columns_widen_the_table_without_losing_rows(tmp_path):
    path = tmp_path / "t.csv"
    append_rows(path, [{"a": 1}])
    append_rows(path, [{"a": 2, "b": "new"}])
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows == [{"a": "1", "b": ""}, {"a": "2", "b": "new"}]


def test_provenance_names_versions_and_commit():
    versions = package_versions()
    assert versions["torch"].startswith("2.14.1")
    # the commit is git's own HEAD of this checkout (or "unknown" outside one, e.g. an installed package)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=False)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert provenance()["git_commit"].removesuffix("-dirty") == expected
