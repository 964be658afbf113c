"""Final evaluation of finished runs (kdlab.runs.final_eval, ``kdlab eval TABLE.csv``): new attacks on a trained
checkpoint, never a training run; nothing computed twice; numbers equal to the reference packages' on the same
checkpoint and images; a table gets its columns with their n; an interrupted table evaluation resumes.

The runs are tiny real ones (embedded CIFAR-10, resnet_small width 4, one epoch) trained once per module by
``kdlab ablate``; the attacks are counted or interrupted by wrapping ``run_attack`` (tests/helpers/ctrl_c.py).
"""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdlab.cli.main import app
from kdlab.errors import KdlabError
from tests.helpers.ctrl_c import interrupt_at
from tests.helpers.failfast import assert_one_line_error

N = 10


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished 2 cells x 2 seeds table; its run directories; a pristine copy of its CSV."""
    root = tmp_path_factory.mktemp("study")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1}, "eval": {"n": N},
        "output": {"dir": str(root / "runs"), "table": str(root / "runs.csv")}}))
    result = CliRunner().invoke(app, ["ablate", str(recipe), "--grid", "train.lr=0.05,0.1", "--seeds", "0,1",
                                      "--threads", "1", "--out", str(root / "tables")])
    assert result.exit_code == 0, result.output
    table = root / "tables" / "tiny-grid-train.lr.csv"
    shutil.copy(table, root / "pristine.csv")
    return root, table


@pytest.fixture()
def fresh(study, tmp_path):
    """A copy of the study (runs and table) of this test's own, so caches never leak between tests."""
    root, table = study
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs", runs, ignore=shutil.ignore_patterns("final_eval.json*"))
    frame = pd.read_csv(root / "pristine.csv")
    frame["run_dir"] = [str(runs / Path(r).name) for r in frame["run_dir"]]
    frame.to_csv(tmp_path / "pristine.csv", index=False)
    copy = tmp_path / "tables" / table.name
    copy.parent.mkdir()
    frame.to_csv(copy, index=False)
    return tmp_path, copy, [Path(r) for r in frame["run_dir"]]


def no_training(monkeypatch):
    import kdlab.runs.run
    import kdlab.train.engine

    def fit(*args, **kwargs):
        raise AssertionError("the final evaluation called the training loop")

    monkeypatch.setattr(kdlab.train.engine, "fit", fit)
    monkeypatch.setattr(kdlab.runs.run, "fit", fit)


def test_a_finished_run_is_evaluated_once_and_never_trained(fresh, monkeypatch):
    from kdlab.runs.final_eval import evaluate_finished

    folder, _, runs = fresh
    no_training(monkeypatch)
    calls = interrupt_at(monkeypatch, 10**6)  # counts every attack batch
    first = evaluate_finished(runs[0], ["pgd", "cw", "fgsm"], N, False, out=folder / "eval.csv")
    assert calls, "the first call attacks"
    assert not first.pop("final_eval_cached")
    assert {k: first[k] for k in ("clean_n", "pgd_n", "cw_n", "fgsm_n")} == dict.fromkeys(
        ("clean_n", "pgd_n", "cw_n", "fgsm_n"), N)
    assert first["sanity"] == "not run" and first["final_eval_torch"] == torch.__version__.split("+")[0]
    # the run's own evaluation was PGD-20 at 8/255, step 2/255 on these 10 images: reused, not measured again
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert first["pgd_acc"] == summary["pgd_acc"]
    recorded = pd.read_csv(folder / "eval.csv")
    assert sorted(recorded["attack"]) == ["clean", "cw", "fgsm"]
    assert set(recorded["eps_255"]) == {0.0, 8.0} and set(recorded["n"]) == {N}

    calls.clear()
    again = evaluate_finished(runs[0], ["pgd", "cw", "fgsm"], N, False, out=folder / "eval.csv")
    assert calls == [] and again.pop("final_eval_cached")  # no attack, nothing loaded
    assert again == first
    assert len(pd.read_csv(folder / "eval.csv")) == 3  # nothing appended


def test_rows_kdlab_eval_recorded_are_reused_not_recomputed(fresh, monkeypatch):
    from kdlab.runs.final_eval import evaluate_finished

    folder, _, runs = fresh
    out = folder / "eval.csv"
    result = CliRunner().invoke(app, ["eval", str(runs[1]), "--attack", "clean", "--attack", "cw", "--n", str(N),
                                      "--batch-size", "256", "--out", str(out)])
    assert result.exit_code == 0, result.output
    by_hand = pd.read_csv(out).set_index("attack")
    calls = interrupt_at(monkeypatch, 10**6)
    columns = evaluate_finished(runs[1], ["cw"], N, False, out=out)
    assert calls == []  # clean and cw were on record for this checkpoint and these images
    assert columns["cw_acc"] == by_hand.loc["cw", "accuracy"]


def test_the_reused_pgd_equals_a_fresh_kdlab_eval_and_fgsm_equals_torchattacks(fresh):
    """Two independent paths: the training run's own PGD-20 (reused) against ``kdlab eval --attack pgd`` measuring
    it now; FGSM against torchattacks.FGSM called directly on the checkpoint's model and images."""
    import torchattacks

    from kdlab.config.recipe import load_recipe
    from kdlab.data.loaders import load_data_spec
    from kdlab.data.splits import test_selection
    from kdlab.models.files import load_model
    from kdlab.runs.final_eval import evaluate_finished

    folder, _, runs = fresh
    columns = evaluate_finished(runs[2], ["pgd", "fgsm"], N, False, out=folder / "eval.csv")
    result = CliRunner().invoke(app, ["eval", str(runs[2]), "--attack", "pgd", "--n", str(N),
                                      "--out", str(folder / "by-hand.csv")])
    assert result.exit_code == 0, result.output
    measured = pd.read_csv(folder / "by-hand.csv").set_index("attack")
    assert columns["pgd_acc"] == pytest.approx(measured.loc["pgd", "accuracy"], abs=1e-4)

    recipe = load_recipe(runs[2] / "recipe.yaml")
    model, _ = load_model(runs[2] / "best.pt")
    model.eval()
    images, labels = test_selection(load_data_spec(recipe.data).test, N, recipe.eval.seed)
    adversarial = torchattacks.FGSM(model, eps=8 / 255)(images, labels)
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels) & (model(adversarial).argmax(1) == labels)
    assert columns["fgsm_acc"] == pytest.approx(100.0 * float(correct.float().mean()), abs=1e-4)
    with torch.no_grad():
        assert columns["clean_acc"] == pytest.approx(100.0 * float((model(images).argmax(1) == labels).float()
                                                                   .mean()), abs=1e-4)


@pytest.mark.slow
def test_autoattack_equals_pyautoattack_on_the_checkpoint(tmp_path):
    """The standard AutoAttack of the final evaluation against pyautoattack's ``AutoAttack(version='standard')``
    on the run's checkpoint and its test images (same seed and batch size). At eps 1/255 the model keeps points,
    so the comparison is not vacuous."""
    from pyautoattack import AutoAttack

    from kdlab.config.recipe import load_recipe
    from kdlab.data.loaders import load_data_spec
    from kdlab.data.splits import test_selection
    from kdlab.models.files import load_model
    from kdlab.runs.final_eval import evaluate_finished
    from kdlab.runs.run import run_recipe

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "embedded", "subset": 256, "test_subset": 40, "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 8}, "train": {"epochs": 3},
        "eval": {"n": 20, "eps": "1/255", "alpha": "0.25/255"},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")}}))
    run_dir = run_recipe(load_recipe(path)).run_dir
    columns = evaluate_finished(run_dir, ["autoattack"], 20, False, out=tmp_path / "eval.csv")

    recipe = load_recipe(run_dir / "recipe.yaml")
    model, _ = load_model(run_dir / "best.pt")
    model.eval()
    images, labels = test_selection(load_data_spec(recipe.data).test, 20, recipe.eval.seed)
    reference = AutoAttack(model, eps=1 / 255, version="standard", seed=recipe.eval.seed, device="cpu")
    adversarial, _ = reference.run_standard_evaluation(images, labels, batch_size=recipe.eval.batch_size)
    with torch.no_grad():
        robust = 100.0 * float((model(adversarial).argmax(1) == labels).float().mean())
    assert columns["autoattack_acc"] == pytest.approx(robust, abs=1e-4)
    assert 0 < columns["autoattack_acc"] and columns["autoattack_n"] == 20


def test_a_run_without_a_finished_checkpoint_is_refused_in_one_line(fresh, tmp_path, monkeypatch):
    from kdlab.runs.final_eval import evaluate_finished

    folder, table, runs = fresh
    no_training(monkeypatch)
    (runs[3] / "best.pt").unlink()
    with pytest.raises(KdlabError, match="has no finished checkpoint \\(best.pt missing\\).*never trains") as error:
        evaluate_finished(runs[3], ["pgd"], N, False, out=folder / "eval.csv")
    assert "\n" not in str(error.value)
    # the table command refuses the whole table before any work, naming the missing run and the fix
    result = CliRunner().invoke(app, ["eval", str(table), "--n", str(N), "--out", str(folder / "eval.csv")])
    text = assert_one_line_error(result, "1 of 4 run directories", runs[3].name, "rerun its command")
    assert "kdlab ablate" in text
    assert not (folder / "eval.csv").exists()


def test_a_table_gets_its_columns_with_their_n_and_an_interrupted_evaluation_resumes(fresh, monkeypatch):
    folder, table, _runs = fresh
    out = folder / "eval.csv"
    command = ["eval", str(table), "--attack", "pgd", "--attack", "cw", "--n", str(N), "--out", str(out)]
    no_training(monkeypatch)
    import kdlab.runs.evaluate

    real, started = kdlab.runs.evaluate.evaluate_target, []

    def ctrl_c_in_the_second_run(*args, **kwargs):
        started.append(args[0])
        if len(started) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(kdlab.runs.evaluate, "evaluate_target", ctrl_c_in_the_second_run)
        stopped = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted: 1 run of tiny-grid-train.lr.csv evaluated" in stopped.output
    assert "rerun the same command" in stopped.output
    half = pd.read_csv(table)
    assert half["cw_acc"].notna().tolist() == [True, False, False, False]

    calls = interrupt_at(monkeypatch, 10**6)
    result = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[1/4] lr=0.05 seed 0: already evaluated" in result.output
    assert "[2/4] lr=0.05 seed 1: measured" in result.output and "expected" in result.output
    assert "1 already evaluated" in result.output and "3 evaluated now" in result.output
    assert calls  # the three other runs were attacked
    done = pd.read_csv(table)
    assert done["cw_acc"].notna().all() and (done["cw_n"] == N).all() and (done["pgd_n"] == N).all()
    assert (done["sanity"] == "not run").all()
    # the other columns are the ablation's own, untouched
    pristine = pd.read_csv(folder / "pristine.csv")
    assert done[pristine.columns].equals(pristine)
    markdown = table.with_suffix(".md").read_text()
    assert "| cell | seeds | clean (n=10) | PGD (n=10) | CW∞ (n=10) |" in markdown
    assert "PGD-20 with step ε/4; CW∞ 30 steps with step ε/4" in markdown and "at ε = 8/255" in markdown

    calls.clear()
    again = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
    assert again.exit_code == 0 and calls == [] and "4 already evaluated" in again.output


def test_options_that_a_tables_runs_fix_themselves_are_refused(fresh):
    folder, table, _ = fresh
    result = CliRunner().invoke(app, ["eval", str(table), "--eps", "4/255", "--out", str(folder / "eval.csv")])
    assert_one_line_error(result, "--eps", "their own recorded settings", "kdlab eval RUN_DIR")


@pytest.mark.slow
def test_the_sanity_verdict_is_the_one_kdlab_eval_records(fresh):
    from kdlab.runs.final_eval import evaluate_finished

    folder, _, runs = fresh
    columns = evaluate_finished(runs[0], ["cw"], N, True, out=folder / "eval.csv")
    recorded = pd.read_csv(folder / "eval.csv")
    verdict = recorded[recorded["attack"] == "sanity"]["sanity"].tolist()
    assert verdict == [columns["sanity"]] and "eps 8/255, n 10, seed 0" in verdict[0]


def test_the_table_says_where_sanity_passed_and_failed():
    from kdlab.report.tables import markdown_table, sanity_note

    settings = "(eps 8/255, n 1000, seed 0: pgd 10 steps, apgd-ce 20 steps, square 5000 queries)"
    frame = pd.DataFrame({"cell": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "pgd_acc": [1.0, 2.0, 3.0, 4.0],
                          "sanity": [f"ok {settings}"] * 4})
    assert sanity_note(frame) == f"sanity (kdlab eval --sanity {settings}): passed on all 4 rows checked."
    frame.loc[3, "sanity"] = f"[monotone-in-eps] PGD accuracy rises ... | [large-eps-breaks-all] PGD ... {settings}"
    frame.loc[0, "sanity"] = "not run"
    assert sanity_note(frame) == (f"sanity (kdlab eval --sanity {settings}): failed on 1 of 3 rows checked (b seed 1: "
                                  "monotone-in-eps, large-eps-breaks-all: see the CSV's sanity column); not run on 1 "
                                  "row.")
    assert sanity_note(frame) in markdown_table(frame)
    assert sanity_note(frame.drop(columns="sanity")) is None


def test_paired_columns_on_autoattack_form_a_holm_family_of_their_own():
    from kdlab.report.tables import markdown_table

    # PGD: b - a = +1, +2, +3 (mean 2, sd 1); AutoAttack: b - a = -1, 0, +1 (mean 0)
    frame = pd.DataFrame({"cell": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                          "pgd_acc": [10.0, 10.0, 10.0, 11.0, 12.0, 13.0],
                          "autoattack_acc": [5.0, 5.0, 5.0, 4.0, 5.0, 6.0], "autoattack_n": [1000] * 6})
    text = markdown_table(frame, baseline="a")
    assert "| cell | seeds | PGD | AutoAttack (n=1000) | Δ PGD vs a (paired, 95 % CI) | Δ PGD vs a: t-test p, Holm " \
           "| Δ AutoAttack vs a (paired, 95 % CI) | Δ AutoAttack vs a: t-test p, Holm |" in text
    # half-width t_{0.975,2} * 1 / sqrt(3) = 2.484
    assert "+2.00 [-0.48, +4.48] not separated" in text and "+0.00 [-2.48, +2.48] not separated" in text
    assert "The verdict is read on PGD; the AutoAttack columns" in text
    deciding = markdown_table(frame, baseline="a", metrics=["autoattack_acc"])
    assert "Δ PGD" not in deciding and "Δ AutoAttack vs a (paired" in deciding
    with pytest.raises(KdlabError, match="--metric cw_acc: not a metric of this table"):
        markdown_table(frame, baseline="a", metrics=["cw_acc"])


@pytest.mark.slow
def test_a_verdict_judged_again_under_new_sanity_rules_attacks_nothing_and_keeps_the_recorded_seconds(
        fresh, monkeypatch):
    """A change of the sanity rules (SANITY_RULES) makes every cached verdict stale: the table's runs are judged
    again from their recorded attack rows, and the table keeps the evaluation seconds it records (judging is not
    the evaluation's cost)."""
    import kdlab.robustness.sanity

    folder, table, _ = fresh
    out = folder / "eval.csv"
    command = ["eval", str(table), "--attack", "cw", "--n", str(N), "--sanity", "--out", str(out)]
    first = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    evaluated, rows = pd.read_csv(table), len(pd.read_csv(out))

    monkeypatch.setattr(kdlab.robustness.sanity, "SANITY_RULES", kdlab.robustness.sanity.SANITY_RULES + 1)
    import kdlab.robustness.accuracy

    real, attacked = kdlab.robustness.accuracy.build_attack, []
    monkeypatch.setattr(kdlab.robustness.accuracy, "build_attack",
                        lambda model, spec, *a, **k: attacked.append(spec.name) or real(model, spec, *a, **k))
    again = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "4 evaluated now" in again.output  # not taken from the cache: judged again
    assert set(attacked) <= {"clean"}  # every attack came from the record
    assert len(pd.read_csv(out)) == rows  # the same verdicts: nothing appended
    judged = pd.read_csv(table)
    assert judged["final_eval_seconds"].tolist() == evaluated["final_eval_seconds"].tolist()
    assert judged["final_eval_seconds"].notna().all() and judged["sanity"].tolist() == evaluated["sanity"].tolist()
