"""The README's workflow as a newcomer walks it, at tiny size, from the checkout: check, distill (Ctrl-C in the
teacher, then the advised command), eval (Ctrl-C in the second attack, then a rerun), ablate, report; nothing
computed is lost, and the report's regenerate command finds every cell of its table already computed."""

from __future__ import annotations

import csv
import html
import re
import shlex

import pandas as pd

from kdlab.report.html import build_report
from tests.helpers.ctrl_c import advised_args, epochs_shown, interrupt_at
from tests.helpers.failfast import invoke, write_recipe

# the quickstart's shape (embedded CIFAR-10, FGSM-RS teacher, MixACM student), a few images and epochs
DATA = "data: {dataset: embedded, subset: 100, val_size: 20, test_subset: 40, batch_size: 25}\n"
TEACHER = ("name: walk-teacher\nmodel: {arch: resnet_small, width: 4}\n" + DATA +
           "train: {epochs: 2, adversarial: {method: fgsm-rs, eps: 8/255}}\neval: {n: 20}\n")
STUDENT = ("name: walk\nstudent: {arch: resnet_small, width: 4}\nteacher: {recipe: teacher.yaml}\n" + DATA +
           "method: {name: mixacm, acm: {weight: 10.0, blocks: [2, 3, 4]}}\ntrain: {epochs: 2}\neval: {n: 20}\n")


def _rows(path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_documented_workflow_loses_nothing_and_its_regenerate_commands_reuse_every_cell(tmp_path,
                                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path, TEACHER, name="teacher.yaml")
    student = write_recipe(tmp_path, STUDENT)
    runs_csv = tmp_path / "out" / "runs.csv"  # write_recipe points the outputs into tmp_path/out

    # 1. check before running: both runs to train, nothing written yet
    checked = invoke("check", student, "--no-timing")
    assert checked.exit_code == 0, checked.output
    assert not runs_csv.exists()

    # 2. distill, Ctrl-C after the teacher's first epoch; the advised command continues from epoch 2
    shown = epochs_shown(monkeypatch, stop=("walk-teacher", 1))
    first = invoke("distill", student)
    assert first.exit_code == 130, first.output
    shown = epochs_shown(monkeypatch)
    second = invoke(*advised_args(first.output, ["distill", student]))
    assert second.exit_code == 0, second.output
    assert shown[0] == ("walk-teacher", 2)  # the teacher's epoch 1 was kept, not trained again
    assert [name for name, _ in shown].count("walk") == 2
    runs = pd.read_csv(runs_csv)
    assert sorted(runs["name"]) == ["walk", "walk-teacher"]
    student_dir = runs.loc[runs["name"] == "walk", "run_dir"].item()

    # 3. eval with two attacks, Ctrl-C in the second: the first attack's row is kept; a rerun adds only the second
    eval_csv = tmp_path / "eval.csv"
    eval_args = ["eval", student_dir, "--attack", "fgsm", "--attack", "pgd", "--n", "20", "--steps", "2",
                 "--out", str(eval_csv)]
    interrupt_at(monkeypatch, 2)  # 20 images in one batch: call 1 is fgsm, call 2 pgd
    stopped = invoke(*eval_args)
    assert stopped.exit_code == 130, stopped.output
    assert [row["attack"] for row in _rows(eval_csv)] == ["fgsm"]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    calls = interrupt_at(monkeypatch, 10**6)  # counts the attack batches
    again = invoke(*eval_args)
    assert again.exit_code == 0, again.output
    assert [row["attack"] for row in _rows(eval_csv)] == ["fgsm", "pgd"]  # fgsm not recomputed, nothing twice
    assert len(calls) == 1

    # 4. an ablation over blocks; 5. the report's regenerate command, through check: every cell reused
    tables = tmp_path / "tables"
    typed = ["ablate", str(student), "--blocks", "2,3", "--seeds", "0", "--set", "train.epochs=1", "--threads", "1",
             "--out", str(tables)]
    ablated = invoke(*typed)
    assert ablated.exit_code == 0, ablated.output
    table = next(tables.glob("*.csv"))
    cells = pd.read_csv(table)
    page = build_report(table).read_text()
    found = re.search(r"<b>Recorded</b>: [^<]*</p><pre>([^<]*)</pre>", page)
    assert found, "the report shows no recorded command"
    commands = [line for line in html.unescape(found.group(1)).splitlines() if not line.startswith("#")]
    assert commands == ["kdlab " + shlex.join(typed)]
    tokens = shlex.split(commands[0])
    rerun = invoke("check", *tokens[2:], "--no-timing")
    assert rerun.exit_code == 0, rerun.output
    # the table's cells and their shared teacher: all finished, none to train
    assert f"{len(cells) + 1} runs: {len(cells) + 1} finished (reused), 0 to train" in rerun.output, rerun.output
    for run_dir in cells["run_dir"]:
        assert run_dir in rerun.output

    # nothing lost: every run the runs table names is finished on disk
    for run_dir in pd.read_csv(runs_csv)["run_dir"]:
        assert (tmp_path / run_dir / "summary.json").is_file(), run_dir
