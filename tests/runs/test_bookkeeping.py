"""Results that stay put: no table overwritten by another ablation, rows that tell runs apart, one row per
run, evaluation rows that name their test set."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

import kdlab.ablation.execute
from kdlab.ablation.execute import run_ablation
from kdlab.ablation.grid import grid_cells, plan_ablation

ROOT = Path(__file__).resolve().parents[2]
# the tables committed before the declared-study protocol (issue #24), kept as fixtures of real kdlab output
ARCHIVE = ROOT / "results" / "archive" / "2026-11"


@pytest.fixture()
def distill_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "R", "student": {"arch": "resnet_small", "width": 4},
                                    "teacher": {"checkpoint": str(tmp_path / "t.pt")},
                                    "output": {"dir": str(tmp_path / "runs")}}))
    return path


def grid_plan(recipe, grid, overrides=()):
    return plan_ablation(str(recipe), components=False, blocks=None, cumulative=False, grid=list(grid),
                         seeds=[0], attacks=["pgd"], overrides=list(overrides), name=None)


@pytest.fixture()
def fake_cells(monkeypatch):
    """Cells 'run' instantly: a cell's PGD accuracy is read off its overrides, so tables can be told apart."""
    def run_cell(recipe_yaml, threads, overrides=(), group="", cell="", divergence_is_a_result=False, command="",
                 limit=None, **final):  # final evaluation settings: none declared here
        recipe = yaml.safe_load(recipe_yaml)
        method = recipe["method"]
        pgd = 10 * method.get("kd", {}).get("weight", 1.0) + method.get("acm", {}).get("weight", 10.0)
        return {"clean_acc": 50.0, "pgd_acc": pgd, "wall_seconds": 1.0, "run_dir": recipe["name"]}

    monkeypatch.setattr(kdlab.ablation.execute, "run_cell", run_cell)
    # no teacher to train or evaluate: the local executor's shared teacher (the cluster's teacher_row) stubbed
    monkeypatch.setattr(kdlab.ablation.execute, "shared_teacher", lambda *a, **k: ((None,) * 4, {"teacher": "t"}))
    monkeypatch.setattr(kdlab.ablation.execute, "teacher_row", lambda *a, **k: None)


def test_two_grids_with_keys_ending_alike_keep_two_tables(distill_recipe, tmp_path, fake_cells):
    out = tmp_path / "tables"
    kd = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"]), out)
    acm = run_ablation(grid_plan(distill_recipe, ["method.acm.weight=1,10"]), out)
    assert kd.name == "R-grid-method.kd.weight.csv" and acm.name == "R-grid-method.acm.weight.csv"
    assert pd.read_csv(kd)["setting"].tolist() == ["method.kd.weight=0.5", "method.kd.weight=2"]
    assert pd.read_csv(acm)["pgd_acc"].tolist() == [11.0, 20.0]  # kd 1 (default): 10 + acm weight
    assert pd.read_csv(kd)["pgd_acc"].tolist() == [15.0, 30.0]  # still the first grid's numbers
    assert {p.name for p in out.iterdir()} >= {"R-grid-method.kd.weight.md", "R-grid-method.acm.weight.md",
                                               "R-grid-method.kd.weight.png", "R-grid-method.acm.weight.png"}


def test_same_keys_other_values_or_overrides_get_a_new_version_not_an_overwrite(distill_recipe, tmp_path,
                                                                                 fake_cells):
    out = tmp_path / "tables"
    first = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"]), out)
    again = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"]), out)
    other = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=4,8"]), out)
    with_set = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"], ["method.acm.weight=0"]),
                            out)
    assert again == first  # the same command continues (rewrites) its own table
    assert (other.name, with_set.name) == ("R-grid-method.kd.weight-v2.csv", "R-grid-method.kd.weight-v3.csv")
    assert pd.read_csv(first)["pgd_acc"].tolist() == [15.0, 30.0]
    assert pd.read_csv(other)["pgd_acc"].tolist() == [50.0, 90.0]
    assert pd.read_csv(with_set)["pgd_acc"].tolist() == [5.0, 20.0]


def test_an_interrupted_rerun_keeps_the_rows_it_has_not_recorded_again(distill_recipe, tmp_path, fake_cells,
                                                                         monkeypatch):
    out, plan = tmp_path / "tables", grid_plan(distill_recipe, ["method.kd.weight=0.5,2"])
    table = run_ablation(plan, out)
    assert pd.read_csv(table)["pgd_acc"].tolist() == [15.0, 30.0]

    def rerun(recipe_yaml, threads, overrides=(), group="", cell="", divergence_is_a_result=False, command="",
              limit=None, **final):
        if cell == "weight=2":  # stopped before its run is recorded again
            raise KeyboardInterrupt
        return {"clean_acc": 50.0, "pgd_acc": 16.0, "wall_seconds": 1.0, "run_dir": "again"}

    monkeypatch.setattr(kdlab.ablation.execute, "run_cell", rerun)
    with pytest.raises(KeyboardInterrupt):
        run_ablation(plan, out)
    rows = pd.read_csv(table)
    assert rows["cell"].tolist() == ["weight=0.5", "weight=2"]  # not truncated to what the rerun reached
    assert rows["pgd_acc"].tolist() == [16.0, 30.0]  # the rerun's row replaced the first; the other is kept
    assert rows["run_dir"].tolist() == ["again", "R-weight_2-s0"]


def test_cells_name_the_full_key_when_two_keys_share_a_last_segment():
    cells = grid_cells(["method.kd.weight=1", "method.acm.weight=2,3", "train.lr=0.1"])
    assert [c.label for c in cells] == ["method.kd.weight=1,method.acm.weight=2,lr=0.1",
                                        "method.kd.weight=1,method.acm.weight=3,lr=0.1"]


@pytest.mark.parametrize("recipe, grid, name, table", [
    ("recipes/skd_bccd_cpu.yaml", "method.feature.kind=none,l1,l2,ssim", None,
     "skd-bccd-cpu-grid-method.feature.kind"),
    ("recipes/skd_bccd_cpu.yaml", "method.feature.components=lcs,cs,s", None,
     "skd-bccd-cpu-grid-method.feature.components"),
    ("recipes/skd_quickstart.yaml", "method.feature.kind=none,l1,l2,ssim", None,
     "skd-quickstart-grid-method.feature.kind"),
    ("recipes/mixacm_cifar10_cpu.yaml", "method.acm.weight=1,10,100", "mixacm_cpu_tune",
     "mixacm_cpu_tune-grid-method.acm.weight"),
])
def test_committed_grid_tables_are_named_as_their_commands_write_them(recipe, grid, name, table):
    plan = plan_ablation(str(ROOT / recipe), components=False, blocks=None, cumulative=False, grid=[grid],
                         seeds=[0, 1, 2], attacks=["pgd"], overrides=[], name=name)
    path = plan.table_path(ARCHIVE / "ablations")
    assert path.name == f"{table}.csv" and path.is_file()
    assert f"# {table}\n" in path.with_suffix(".md").read_text()


# --------------------------------------------------------------------------- runs rows
def tiny_recipe(tmp_path, overrides=()):
    from kdlab.config.recipe import load_recipe

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 2}, "eval": {"n": 10, "steps": 1},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")}}))
    return load_recipe(path, list(overrides))


def test_rows_of_one_name_record_their_overrides_and_run_key(tmp_path):
    from kdlab.runs.run import run_recipe

    for lr in ("0.05", "0.2"):
        overrides = [f"train.lr={lr}"]
        run_recipe(tiny_recipe(tmp_path, overrides), overrides=overrides)
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert rows["name"].tolist() == ["tiny", "tiny"]
    assert rows["overrides"].tolist() == ["train.lr=0.05", "train.lr=0.2"]
    assert rows["run_key"].nunique() == 2
    assert all(key.endswith(run_key) for key, run_key in zip(rows["key"], rows["run_key"]))


def test_force_then_interrupt_then_resume_leaves_one_row_per_finished_run(tmp_path):
    from kdlab.runs.run import run_recipe
    from tests.helpers.resume import StopAfter

    recipe = tiny_recipe(tmp_path)
    first = run_recipe(recipe)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, force=True, reporter_factory=lambda name: StopAfter(1))
    resumed = run_recipe(recipe, resume=True)
    run_recipe(recipe)  # reused: no new row either
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert resumed.run_dir == first.run_dir and not resumed.reused
    assert rows["run_dir"].tolist() == [str(first.run_dir)]
    assert rows["finished_at"].iloc[0] == resumed.summary["finished_at"]


def test_the_same_run_finished_on_another_processor_keeps_the_first_ones_row(tmp_path, monkeypatch):
    """A fresh checkout on another processor type retrains a run of the same key to other weights (the BCCD Faster
    R-CNN teacher on Intel Xeon against AMD EPYC): its runs.csv row is added beside the committed one, which
    other tables' rows (their teacher) still describe; on the same processor it replaces it (one row per run)."""
    import kdlab.results
    from kdlab.runs.run import run_recipe

    recipe = tiny_recipe(tmp_path)
    first = run_recipe(recipe)
    here = pd.read_csv(tmp_path / "runs.csv", dtype=str)["device_name"].iloc[0]
    run_recipe(recipe, force=True)  # the same processor: replaced
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 1
    monkeypatch.setattr(kdlab.results, "cpu_name", lambda: "AMD EPYC 7B13")
    again = run_recipe(recipe, force=True)
    rows = pd.read_csv(tmp_path / "runs.csv", dtype=str)
    assert again.run_dir == first.run_dir
    assert rows["run_dir"].tolist() == [str(first.run_dir)] * 2
    assert rows["device_name"].tolist() == [here, "AMD EPYC 7B13"]


def test_a_diverged_run_is_recorded_and_a_rerun_reports_it_without_training(tmp_path, monkeypatch):
    import kdlab.runs.run
    from kdlab.errors import Diverged
    from kdlab.runs.run import run_recipe

    recipe = tiny_recipe(tmp_path, ["train.lr=1e30"])
    with pytest.raises(Diverged, match="loss became"):
        run_recipe(recipe)
    run_dir = next(path for path in (tmp_path / "runs").iterdir() if path.is_dir())
    assert (run_dir / "diverged.json").is_file()  # kept, though no epoch finished

    real_fit = kdlab.runs.run.fit
    monkeypatch.setattr(kdlab.runs.run, "fit", lambda *a, **k: pytest.fail("a recorded divergence trained again"))
    for resume in (False, True):
        with pytest.raises(Diverged, match="loss became .* --force trains it again"):
            run_recipe(recipe, resume=resume)
    monkeypatch.setattr(kdlab.runs.run, "fit", real_fit)
    with pytest.raises(Diverged, match="loss became"):  # --force trains again (and diverges again)
        run_recipe(recipe, force=True)
    assert not (tmp_path / "runs.csv").exists()  # a diverged run has no row


def test_a_run_records_its_torch_thread_count(tmp_path):
    """CPU float reductions depend on the thread count: it is recorded with the run."""
    import json

    import torch

    from kdlab.runs.run import run_recipe

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = run_recipe(tiny_recipe(tmp_path))
    finally:
        torch.set_num_threads(before)
    assert outcome.summary["torch_threads"] == 1
    assert json.loads((outcome.run_dir / "run.json").read_text())["torch_threads"] == 1
    assert pd.read_csv(tmp_path / "runs.csv")["torch_threads"].tolist() == [1]


def test_a_distill_run_records_the_command_as_typed_and_its_overrides(tmp_path):
    """run.json, summary.json and the runs.csv row hold the command line as typed (shell-quoted, the program named
    kdlab) and the --set list; before, run.json held the Python process's argv joined by spaces."""
    import json
    import shlex

    import torch

    from tests.helpers.failfast import invoke

    recipe = tmp_path / "d.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "d", "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 32},
        "student": {"arch": "resnet_small", "width": 4},
        "teacher": {"checkpoint": str(kdlab_checkpoint(tmp_path / "t.pt"))},
        "train": {"epochs": 1}, "eval": {"n": 10, "steps": 1},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")}}))
    typed = ["distill", str(recipe), "--set", "train.lr=0.05", "--set", "method.acm.blocks=[2, 3]", "--threads", "1"]
    before = torch.get_num_threads()
    try:
        result = invoke(*typed)
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    command = f"kdlab distill {recipe} --set train.lr=0.05 --set 'method.acm.blocks=[2, 3]' --threads 1"
    assert command == "kdlab " + shlex.join(typed)
    [run_dir] = [path for path in (tmp_path / "runs").iterdir() if path.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["command"] == command
    assert record["overrides"] == ["train.lr=0.05", "method.acm.blocks=[2, 3]"]
    assert json.loads((run_dir / "summary.json").read_text())["command"] == command
    assert pd.read_csv(tmp_path / "runs.csv")["command"].tolist() == [command]


def _run_under_name(tmp_path, name, delay, results):
    """In a fresh process: run the tiny recipe as ``name``; the training starts ``delay`` seconds late."""
    import time

    import kdlab.runs.run
    from kdlab.runs.run import run_recipe

    fit = kdlab.runs.run.fit
    kdlab.runs.run.fit = lambda *args, **kwargs: (time.sleep(delay), fit(*args, **kwargs))[1]
    outcome = run_recipe(tiny_recipe(tmp_path, [f"name={name}"]))
    results.put((name, str(outcome.run_dir), outcome.reused))


def test_one_run_started_under_two_names_at_once_trains_once(tmp_path):
    """The same cell in two tables started together: the second process waits for the first one's run (it
    has begun training, not finished) and reuses it instead of training a twin in a second directory."""
    import multiprocessing
    import time

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    first = context.Process(target=_run_under_name, args=(tmp_path, "tiny-a", 8.0, results))
    first.start()
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs").glob("tiny-a-*/run.json")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the first process holds its run and is about to train
    second = context.Process(target=_run_under_name, args=(tmp_path, "tiny-b", 0.0, results))
    second.start()
    outcomes = sorted(results.get(timeout=300) for _ in range(2))
    first.join(60), second.join(60)
    (_, dir_a, reused_a), (_, dir_b, reused_b) = outcomes
    assert (reused_a, reused_b) == (False, True) and dir_b == dir_a
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()] == [Path(dir_a).name]


# --------------------------------------------------------------------------- evaluation rows
def kdlab_checkpoint(path, classes=10):
    import torch

    from kdlab.models.files import save_model
    from kdlab.models.registry import build_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet_small", classes, width=4)
    save_model(path, model, task="classification", arch="resnet_small", options={"width": 4},
               num_classes=classes)
    return path


def image_folder(root, offset):
    """A 10-class ImageFolder of real CIFAR-10 JPEGs (2 train, 3 test per class) from image ``offset`` on."""
    import shutil

    source = Path("/work/shared/data/cifar10-jpeg")
    for split, count in (("train", 2), ("test", 3)):
        for folder in sorted((source / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for file in sorted(folder.iterdir())[offset:offset + count]:
                shutil.copy(file, root / split / folder.name / file.name)
    return root


def test_eval_rows_record_the_data_root_and_a_test_set_hash_and_dedup_keeps_them_apart(tmp_path):
    from kdlab.runs.evaluate import evaluate_target, latest_rows

    checkpoint = kdlab_checkpoint(tmp_path / "m.pt")
    first, shifted = image_folder(tmp_path / "a", 0), image_folder(tmp_path / "b", 10)
    out = tmp_path / "eval.csv"
    for root, force in ((first, False), (shifted, False), (first, True)):  # the repeat: forced, or it is skipped
        evaluate_target(checkpoint, ["clean"], n=30, data=f"imagefolder:{root}", out=out, force=force)
    rows = pd.read_csv(out)
    assert rows["dataset"].tolist() == ["imagefolder"] * 3
    assert rows["data_root"].tolist() == [str(first), str(shifted), str(first)]
    assert rows["test_sha256"][0] == rows["test_sha256"][2] != rows["test_sha256"][1]
    latest = latest_rows(out)  # the shifted test set is not a duplicate of the first one; the repeat is
    assert sorted(latest["data_root"]) == sorted([str(first), str(shifted)])
    assert latest.index.tolist() == [1, 2]


def test_eps_sweeps_with_other_attacks_or_range_write_other_plots_and_name_them_in_the_title(tmp_path,
                                                                                             monkeypatch):
    import kdlab.report.plots
    from kdlab.runs.evaluate import evaluate_target

    titles = []
    real = kdlab.report.plots.plot_robustness_curve
    monkeypatch.setattr(kdlab.report.plots, "plot_robustness_curve",
                        lambda rows, path, title=None: titles.append(title) or real(rows, path, title))
    checkpoint = kdlab_checkpoint(tmp_path / "run" / "best.pt")
    out = tmp_path / "eval.csv"

    def sweep(attacks, eps, **options):
        return evaluate_target(checkpoint, attacks, n=8, steps=1, data="embedded", out=out, eps_sweep=eps,
                               **options).plot

    pgd = sweep(["pgd"], [0, 2 / 255, 4 / 255])
    fgsm = sweep(["fgsm"], [0, 2 / 255, 4 / 255])
    wider = sweep(["pgd"], [0, 2 / 255, 8 / 255])
    other_n = evaluate_target(checkpoint, ["pgd"], n=6, steps=1, data="embedded", out=out,
                              eps_sweep=[0, 2 / 255, 4 / 255]).plot
    again = sweep(["pgd"], [0, 2 / 255, 4 / 255])
    assert len({pgd, fgsm, wider, other_n}) == 4 and again == pgd
    assert all(p.is_file() for p in (pgd, fgsm, wider))
    assert pgd.name.startswith("robustness-run_best.pt-pgd-eps0-4-embedded-n8-")
    assert "fgsm-eps0-4" in fgsm.name and "pgd-eps0-8" in wider.name
    assert "run/best.pt" in titles[0] and "8 embedded test images" in titles[0] and "pgd 1 steps" in titles[0]
