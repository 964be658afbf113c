"""kdlab ablate records its command: every cell's run.json and runs.csv row, every table row, and kdlab report
prints it as the command that regenerates the table; kdlab check of that command reuses every cell."""

from __future__ import annotations

import html
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from kdlab.report.html import build_report
from tests.helpers.failfast import invoke


def recorded_commands(page: str) -> list[str]:
    """The commands the report shows as recorded by the table's rows."""
    found = re.search(r"<b>Recorded</b>: [^<]*</p><pre>([^<]*)</pre>", page)
    assert found, "the report shows no recorded command"
    return [line for line in html.unescape(found.group(1)).splitlines() if not line.startswith("#")]


def test_a_report_of_a_table_written_by_the_cli_regenerates_every_cell_and_check_reuses_them_all(train_recipe,
                                                                                                   tmp_path):
    """The printed command, run through kdlab check: every cell finished and reused from its own run directory
    (before: a command derived from the rows, without the --set values or --name, e.g. 'RECIPE (name: mine)')."""
    tables = tmp_path / "tables"
    typed = ["ablate", str(train_recipe), "--grid", "train.lr=0.05,0.1", "--seeds", "0", "--set", "train.epochs=1",
             "--set", "eval.n=20", "--threads", "1", "--name", "mine", "--out", str(tables)]
    ran = invoke(*typed)
    assert ran.exit_code == 0, ran.output
    command = "kdlab " + shlex.join(typed)
    csv = tables / "mine-grid-train.lr.csv"
    rows = pd.read_csv(csv)
    assert rows["command"].tolist() == [command, command]
    assert rows["overrides"].tolist() == ["train.epochs=1 eval.n=20"] * 2

    # every cell's run records the ablate command and its own overrides, in run.json and runs.csv
    for run_dir, lr in zip(rows["run_dir"], ("0.05", "0.1")):
        record = json.loads((Path(run_dir) / "run.json").read_text())
        assert record["command"] == command
        assert record["overrides"] == ["train.epochs=1", "eval.n=20", f"train.lr={lr}", "seed=0"]
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs["command"].tolist() == [command, command]

    shown = recorded_commands(build_report(csv).read_text())
    assert shown == [command]
    tokens = shlex.split(shown[0])
    assert tokens[:2] == ["kdlab", "ablate"]
    checked = invoke("check", *tokens[2:], "--no-timing")
    assert checked.exit_code == 0, checked.output
    assert "2 runs: 2 finished (reused), 0 to train" in checked.output
    for run_dir in rows["run_dir"]:  # each reused from the very run the table holds, not from a twin
        assert run_dir in checked.output


@pytest.mark.parametrize("flags,message", [
    (["--tune-val-size", "16"], "belong to --tune KEY=V1,V2: add it"),
    (["--tune", "train.lr=0.05,0.1", "--tune-seed", "0", "--tune-seeds", "0,1"], "--tune-seed and --tune-seeds"),
    (["--tune", "train.lr=0.05,0.1", "--tune-from", "x-val.csv", "--tune-val-size", "16"],
     "--tune-from reuses a finished tuning table"),
])
def test_a_mistaken_tune_flag_is_refused_before_the_plan_check(train_recipe, tmp_path, monkeypatch, flags, message):
    """The plan check builds every cell's models and data (about 20 s of a CPU study): a flag mistake is refused
    before it, with exit 2 (before: after it)."""
    import kdlab.check.plan

    checked = []
    monkeypatch.setattr(kdlab.check.plan, "check_ablation_plan", lambda *args, **kwargs: checked.append(args))
    ran = invoke("ablate", str(train_recipe), "--grid", "train.lr=0.05,0.1", "--seeds", "0", "--threads", "1",
                 "--out", str(tmp_path / "tables"), *flags)
    assert ran.exit_code == 2, ran.output
    assert message in ran.output
    assert not checked
