"""Declared studies (kdlab.ablation.study): one-line load errors, a digest of the declaration (not of its layout),
the (cell, seed) set of every preset against hand-written sets, the flags a study refuses, the changed-declaration
refusal, and a tiny study run end to end whose table records its declaration."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kdlab.ablation.study import load_study
from kdlab.cli.main import app
from kdlab.errors import KdlabError

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"  # a MixACM distillation recipe on embedded data


def write_study(folder: Path, base: Path, name: str = "tiny", **changes) -> Path:
    study = {"study": name, "question": "Does a larger learning rate help?", "recipe": str(base),
             "cells": {"grid": {"train.lr": [0.05, 0.1]}}, "seeds": [0, 1], "metric": "pgd_acc",
             "comparisons": {"pairs": [["lr=0.1", "lr=0.05"]]}}
    study.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in study.items() if v is not ...}, sort_keys=False))
    return path


@pytest.mark.parametrize("changes,message", [
    ({"seed": [0]}, "unknown key seed (did you mean 'seeds'?)"),
    ({"recipe": "nowhere.yaml"}, "recipe 'nowhere.yaml' not found"),
    ({"metric": "pgd"}, "unknown metric 'pgd' (did you mean 'pgd_acc'?)"),
    ({"metric": "AP"}, "unknown metric 'AP'"),
    ({"comparisons": {"pairs": [["lr=0.3", "lr=0.05"]]}}, ("comparisons name cell 'lr=0.3', which the study does "
                                                          "not run")),
    ({"comparisons": {"baseline": "lr=1"}}, "comparisons name cell 'lr=1'"),
    ({"comparisons": {"pairs": [["lr=0.1", "lr=0.05"], ["lr=0.05", "lr=0.1"]]}}, "is declared twice"),
    ({"comparisons": {"baselin": "lr=0.1"}}, "unknown key comparisons.baselin (did you mean 'baseline'?)"),
    ({"seeds": []}, "seeds is empty"),
    ({"seeds": [0, 1, 0]}, "seeds lists 0 twice"),
    ({"question": ...}, "missing question:"),
    ({"cells": {"grid": {"train.lr": [0.1]}, "components": True}}, "declare exactly one of"),
    ({"cells": {"grid": {"train.lr": [0.1]}, "cumulative": True}}, "cells.cumulative belongs to another preset"),
    ({"correction": "bonferroni"}, "correction 'bonferroni': choose holm or none"),
    ({"tune": {"key": "train.epochs", "values": [1, 2], "seeds": [0]}}, "two seeds or more"),
    ({"tune": {"key": "train.epochs", "values": [1, 2], "scale": "geometric"}}, "choose log or linear"),
    ({"tune": {"key": "train.epochs", "values": [1, 2], "max_round": 3}}, "(did you mean 'max_rounds'?)"),
    ({"tune": {"key": "train.epochs", "values": [1, 2], "collapsed": "drop"}},
     "tune.collapsed 'drop': choose keep or exclude"),
    ({"tune": {"key": "train.epochs", "values": [1, 2], "cells": {"lr=9": None}}}, "no such cell"),
    ({"tune": {"key": "train.epochs", "values": [1, 2]}}, ("no validation split (data.val_size 0): pass "
                                                          "--tune-val-size N (a study: tune.val_size)")),
    ({"tune": {"key": "train.epoch", "values": [1, 2], "val_size": 16}}, "unknown key 'epoch' in train (did you mean 'epochs'?)"),
    ({"final": {"attacks": ["autoatack"], "n": 1000}}, "unknown attack 'autoatack' (did you mean 'autoattack'?)"),
    ({"final": {"attacks": ["pgd"], "n": 0}}, "final.n"),
])
def test_a_mistaken_study_is_refused_in_one_line(train_recipe, tmp_path, changes, message):
    with pytest.raises(KdlabError) as error:
        load_study(write_study(tmp_path, train_recipe, **changes))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_digest_ignores_layout_and_changes_with_a_seed(train_recipe, tmp_path):
    first = load_study(write_study(tmp_path, train_recipe))
    relaid = tmp_path / "relaid.yaml"  # comments, flow style, key order, defaults written out: the same declaration
    relaid.write_text(f"""# a comment
comparisons: {{pairs: [[lr=0.1, lr=0.05]]}}
metric: pgd_acc
seeds:
  - 0
  - 1    # two seeds
cells:
  grid:
    train.lr: [0.05, 0.1]
correction: holm
set: []
question: "Does a   larger learning rate help?"
recipe: {train_recipe}
study: tiny
""")
    assert load_study(relaid).digest == first.digest and len(first.digest) == 12
    assert load_study(write_study(tmp_path, train_recipe, seeds=[0, 1, 2])).digest != first.digest
    assert load_study(write_study(tmp_path, train_recipe, correction="none")).digest != first.digest


def test_declaring_the_default_collapsed_rule_keeps_the_digest_and_exclude_changes_it(train_recipe, tmp_path):
    """Studies declared before ``tune.collapsed`` existed keep their sha256; ``exclude`` is another protocol."""
    tune = {"key": "train.epochs", "values": [1, 2], "val_size": 16}
    digests = [load_study(write_study(tmp_path, train_recipe, tune=dict(tune, **extra))).digest
               for extra in ({}, {"collapsed": "keep"}, {"collapsed": "exclude"})]
    assert digests[0] == digests[1] != digests[2]
    assert load_study(write_study(tmp_path, train_recipe, tune=dict(tune, collapsed="exclude"))).tune_spec() \
        .collapsed == "exclude"


@pytest.mark.parametrize("cells,seeds,expected", [
    ({"components": True}, [3, 4],
     {(c, s) for c in ("student-ce", "kd-only", "acm", "acm+kd", "acm+mixup", "mixacm") for s in (3, 4)}
     | {("teacher", 3)}),
    ({"blocks": [2, 3]}, [0], {("block2", 0), ("block3", 0), ("block2+3", 0)}),
    ({"blocks": [2, 3, 4], "cumulative": True}, [0], {("block2", 0), ("block2+3", 0), ("block2+3+4", 0)}),
    ({"methods": ["mixacm", "kd"], "inner_steps": 2}, [0, 1],
     {("mixacm", 0), ("mixacm", 1), ("kd", 0), ("kd", 1), ("teacher", 0)}),
    ({"grid": {"method.kd.temperature": [2, 4], "method.mixup.enabled": [True]}}, [7],
     {("temperature=2,enabled=true", 7), ("temperature=4,enabled=true", 7)}),
])
def test_cells_of_each_preset(tmp_path, cells, seeds, expected):
    study = load_study(write_study(tmp_path, QUICKSTART, cells=cells, seeds=seeds, metric="clean_acc",
                                   comparisons={"baseline": min(expected)[0] if "teacher" != min(expected)[0]
                                                else sorted(expected)[1][0]}))
    assert study.cells() == expected
    assert study.command() == f"kdlab ablate {tmp_path / 'tiny.yaml'}"  # outside a repository: the path as given


def test_the_shipped_studies_parse_and_expand_to_their_declared_cells():
    studies = {path.stem: load_study(path) for path in sorted((ROOT / "recipes" / "studies").glob("*.yaml"))}
    kinds = ("none", "l1", "l2", "ssim", "pkd", "cwd", "mgd", "fgd")
    methods = ("mixacm", "kd", "ard", "rslad", "iad", "adaad", "pgd-at", "rrm", "fitnet", "at")
    expected = {
        "mixacm_cpu_components": {(c, s) for c in ("student-ce", "kd-only", "acm", "acm+kd", "acm+mixup", "mixacm")
                                  for s in range(5)} | {("teacher", 0)},
        "mixacm_cpu_blocks": {(c, s) for c in ("block2", "block3", "block4", "block2+3+4") for s in range(5)},
        "methods_cpu": {(m, s) for m in methods for s in range(3)} | {("teacher", 0)},
        "skd_bccd_cpu": {(f"kind={k}", s) for k in kinds for s in range(5)},
        "skd_bccd_frcnn_cpu": {(f"kind={k}", s) for k in kinds for s in range(5)},
        "skd_bccd_retinanet_cpu": {(f"kind={k}", s) for k in ("none", "l1", "ssim", "cwd") for s in range(5)},
        "teacher_headroom_cpu": {("pgd-at", s) for s in range(3)} | {("teacher", 0)},
    }
    assert set(studies) == set(expected)
    for name, study in studies.items():
        assert study.name == name and study.cells() == expected[name], name
        assert study.command() == f"kdlab ablate recipes/studies/{name}.yaml"
        assert study.declaration["correction"] == "holm"
        assert study.tune is None or len(study.tune["seeds"]) >= 2
    # declared anew for another processor type (its header): the same declaration under another name
    again, first = (dict(studies[name].declaration) for name in ("skd_bccd_frcnn_cpu", "skd_bccd_cpu"))
    assert again.pop("study") == "skd_bccd_frcnn_cpu" and first.pop("study") == "skd_bccd_cpu"
    assert again == first


@pytest.mark.parametrize("flag", [["--seeds", "0,1"], ["--set", "train.lr=0.2"], ["--grid", "train.lr=1,2"],
                                  ["--name", "other"], ["--attack", "cw"], ["--tune", "train.lr=1,2"],
                                  ["--components"]])
def test_a_study_refuses_flags_that_change_its_declaration(train_recipe, tmp_path, flag):
    study = write_study(tmp_path, train_recipe)
    result = CliRunner().invoke(app, ["ablate", str(study), *flag, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "edit the study file or declare a new one" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_study_dry_run_takes_runtime_flags_and_prints_the_declaration(train_recipe, tmp_path):
    study = write_study(tmp_path, train_recipe)
    result = CliRunner().invoke(app, ["ablate", str(study), "--dry-run", "--jobs", "2", "--threads", "1",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "2 cells × 2 seeds = 4 runs: lr=0.05, lr=0.1" in result.output and "lr=0.1 − lr=0.05" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_study_runs_its_declared_cells_and_its_table_records_the_declaration(train_recipe, tmp_path):
    study_path = write_study(tmp_path, train_recipe, final={"attacks": ["pgd", "autoattack"], "n": 30})
    study = load_study(study_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ablate", str(study_path), "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "tiny.csv", dtype={"study_sha256": str})  # a digest, all digits about 1 time in 280
    assert set(zip(table["cell"], table["seed"])) == study.cells() == {
        ("lr=0.05", 0), ("lr=0.05", 1), ("lr=0.1", 0), ("lr=0.1", 1)}
    assert set(table["study"]) == {"tiny"} and set(table["study_sha256"]) == {study.digest}
    assert all(json.loads(text) == study.declaration for text in table["study_declaration"])
    assert set(table["command"]) == {f"kdlab ablate {study_path}"}
    # the declared final evaluation ran on every finished run, without retraining: AutoAttack with its n
    assert table["autoattack_acc"].notna().all() and set(table["autoattack_n"]) == {30}
    assert "final evaluation (declared): kdlab eval" in result.output
    markdown = (out / "tiny.md").read_text()
    head = markdown.split("Source:")[0]
    for declared in ("Study `tiny`", study.digest, "Does a larger learning rate help?", "seeds: 0, 1 (2)",
                     "deciding metric: PGD", "comparisons: lr=0.1 − lr=0.05", "correction: holm",
                     "final evaluation: pgd, autoattack on n = 30", f"regenerate: `kdlab ablate {study_path}`"):
        assert declared in head, declared
    # the declared pair alone, its paired CI and its Holm verdict side by side (m = 1)
    wide = table.pivot(index="seed", columns="cell", values="pgd_acc")
    mean = (wide["lr=0.1"] - wide["lr=0.05"]).mean()
    assert f"| lr=0.1 − lr=0.05 | {mean:+.2f} [" in markdown and "m = 1 declared comparison" in markdown

    # the same declaration resumes (nothing to train); another declaration of the same study is refused
    again = CliRunner().invoke(app, ["ablate", str(study_path), "--threads", "1", "--out", str(out)])
    assert again.exit_code == 0, again.output
    write_study(tmp_path, train_recipe, seeds=[0, 1, 2], final={"attacks": ["pgd", "autoattack"], "n": 30})
    changed = CliRunner().invoke(app, ["ablate", str(study_path), "--threads", "1", "--out", str(out)])
    assert changed.exit_code == 2 and "study tiny changed since its table" in changed.output
    assert "declare a new study (new name) instead of editing it" in changed.output
    assert len(pd.read_csv(out / "tiny.csv")) == 4  # nothing lost


def test_kdlab_table_reads_a_study_tables_declared_comparisons(tmp_path):
    """Rendering from the CSV alone: the declared pairs (Holm over them only) and metric, not the default baseline;
    hand-computed: differences 1, 2, 3 -> mean 2, t_{0.975,2} = 4.303, sd 1 -> CI 2 ± 2.48."""
    from kdlab.report.tables import render

    declaration = {"study": "s", "question": "q?", "recipe": "r.yaml", "set": [], "cells": {"grid": [["k", ["a", "b"]]]},
                   "seeds": [0, 1, 2], "metric": "clean_acc", "attacks": ["pgd"],
                   "comparisons": {"pairs": [["k=b", "k=a"]]}, "correction": "holm", "tune": None, "final": None}
    rows = [{"cell": cell, "seed": seed, "clean_acc": 50.0 + (seed + 1) * (cell == "k=b"), "pgd_acc": 10.0,
             "study": "s", "study_sha256": "abc", "study_declaration": json.dumps(declaration)}
            for cell in ("k=a", "k=b") for seed in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "s.csv", index=False)
    markdown, _ = render(tmp_path / "s.csv")
    text = markdown.read_text()
    assert "| k=b − k=a | +2.00 [-0.48, +4.48] not separated |" in text.replace("−0.48", "-0.48")
    assert "Δ clean: t-test p" in text and "deciding metric: clean" in text


STATUS_DECLARATION = {"final": {"attacks": ["pgd", "autoattack"], "n": 1000, "sanity": True},
                      "tune": {"max_rounds": 4}}


@pytest.mark.parametrize("rows,expected", [
    # finished: every declared run has a row with the declared final evaluation
    ([("teacher", "", 1, 1), ("a", "", 1, 1), ("b", "", 1, 1)], None),
    ([("teacher", "", 1, 1), ("a", "", 1, 1)], "2 of the 3 declared runs have a row, 1 of 1 student runs"),
    ([("teacher", "", 1, 1), ("a", "", 1, None), ("b", "", 1, 1)],
     "3 of the 3 declared runs have a row, 1 of 2 student runs have the declared final evaluation"),
    # a diverged run has nothing to evaluate; the teacher row is not a student run
    ([("teacher", "", None, None), ("a", "diverged: loss nan", None, None), ("b", "", 1, 1)], None),
], ids=["finished", "a-row-missing", "an-evaluation-missing", "diverged-and-teacher"])
def test_a_final_table_says_it_is_in_progress_until_its_declared_runs_and_evaluations_are_there(rows, expected):
    from kdlab.report.tables import study_status

    frame = pd.DataFrame([{"cell": cell, "seed": 0, "flag": flag, "pgd_acc": pgd, "autoattack_acc": aa,
                           "study_runs": 3} for cell, flag, pgd, aa in rows])
    status = study_status(frame, STATUS_DECLARATION, tuning=False)
    assert status is None if expected is None else status.startswith("**In progress**: " + expected), status


def test_a_tuning_grid_is_in_progress_until_its_searches_stopped_and_old_tables_say_nothing():
    from kdlab.report.tables import study_status

    grid = pd.DataFrame({"cell": ["w=1", "w=10", "w=100"], "seed": 0, "tune_round": [1, 1, 2]})
    assert study_status(grid, STATUS_DECLARATION, tuning=True).startswith(
        "**In progress**: tuning round 2 of at most 4, 3 runs so far")
    assert study_status(grid.assign(tune_stop="interior"), STATUS_DECLARATION, tuning=True) is None
    # a final table written before tables recorded their declared size: no claim either way
    assert study_status(pd.DataFrame({"cell": ["a"], "seed": [0]}), STATUS_DECLARATION, tuning=False) is None


def test_a_study_that_only_measures_declares_comparisons_none(train_recipe, tmp_path):
    """comparisons: none (one cell beside the teacher's row, say): nothing compared, said so in the declaration."""
    study = load_study(write_study(tmp_path, train_recipe, comparisons="none"))
    assert study.declaration["comparisons"] == {"pairs": []}
    assert "comparisons none declared" in "\n".join(study.describe())


def test_a_declared_run_that_diverges_is_recorded_and_the_study_goes_on(train_recipe, tmp_path):
    """A final run whose loss becomes non-finite is that seed's result (rerunning it diverges again), not the end
    of the study: before, the first divergence stopped `kdlab ablate STUDY` with exit 2 and every later run of the
    study was never trained (a RetinaNet CWD seed did this to skd_bccd_retinanet_cpu)."""
    study_path = write_study(tmp_path, train_recipe, cells={"grid": {"train.lr": ["1e30", 0.05]}}, seeds=[0],
                             comparisons={"pairs": [["lr=0.05", "lr=1e30"]]})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ablate", str(study_path), "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "diverged (recorded as its result, the other runs go on)" in result.output
    table = pd.read_csv(out / "tiny.csv")
    rows = table.set_index("cell")
    assert rows.loc["lr=1e30", "flag"] == "diverged" and math.isnan(rows.loc["lr=1e30", "pgd_acc"])
    assert rows.loc["lr=0.05", "pgd_acc"] >= 0  # the run after the divergence was trained
    assert "lr=1e30 ⚠ diverged | 1 (1 diverged) |" in (out / "tiny.md").read_text()
    again = CliRunner().invoke(app, ["ablate", str(study_path), "--threads", "1", "--out", str(out)])
    assert again.exit_code == 0 and "diverged (recorded" not in again.output  # complete: nothing runs again
    assert len(pd.read_csv(out / "tiny.csv")) == 2

    # the row read back from the run's diverged.json names the code that trained the run (its run.json), not the
    # code that reads it back: before, a divergence found at one commit was recorded under the next one's
    run_json = next((tmp_path / "runs").glob("tiny-lr_1e30-s0-*")) / "run.json"
    record = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**record, "git_commit": "0123456789abcdef-dirty", "git_diff_sha256": "feed",
                                    "torch_threads": 7}))
    (out / "tiny.csv").unlink()
    third = CliRunner().invoke(app, ["ablate", str(study_path), "--threads", "1", "--out", str(out)])
    assert third.exit_code == 0, third.output
    row = pd.read_csv(out / "tiny.csv", dtype={"git_diff_sha256": str}).set_index("cell").loc["lr=1e30"]
    assert (row["git_commit"], row["git_diff_sha256"], row["torch_threads"]) == ("0123456789abcdef-dirty", "feed", 7)


def test_a_cell_with_a_diverged_seed_is_summarised_and_paired_over_the_seeds_that_finished(tmp_path):
    """k=b diverged on seed 2: its mean is over seeds 0 and 1, and k=b − k=a pairs those two (hand-computed:
    differences 1 and 3 -> mean 2, sd √2, t_{0.975,1} = 12.706 -> CI 2 ± 12.706 = [-10.71, +14.71]), each count
    said."""
    from kdlab.report.tables import render

    declaration = {"study": "s", "question": "q?", "recipe": "r.yaml", "set": [],
                   "cells": {"grid": [["k", ["a", "b"]]]}, "seeds": [0, 1, 2], "metric": "pgd_acc", "attacks": ["pgd"],
                   "comparisons": {"pairs": [["k=b", "k=a"]]}, "correction": "holm", "tune": None, "final": None}
    b = {0: 31.0, 1: 33.0, 2: math.nan}
    rows = [{"cell": cell, "seed": seed, "clean_acc": 50.0, "pgd_acc": 30.0 if cell == "k=a" else b[seed],
             "flag": "diverged" if cell == "k=b" and seed == 2 else "", "study": "s", "study_sha256": "abc",
             "study_declaration": json.dumps(declaration)} for cell in ("k=a", "k=b") for seed in range(3)]
    rows[-1]["clean_acc"] = math.nan
    pd.DataFrame(rows).to_csv(tmp_path / "s.csv", index=False)
    text = render(tmp_path / "s.csv")[0].read_text().replace("−", "-")
    assert "| k=b ⚠ diverged | 3 (1 diverged) | 50.00 ± 0.00 | 32.00 ± 1.41 |" in text
    assert "| k=b - k=a | +2.00 [-10.71, +14.71] not separated (2 of 3 seeds paired) |" in text


@pytest.mark.parametrize("held", ["tiny.csv", "tiny-val.csv"])
def test_a_second_process_on_the_same_table_is_refused_before_any_work(train_recipe, tmp_path, monkeypatch, held):
    """Each writer rewrites the whole CSV from the rows it has seen: two at once would drop each other's rows. A
    process (here the flock command, as a running kdlab ablate would) holds the writer lock of the study's table
    or of its tuning table: the second is refused before its plan check (which builds every cell's models and
    data: about 20 s of a CPU study) and before its tuning."""
    import subprocess
    import time

    import kdlab.check.plan
    from kdlab.runs.final_eval import evaluate_table

    checked = []
    monkeypatch.setattr(kdlab.check.plan, "check_ablation_plan", lambda *args, **kwargs: checked.append(args))
    study_path = write_study(tmp_path, train_recipe, tune={"key": "train.epochs", "values": [1, 2], "val_size": 16})
    out = tmp_path / "out"
    out.mkdir()
    runs = yaml.safe_load(train_recipe.read_text())["output"]["dir"]
    holder = subprocess.Popen(["flock", str(out / f"{held}.writer.lock"), "sleep", "60"])
    try:
        time.sleep(1)
        result = CliRunner().invoke(app, ["ablate", str(study_path), "--threads", "1", "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert "another kdlab process is writing" in result.output and held in result.output
        assert not checked  # refused before the plan check
        assert not Path(runs).exists() or not any(Path(runs).iterdir())  # nothing trained
        with pytest.raises(KdlabError, match="another kdlab process is writing"):
            evaluate_table(out / held, ["pgd"], 10, False)
    finally:
        holder.kill()
        holder.wait()


def test_a_process_writing_a_table_may_enter_its_writer_lock_again_and_keeps_it_until_the_outer_exit(tmp_path):
    """kdlab ablate holds its tables' writer locks from before its plan check, then runs the cells under the same
    locks: the inner entry must not refuse its own process, nor release the lock the outer one holds."""
    import subprocess

    from kdlab.results import sole_writer

    table = tmp_path / "t.csv"

    def free() -> bool:  # another process could take the lock now
        return subprocess.run(["flock", "-n", str(table) + ".writer.lock", "true"], check=False).returncode == 0

    with sole_writer(table, tmp_path / "t-val.csv"):
        with sole_writer(table):
            assert not free()
        assert not free()
    assert free()
