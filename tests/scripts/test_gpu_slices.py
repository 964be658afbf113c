"""scripts/gpu/slice_*.sh end to end on the CPU with tiny settings (SLICE_TINY=1), issue #25: slice 1 on one
"machine" (a temporary folder), slice 2 on a fresh one that receives only slice 1's packed state (and the data
archive every slice is sent); slice 2 continues the component ablation from it and finishes it."""

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg"
TABLE = "results/ablations/mixacm_cifar10_fast-components.csv"
CELLS = ["teacher", "student-ce", "kd-only", "acm", "acm+kd", "acm+mixup", "mixacm"]


def tiny_archive(path: Path) -> Path:
    """CIFAR-10's layout with 20 training and 5 test JPEGs a class, as scripts/gpu/pack_inputs.sh packs it."""
    with tarfile.open(path, "w:gz") as archive:
        for split, count in (("train", 20), ("test", 5)):
            for folder in sorted((DATA / split).iterdir()):
                for image in sorted(folder.iterdir())[:count]:
                    archive.add(image, f"cifar10-jpeg/{split}/{folder.name}/{image.name}")
    return path


def slice_run(script: str, machine: Path, state: Path, archive: Path, seconds: int, reserve: int):
    env = {**os.environ, "SLICE_TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "OUT": str(machine / "out"), "SLICE_HOME": str(machine / "home"), "SLICE_STATE": str(state),
           "SLICE_DATA": str(archive), "SLICE_AA_N": "4", "SLICE_AA_SECONDS": "1", "SLICE_SANITY": "0",
           "SLICE_SECONDS": str(seconds), "SLICE_RESERVE": str(reserve), "SLICE_MIN_ABLATE": "5"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu" / script)], env=env, capture_output=True,
                            text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.slow  # ~3 min on 2 busy cores: a teacher, 6 tiny students and their AutoAttack on 4 images
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data/cifar10-jpeg")
def test_slice_2_continues_slice_1_on_a_fresh_machine(tmp_path):
    archive = tiny_archive(tmp_path / "cifar10-jpeg.tar.gz")
    first, second = tmp_path / "machine1", tmp_path / "machine2"
    # slice 1: the teacher, its AutoAttack, then ~30 s of the component ablation (stopped by --time-limit)
    log1 = slice_run("slice_1_teacher.sh", first, tmp_path / "no-state", archive, seconds=120, reserve=40)
    state = first / "out" / "state"
    manifest = json.loads((state / "manifest.json").read_text())
    assert len(list(state.iterdir())) <= 8 and all(part["bytes"] <= 16 * 2**20 for part in manifest["parts"])
    assert (first / "out" / "log.txt").is_file() and "kdlab train" in log1
    teacher = [entry["path"] for entry in manifest["files"] if entry["path"].endswith("summary.json")
               and "cifar10-fast-at-teacher" in entry["path"]]
    assert len(teacher) == 1, manifest["files"]
    before = {row["cell"]: row["run_dir"] for row in rows(first / "home" / "work" / TABLE)} \
        if (first / "home" / "work" / TABLE).is_file() else {}

    # slice 2 on a fresh machine: only the packed state of slice 1 travels
    # a budget no busy machine exhausts, so slice 2 always finishes (slice 1's stop is what is under test; a
    # tighter budget made this test depend on the machine's load)
    log2 = slice_run("slice_2_components_s0.sh", second, state, archive, seconds=3600, reserve=60)
    assert "kdlab train" not in log2 and "unpacking the previous slice's state" in log2
    work = second / "home" / "work"
    table = rows(work / TABLE)
    assert [row["cell"] for row in table] == CELLS
    assert all(row["clean_acc"] and row["pgd_acc"] for row in table)
    # the teacher came from the pack, not trained again: its summary is slice 1's, byte for byte
    assert (work / teacher[0]).read_bytes() == (first / "home" / "work" / teacher[0]).read_bytes()
    # cells finished in slice 1 were reused, not retrained
    for cell, run_dir in before.items():
        assert {row["cell"]: row["run_dir"] for row in table}[cell] == run_dir
        summary = json.loads((work / run_dir / "summary.json").read_text())
        assert summary == json.loads((first / "home" / "work" / run_dir / "summary.json").read_text())
    # every run of this slice (and the teacher, from slice 1) has its AutoAttack row, merged into the table
    evaluated = {Path(row["checkpoint"]).parent.as_posix() for row in rows(work / "results" / "eval.csv")
                 if row["attack"] == "autoattack"}
    assert {row["run_dir"] for row in table} <= evaluated
    assert all(row["autoattack_acc"] != "" for row in table)
    assert (second / "out" / "state" / "manifest.json").is_file() and (second / "out" / "tables.md").is_file()
