"""A declared study continued on a fresh checkout (kdlab.ablation.execute.run_ablation with a study plan): each cell's
declared final evaluation runs right after its training and its row carries the final columns; on a fresh checkout
(only the committed files: the table, results/runs.csv, results/eval.csv) complete rows are not retrained, an
incomplete row is, the retrained teacher is checked against the rows' teacher_sha256, and a study interrupted
after its first cell and continued elsewhere ends with the uninterrupted table.

Tiny distillation (50 training images, 20 test images, width-4 ResNets, one thread: CPU training is deterministic,
so a retrained teacher has the same bytes)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers.failfast import assert_one_line_error, invoke
from tests.helpers.tiny_study import write_pair

TABLE = "results/ablations/cont.csv"
N = 16  # the declared final n (fewer than the 20 test images, so it is not the training evaluation's n)
FINAL_COLUMNS = ["clean_acc", "clean_n", "pgd_acc", "pgd_n", "sanity", "final_eval_seconds"]
COMPARED = ["cell", "seed", "clean_acc", "clean_n", "pgd_acc", "pgd_n", "sanity", "best_epoch", "teacher_sha256"]


@pytest.fixture()
def repo(tmp_path):
    """The researcher's recipes and study file, the same on every checkout (outputs: kdlab's relative defaults)."""
    folder = write_pair(tmp_path / "repo", "ct", teacher_epochs=1, student_epochs=1)
    (folder / "cont.yaml").write_text(yaml.safe_dump({
        "study": "cont", "question": "Does a larger learning rate help?", "recipe": str(folder / "student.yaml"),
        "cells": {"grid": {"train.lr": [0.05, 0.1]}}, "seeds": [0], "metric": "pgd_acc",
        "comparisons": {"pairs": [["lr=0.1", "lr=0.05"]]}, "final": {"attacks": ["pgd"], "n": N}}))
    return folder


def ablate(repo, *extra):
    return invoke("ablate", str(repo / "cont.yaml"), "--threads", "1", "--out", "results/ablations", *extra)


@pytest.fixture()
def events(monkeypatch):
    """What ran, in order: ``train NAME`` for every training run, ``eval RUN_DIR_NAME`` for every final evaluation
    that was computed (not found on record)."""
    import kdlab.runs.evaluate
    import kdlab.runs.run

    happened: list[str] = []
    real_fit, real_evaluate = kdlab.runs.run.fit, kdlab.runs.evaluate.evaluate_target

    def fit(*args, **kwargs):
        happened.append(f"train {Path(kwargs['run_dir']).name.rsplit('-', 1)[0]}")
        return real_fit(*args, **kwargs)

    def evaluate(run_dir, *args, **kwargs):
        happened.append(f"eval {Path(run_dir).name.rsplit('-', 1)[0]}")
        return real_evaluate(run_dir, *args, **kwargs)

    monkeypatch.setattr(kdlab.runs.run, "fit", fit)
    monkeypatch.setattr(kdlab.runs.evaluate, "evaluate_target", evaluate)
    return happened


def fresh_checkout(source: Path, target: Path) -> None:
    """What a fresh clone has of a study's state: the committed result files, no run directory."""
    for name in ("results/ablations", "results/runs.csv", "results/eval.csv"):
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name)
        elif (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
    assert not (target / "results/runs").exists()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def compared(folder: Path) -> list[dict]:
    return pd.read_csv(folder / TABLE)[COMPARED].to_dict("records")


@pytest.fixture()
def finished(repo, tmp_path, monkeypatch, events):
    """The study run once, uninterrupted, on machine a: (machine a, what ran there)."""
    machine = tmp_path / "a"
    machine.mkdir()
    monkeypatch.chdir(machine)
    result = ablate(repo)
    assert result.exit_code == 0, result.output
    ran = list(events)
    events.clear()
    return machine, ran, result.output


def test_each_cell_is_evaluated_right_after_its_training_and_its_row_has_the_final_columns(finished):
    machine, ran, output = finished
    # the teacher, then each cell trained and evaluated before the next one trains (not all at the end)
    assert ran == ["train ct-teacher", "train cont-lr_0.05-s0", "eval cont-lr_0.05-s0", "train cont-lr_0.1-s0",
                   "eval cont-lr_0.1-s0"]
    table = pd.read_csv(machine / TABLE, dtype={"teacher_sha256": str})  # a digest: text, even when all digits
    assert list(zip(table["cell"], table["seed"])) == [("lr=0.05", 0), ("lr=0.1", 0)]
    assert table[FINAL_COLUMNS].notna().all().all()
    assert set(table["clean_n"]) == {N} and set(table["pgd_n"]) == {N} and set(table["sanity"]) == {"not run"}
    # the teacher by content: sha256 of its best.pt (first 16 hex digits), computed here independently
    [teacher] = (machine / "results/runs").glob("ct-teacher-*")
    assert set(table["teacher_sha256"]) == {sha(teacher / "best.pt")}
    # the catch-up after the table has nothing left to do
    assert "was evaluated with its cell" in output


def test_a_fresh_checkout_retrains_only_the_teacher_and_leaves_the_table_as_it_was(finished, tmp_path, monkeypatch,
                                                                                   repo, events):
    machine, _, _ = finished
    fresh = tmp_path / "b"
    fresh_checkout(machine, fresh)
    before = (fresh / TABLE).read_bytes()
    monkeypatch.chdir(fresh)
    result = ablate(repo)
    assert result.exit_code == 0, result.output
    assert events == ["train ct-teacher"]  # no cell trained or evaluated again
    assert result.output.count("from the table (run directory not here)") == 2
    runs = sorted(path.name.rsplit("-", 1)[0] for path in (fresh / "results/runs").iterdir() if path.is_dir())
    assert runs == ["ct-teacher"]  # no cell's run directory was recreated
    [teacher] = (fresh / "results/runs").glob("ct-teacher-*")
    [original] = (machine / "results/runs").glob("ct-teacher-*")
    assert teacher.name == original.name and sha(teacher / "best.pt") == sha(original / "best.pt")  # retrained, same
    assert (fresh / TABLE).read_bytes() == before  # byte-equal: no row was rewritten


def test_an_incomplete_row_without_its_run_directory_is_retrained(finished, tmp_path, monkeypatch, repo, events):
    machine, _, _ = finished
    fresh = tmp_path / "b"
    fresh_checkout(machine, fresh)
    table = pd.read_csv(fresh / TABLE)
    table.loc[table["cell"] == "lr=0.1", ["pgd_acc", "pgd_n"]] = None  # its final evaluation never ran
    table.to_csv(fresh / TABLE, index=False)
    monkeypatch.chdir(fresh)
    result = ablate(repo)
    assert result.exit_code == 0, result.output
    assert events == ["train ct-teacher", "train cont-lr_0.1-s0", "eval cont-lr_0.1-s0"]
    assert "lr=0.1 seed 0: retrained: its row is incomplete (no pgd_acc, pgd_n in its row)" in result.output
    assert "lr=0.05 seed 0: from the table (run directory not here)" in result.output
    assert compared(fresh) == compared(machine)  # the same numbers again (deterministic CPU training)


@pytest.mark.parametrize("other_processor", [None, "AMD EPYC 7B13"])
def test_a_different_teacher_is_refused_before_any_cell_and_nothing_is_lost(finished, tmp_path, monkeypatch, repo,
                                                                           events, other_processor):
    """The refusal names the processors when the row ran on another one than the teacher retrained here (CPU
    training is reproducible on one processor type only), and only then."""
    from kdlab.results import cpu_name

    machine, _, _ = finished
    fresh = tmp_path / "b"
    fresh_checkout(machine, fresh)
    # as text: a hex digest such as 7e12... or 0123... would otherwise be read (and written back) as a number
    table = pd.read_csv(fresh / TABLE, dtype=str, keep_default_na=False)
    recorded = table["teacher_sha256"].iloc[0]
    table.loc[0, "teacher_sha256"] = "0123456789abcdef"  # one row distilled from other teacher weights
    if other_processor:
        table.loc[0, "device_name"] = other_processor  # ... on another processor type
    table.to_csv(fresh / TABLE, index=False)
    before = (fresh / TABLE).read_bytes()
    monkeypatch.chdir(fresh)
    result = ablate(repo)
    text = assert_one_line_error(result, "the teacher retrained here", f"teacher_sha256 {recorded}",
                                 "teacher_sha256 0123456789abcdef",
                                 "carry its run directory with kdlab pack/unpack, or declare a new study")
    processors = (f"its rows ran on {other_processor}, the teacher was retrained on {cpu_name()}: CPU training is "
                  "reproducible on one processor type only")
    assert (processors in text) == bool(other_processor), text
    assert events == ["train ct-teacher"]  # refused before any cell
    assert (fresh / TABLE).read_bytes() == before
    assert sorted(p.name.rsplit("-", 1)[0] for p in (fresh / "results/runs").iterdir() if p.is_dir()) == ["ct-teacher"]
    # warned before the teacher trained, (the others ran here): only when no row did
    table.loc[:, "device_name"] = other_processor or table.loc[0, "device_name"]
    table.to_csv(fresh / TABLE, index=False)
    events.clear()
    warned = ablate(repo).output
    note = f"note: this table's rows ran on {other_processor}, this machine is {cpu_name()}: a teacher retrained"
    assert (note in " ".join(warned.split())) == bool(other_processor), warned
    assert events == []  # the teacher is here now: found, not trained again


def test_a_study_interrupted_after_its_first_cell_continues_on_a_fresh_checkout_to_the_same_table(
        finished, tmp_path, monkeypatch, repo, events):
    import kdlab.ablation.table

    machine, _, _ = finished
    interrupted = tmp_path / "c"
    interrupted.mkdir()
    monkeypatch.chdir(interrupted)
    real_record = kdlab.ablation.table.AblationTable.record

    def record_then_die(self, cell, seed, summary):
        real_record(self, cell, seed, summary)
        raise KeyboardInterrupt  # the session ends after its first cell

    monkeypatch.setattr(kdlab.ablation.table.AblationTable, "record", record_then_die)
    killed = ablate(repo)
    assert killed.exit_code != 0 and len(pd.read_csv(interrupted / TABLE)) == 1
    assert "**In progress**: 1 of the 2 declared runs have a row" in (interrupted / TABLE).with_suffix(".md").read_text()
    monkeypatch.setattr(kdlab.ablation.table.AblationTable, "record", real_record)
    events.clear()

    fresh = tmp_path / "d"
    fresh_checkout(interrupted, fresh)
    monkeypatch.chdir(fresh)
    result = ablate(repo)
    assert result.exit_code == 0, result.output
    assert events == ["train ct-teacher", "train cont-lr_0.1-s0", "eval cont-lr_0.1-s0"]
    assert compared(fresh) == compared(machine)
    assert "In progress" not in (fresh / TABLE).with_suffix(".md").read_text()


def test_a_study_with_a_teacher_row_keeps_it_on_a_fresh_checkout(repo, tmp_path, monkeypatch, events):
    """--methods puts the shared teacher's row in the table: it gets its own final evaluation, and on a fresh checkout
    the retrained (identical) teacher's row is kept from the table, not evaluated again."""
    study = yaml.safe_load((repo / "cont.yaml").read_text())
    study.update(study="contm", cells={"methods": ["kd", "fitnet"]}, comparisons={"baseline": "kd"})
    (repo / "contm.yaml").write_text(yaml.safe_dump(study))
    table = "results/ablations/contm.csv"
    machine, fresh = tmp_path / "a", tmp_path / "b"
    machine.mkdir()
    monkeypatch.chdir(machine)
    first = invoke("ablate", str(repo / "contm.yaml"), "--threads", "1", "--out", "results/ablations")
    assert first.exit_code == 0, first.output
    assert events[:2] == ["train ct-teacher", "eval ct-teacher"]  # the teacher's row is evaluated before any cell
    rows = pd.read_csv(machine / table, dtype={"teacher_sha256": str})
    assert list(rows["cell"]) == ["teacher", "kd", "fitnet"] and rows[FINAL_COLUMNS].notna().all().all()
    [teacher] = (machine / "results/runs").glob("ct-teacher-*")
    assert set(rows["teacher_sha256"]) == {sha(teacher / "best.pt")}

    fresh_checkout(machine, fresh)
    before = (fresh / table).read_bytes()
    events.clear()
    monkeypatch.chdir(fresh)
    again = invoke("ablate", str(repo / "contm.yaml"), "--threads", "1", "--out", "results/ablations")
    assert again.exit_code == 0, again.output
    assert events == ["train ct-teacher"]
    assert "teacher seed 0: from the table" in again.output
    assert (fresh / table).read_bytes() == before



def test_a_checkout_in_another_folder_continues_from_the_committed_rows(repo, tmp_path, monkeypatch, events):
    """A fresh clone lives in another folder, where its recipes resolve to other absolute paths. The plan fingerprint
    sees paths by their last component, so the committed rows are still the study's there (before, every row was
    retrained)."""
    study = yaml.safe_load((repo / "cont.yaml").read_text())
    (repo / "cont.yaml").write_text(yaml.safe_dump({**study, "recipe": "student.yaml"}))  # as shipped: relative
    machine = tmp_path / "a"
    machine.mkdir()
    monkeypatch.chdir(machine)
    assert ablate(repo).exit_code == 0
    events.clear()
    clone = tmp_path / "elsewhere" / "repo"
    shutil.copytree(repo, clone)
    shutil.rmtree(repo)  # only the clone's recipes exist now
    fresh = tmp_path / "b"
    fresh_checkout(machine, fresh)
    monkeypatch.chdir(fresh)
    result = ablate(clone)
    assert result.exit_code == 0, result.output
    assert events == ["train ct-teacher"]  # no cell trained or evaluated again
    assert result.output.count("from the table (run directory not here)") == 2
    assert compared(fresh) == compared(machine)


def test_check_shows_what_ablate_will_do_on_a_fresh_checkout(finished, tmp_path, monkeypatch, repo, events):
    """kdlab check STUDY.yaml: the committed complete rows are "from the table" (ablate does not retrain them), an
    incomplete one is to train, and the final evaluation left is estimated from the evaluations the table records."""
    machine, _, _ = finished
    fresh = tmp_path / "b"
    fresh_checkout(machine, fresh)
    table = pd.read_csv(fresh / TABLE)
    recorded = sorted(table["final_eval_seconds"])
    table.loc[table["cell"] == "lr=0.1", ["pgd_acc", "pgd_n"]] = None  # its final evaluation never ran
    table.to_csv(fresh / TABLE, index=False)
    monkeypatch.chdir(fresh)
    result = invoke("check", str(repo / "cont.yaml"), "--no-timing", "--threads", "1", "--out", "results/ablations")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("  lr=")}
    assert "from the table" in lines["lr=0.05"] and "to train" in lines["lr=0.1"]
    assert "3 runs: 0 finished (reused), 1 from the committed table, 2 to train" in result.output
    # one cell run left; the median of the two recorded final evaluations (the incomplete row keeps its seconds)
    median = (recorded[0] + recorded[1]) / 2
    assert f"of the 1 cell runs left: about 0:00:{round(median):02d} more" in result.output
    assert events == []  # nothing trained
