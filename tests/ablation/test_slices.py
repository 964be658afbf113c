"""An ablation in time slices (kdlab.ablation.slices, ``kdlab ablate --time-limit``) carried between machines
(kdlab.ablation.pack, ``kdlab pack`` / ``kdlab unpack``): a study stopped by its limit, resumed, packed and
continued in a fresh folder ends with the table of an uninterrupted study.

The clock is fake and deterministic: every training epoch takes 10 s on it (the engine's checkpoint write advances
it) and nothing else takes time, so which cell stops where is known in advance."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kdlab.ablation.pack import MIB, Limits, pack_state, unpack_state
from kdlab.ablation.slices import STOPPED_EXIT, TimeSlice, parse_duration
from kdlab.errors import KdlabError
from tests.helpers.failfast import assert_one_line_error, invoke
from tests.helpers.tiny_study import write_pair

GRID = "train.lr=0.05,0.1,0.2"
TABLE = "results/ablations/sl-grid-train.lr.csv"
# what a cell computed (not when, where or by which command)
COMPARED = ["cell", "seed", "setting", "clean_acc", "pgd_acc", "best_epoch", "select"]


@pytest.fixture()
def repo(tmp_path):
    """The researcher's recipes, the same on every machine (output paths: kdlab's relative defaults)."""
    folder = write_pair(tmp_path / "repo", "sl", teacher_epochs=2, student_epochs=3)
    return folder


@pytest.fixture()
def clock(monkeypatch):
    """A fake clock on which each epoch (each last.pt written) takes 10 s."""
    import kdlab.ablation.slices
    import kdlab.train.engine

    now = [1000.0]
    real_save = kdlab.train.engine.save_state

    def save_and_tick(*args, **kwargs):
        real_save(*args, **kwargs)
        now[0] += 10.0

    monkeypatch.setattr(kdlab.train.engine, "save_state", save_and_tick)
    monkeypatch.setattr(kdlab.ablation.slices, "clock", lambda: now[0])
    return now


def ablate(repo, *extra):
    return invoke("ablate", str(repo / "student.yaml"), "--grid", GRID, "--threads", "1",
                  "--out", "results/ablations", *extra)


def compared(folder):
    frame = pd.read_csv(folder / TABLE)
    return frame[COMPARED].to_dict("records")


def training_curves(folder):
    curves = {}
    for run in sorted((folder / "results/runs").glob("sl-lr_*")):
        frame = pd.read_csv(run / "metrics.csv").drop(columns=["epoch_seconds", "images_per_s"])
        curves[run.name] = frame.to_dict("records")
    assert len(curves) == 3 and all(len(rows) == 3 for rows in curves.values())
    return curves


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("9m", 540), ("1h30m", 5400), ("1h", 3600),
                                               ("2m30s", 150)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "9", "9x", "m", "0s", "30s2m", "-5m", "1.5h"])
def test_a_bad_time_limit_is_refused_in_one_line_before_any_work(repo, tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    result = ablate(repo, "--time-limit", text)
    assert result.exit_code == 2
    assert_one_line_error(result, "--time-limit")
    assert "90s, 9m or 1h30m" in result.output or "longer than 0" in result.output
    assert not (tmp_path / "results").exists()


def test_a_cell_that_does_not_fit_is_not_started_and_one_that_fits_is():
    now = [0.0]
    time_slice = TimeSlice(100, now=lambda: now[0])
    assert time_slice.fits(epochs=3)  # nothing measured yet: it starts, the training loop guards its epochs
    time_slice.measured({"finished_at": "9999"}, 40.0)  # a cell trained here took 40 s
    now[0] = 55.0
    assert time_slice.fits(epochs=3)  # 45 s left >= 40
    now[0] = 61.0
    assert not time_slice.fits(epochs=3)  # 39 s left < 40
    long = TimeSlice(100, now=lambda: now[0])  # a cell longer than a whole slice: it starts when an epoch fits
    long.measured({"finished_at": "9999"}, 300.0)
    now[0] = 61.0 + 10
    assert long.fits(epochs=10)  # 30 s per epoch, 90 s left
    now[0] = 61.0 + 80
    assert not long.fits(epochs=10)  # 20 s left


def test_a_study_stopped_by_its_time_limit_and_continued_on_a_fresh_machine_gives_the_uninterrupted_table(
        repo, tmp_path, monkeypatch, clock):
    machine_a, machine_b, machine_c = (tmp_path / name for name in ("a", "b", "c"))
    for folder in (machine_a, machine_b, machine_c):
        folder.mkdir()

    # slice 1: the teacher (2 epochs, 20 s), then cell 1 trains epoch 1 (30 s); epoch 2 would end at 40 > 35
    monkeypatch.chdir(machine_a)
    first = ablate(repo, "--time-limit", "35s")
    assert first.exit_code == STOPPED_EXIT, first.output
    assert "0 finished, 1 stopped at an epoch boundary, 2 not started" in first.output
    assert "stopped (last.pt kept, resumes): lr=0.05 seed 0 (epoch 1 of 3 kept)" in first.output
    assert "not started: lr=0.1 seed 0, lr=0.2 seed 0" in first.output
    assert "continue with the same command: kdlab ablate" in first.output and "--time-limit 35s" in first.output
    stopped_run = next((machine_a / "results/runs").glob("sl-lr_0.05-s0-*"))
    assert (stopped_run / "last.pt").is_file() and not (stopped_run / "summary.json").exists()
    assert len(pd.read_csv(stopped_run / "metrics.csv")) == 1

    # slice 2, same machine: cell 1 resumes (epochs 2-3, 20 s), cell 2 fits (20 s <= 40 left) and takes 30 s,
    # cell 3 (expected 30 s, the longest so far) does not fit in the 10 s left
    before = clock[0]
    second = ablate(repo, "--time-limit", "60s")
    assert clock[0] - before == 50  # 5 epochs in this slice: cell 1's last two (resumed) and cell 2's three
    assert second.exit_code == STOPPED_EXIT, second.output
    assert "2 finished, 0 stopped at an epoch boundary, 1 not started" in second.output
    assert "not started: lr=0.2 seed 0" in second.output
    assert list(pd.read_csv(stopped_run / "metrics.csv")["epoch"]) == [1, 2, 3]  # resumed, not restarted

    # the state travels: within the transfer limits, without last.pt
    packed = invoke("pack", TABLE, "--out", str(tmp_path / "state"))
    assert packed.exit_code == 0, packed.output
    files = sorted((tmp_path / "state").iterdir())
    assert len(files) <= 8 and sum(path.stat().st_size for path in files) <= 64 * MIB
    assert all(path.stat().st_size <= 16 * MIB for path in files)
    manifest = json.loads((tmp_path / "state/manifest.json").read_text())
    carried = [entry["path"] for entry in manifest["files"]]
    assert not any(path.endswith("last.pt") for path in carried)
    assert sum(path.endswith("best.pt") for path in carried) == 1  # the teacher's only
    assert TABLE in carried and "results/runs.csv" in carried

    # slice 3 on a fresh machine: only the unpacked state; the same command finishes the study there
    monkeypatch.chdir(machine_b)
    restored = invoke("unpack", str(tmp_path / "state"))
    assert restored.exit_code == 0, restored.output
    import kdlab.runs.run

    trained = []
    real_fit = kdlab.runs.run.fit
    monkeypatch.setattr(kdlab.runs.run, "fit", lambda *a, **k: trained.append(1) or real_fit(*a, **k))
    third = ablate(repo, "--time-limit", "10m")
    assert third.exit_code == 0, third.output
    assert len(trained) == 1  # the teacher and two cells reused, only cell 3 trained

    # an uninterrupted study in a third folder
    monkeypatch.chdir(machine_c)
    whole = ablate(repo)
    assert whole.exit_code == 0, whole.output
    assert compared(machine_b) == compared(machine_c)
    assert len(compared(machine_c)) == 3
    # finer than the accuracies: every epoch's training loss of every cell, to the last bit (cell 1 was resumed
    # from last.pt; cell 3 in b distilled from the teacher that travelled)
    assert training_curves(machine_b) == training_curves(machine_c)
    rows = pd.read_csv(machine_b / TABLE)
    assert {"device_name", "torch", "cuda"} <= set(rows.columns) and rows["device_name"].notna().all()


def test_a_damaged_pack_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_study(tmp_path, weights_bytes=1000)
    pack_state([TABLE], tmp_path / "state", root=tmp_path)
    part = next((tmp_path / "state").glob("state.tar.gz.*"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    fresh = tmp_path / "fresh"
    result = invoke("unpack", str(tmp_path / "state"), "--into", str(fresh))
    assert result.exit_code == 2
    assert f"{part.name}: SHA-256" in result.output and "does not match the manifest" in result.output
    assert not fresh.exists() or not any(fresh.rglob("*"))


def test_a_large_state_is_split_into_parts_that_unpack_to_the_same_files(tmp_path):
    _fake_study(tmp_path, weights_bytes=3 * MIB)  # random bytes: they do not compress
    manifest = pack_state([TABLE], tmp_path / "state", root=tmp_path, limits=Limits(1 * MIB, 8, 64 * MIB))
    parts = sorted((tmp_path / "state").glob("state.tar.gz.*"))
    assert len(parts) == 4 and all(part.stat().st_size <= MIB for part in parts)  # 3 MiB + the rest
    assert [part["name"] for part in manifest["parts"]] == [part.name for part in parts]
    written = unpack_state(tmp_path / "state", tmp_path / "fresh")
    assert sorted(written) == sorted(entry["path"] for entry in manifest["files"])
    for name in written:
        assert (tmp_path / "fresh" / name).read_bytes() == (tmp_path / name).read_bytes()


def test_a_state_over_the_limits_is_refused_before_anything_is_written(tmp_path):
    _fake_study(tmp_path, weights_bytes=3 * MIB)
    with pytest.raises(KdlabError, match=r"over 3 files.*largest file is results/runs/t-k1/best.pt \(3.0 MiB\)"):
        pack_state([TABLE], tmp_path / "state", root=tmp_path, limits=Limits(1 * MIB, 3, 64 * MIB))
    with pytest.raises(KdlabError, match="over the 2 MiB limit"):
        pack_state([TABLE], tmp_path / "state", root=tmp_path, limits=Limits(1 * MIB, 8, 2 * MIB))
    assert not (tmp_path / "state").exists()


def test_a_study_with_absolute_output_paths_is_refused_with_the_fix(tmp_path):
    _fake_study(tmp_path, weights_bytes=10, run_dir_in_table=str(tmp_path / "results/runs/c-k2"))
    with pytest.raises(KdlabError, match="absolute path.*relative output.dir"):
        pack_state([TABLE], tmp_path / "state", root=tmp_path)


def _fake_study(root, weights_bytes: int, run_dir_in_table: str = "results/runs/c-k2"):
    """A finished teacher (t-k1, with best.pt), a finished cell (c-k2), an unfinished one (u-k3) and the table."""
    import os

    teacher, cell, unfinished = (root / "results/runs" / name for name in ("t-k1", "c-k2", "u-k3"))
    for run in (teacher, cell, unfinished):
        run.mkdir(parents=True)
    for run in (teacher, cell):
        (run / "summary.json").write_text("{}")
        (run / "recipe.yaml").write_text("output: {table: results/runs.csv}\n")
        (run / "last.pt").write_bytes(b"x" * 100)
    (teacher / "best.pt").write_bytes(os.urandom(weights_bytes))
    (cell / "best.pt").write_bytes(b"w" * 100)
    (cell / "run.json").write_text(json.dumps({"teacher": "results/runs/t-k1"}))
    (unfinished / "last.pt").write_bytes(b"x")
    (root / "results/runs.csv").write_text("run_dir\nresults/runs/c-k2\n")
    (root / TABLE).parent.mkdir(parents=True)
    (root / TABLE).write_text(f"cell,seed,run_dir\nc,0,{run_dir_in_table}\nu,0,\n")
