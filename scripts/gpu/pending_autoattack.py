"""Print the run directories of ablation tables that still need AutoAttack on this machine: their ``best.pt`` is
here (weights do not travel between slices) and the evaluation CSV has no ``autoattack`` row for that checkpoint.

Usage: python scripts/gpu/pending_autoattack.py EVAL_CSV TABLE.csv...   (missing files are skipped)
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def pending(eval_csv: Path, tables: list[Path]) -> list[str]:
    done = {Path(row["checkpoint"]).parent.as_posix() for row in rows(eval_csv) if row.get("attack") == "autoattack"}
    found: list[str] = []
    for table in tables:
        for row in rows(table):
            run_dir = row.get("run_dir") or ""
            if run_dir and (Path(run_dir) / "best.pt").is_file() and Path(run_dir).as_posix() not in done:
                found.append(run_dir)
    return list(dict.fromkeys(found))  # the teacher row of several tables once


if __name__ == "__main__":
    print("\n".join(pending(Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]])))
