"""The plan check's time estimate (``kdlab check``, :func:`kdlab.check.models.time_steps` scaled by
:func:`kdlab.runs.estimate.run_seconds`): its steps are timed the way the run will take them -- the run's torch
thread count, its precision, its batch -- and its arithmetic is the pass counting, checked against a hand
computation from fake step timings."""

import csv
import json
import math
import types

import pytest
import torch

import kdlab.check.models as check_models
from kdlab.check.plan import check_recipe_plan
from tests.helpers.failfast import invoke, write_recipe

TINY = "data: {dataset: embedded, subset: 100, test_subset: 20, batch_size: 50}\ntrain: {epochs: 1}\neval: {n: 20}\n"


@pytest.fixture
def torch_threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def record_timed_threads(monkeypatch) -> list[int]:
    """Every call of the timing helper records the torch thread count in force while it times."""
    seen, timed = [], check_models._timed

    def recording(run, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return timed(run, *args, **kwargs)

    monkeypatch.setattr(check_models, "_timed", recording)
    return seen


def run_threads(run_dir) -> int:
    return json.loads((run_dir / "run.json").read_text())["torch_threads"]


def test_check_times_with_the_thread_count_the_run_uses_by_default(tmp_path, monkeypatch, torch_threads_restored):
    """torch's own default is one thread per core (2 here, as on the reporting user's machine): `kdlab check`
    must time its steps with the count `kdlab train` then runs with and records -- kdlab's default, 1."""
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + TINY)
    torch.set_num_threads(2)
    seen = record_timed_threads(monkeypatch)
    checked = invoke("check", recipe)
    assert checked.exit_code == 0, checked.output
    assert seen and set(seen) == {1}, seen
    assert "with 1 torch thread (the runs' count)" in " ".join(checked.output.split())

    torch.set_num_threads(2)
    trained = invoke("train", recipe)
    assert trained.exit_code == 0, trained.output
    (run_dir,) = [p for p in (tmp_path / "out" / "runs").iterdir() if p.is_dir()]
    assert run_threads(run_dir) == 1  # what the run used and recorded: what the check timed with
    with (tmp_path / "out" / "runs.csv").open() as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["torch_threads"] == "1"


def test_an_ablation_check_times_with_the_thread_count_its_cells_use(tmp_path, monkeypatch, torch_threads_restored):
    """On a 4-core machine `kdlab ablate --jobs 1` used to run each cell with 4 threads (cores/jobs) while `kdlab
    check` of the same grid timed with torch's current count: the two now agree (1 by default)."""
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + TINY, name="teacher.yaml")
    student = write_recipe(tmp_path, "student: {arch: resnet_small, width: 4}\nteacher: {recipe: teacher.yaml}\n"
                           + TINY, name="student.yaml")
    grid = ("--grid", "method.kd.weight=0,1", "--out", tmp_path / "out" / "ablations")
    torch.set_num_threads(2)
    seen = record_timed_threads(monkeypatch)
    checked = invoke("check", student, *grid)
    assert checked.exit_code == 0, checked.output
    assert seen and len(set(seen)) == 1, seen
    ablated = invoke("ablate", student, *grid, "--jobs", "1")
    assert ablated.exit_code == 0, ablated.output
    runs = [p for p in (tmp_path / "out" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 3  # the teacher and two cells
    assert {run_threads(run) for run in runs} == set(seen) == {1}


def test_check_times_with_an_explicit_thread_count_and_restores_the_process(tmp_path, monkeypatch,
                                                                             torch_threads_restored):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + TINY)
    torch.set_num_threads(1)
    seen = record_timed_threads(monkeypatch)
    plan = check_recipe_plan(recipe, [], timing=True, threads=3)
    assert seen and set(seen) == {3}
    assert plan.runs[0].cost.threads == 3 and plan.threads == 3
    assert torch.get_num_threads() == 1  # the check leaves the caller's count as it was


def test_the_timed_steps_run_in_the_training_precision(tmp_path, monkeypatch):
    """train.precision bf16: the run's steps run under autocast, so the timed ones must too."""
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + TINY
                          + "train: {epochs: 1, precision: bf16}\n")
    autocast, build = [], check_models.build_trained

    def built(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda module, inputs: autocast.append(torch.is_autocast_enabled("cpu")) if module.training else None)
        return model

    monkeypatch.setattr(check_models, "build_trained", built)
    check_recipe_plan(recipe, [], timing=True)
    # the dry step (shapes only) runs in fp32; every timed training step after it under autocast
    assert autocast[0] is False and len(autocast) > 4 and all(autocast[1:]), autocast


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_the_estimate_is_the_hand_computed_pass_count_of_fake_step_timings(tmp_path, monkeypatch):
    """Every training step takes 4 ms per image, an evaluation forward 1 ms, a forward+backward 3 ms (a fake
    clock): the estimate must be the hand computation below, timed on the recipe's whole batch of 50."""
    clock = FakeClock()
    monkeypatch.setattr(check_models, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))

    def step(method, batch, generator, precision=None):
        clock.now += 0.004 * len(batch[0])

    def costed(*args, **kwargs):
        model = build(*args, **kwargs)

        def hook(module, inputs):
            if not module.training:  # the evaluation passes of time_steps
                clock.now += (0.003 if torch.is_grad_enabled() else 0.001) * inputs[0].shape[0]

        model.register_forward_pre_hook(hook)
        return model

    build = check_models.build_trained
    monkeypatch.setattr(check_models, "step", step)
    monkeypatch.setattr(check_models, "build_trained", costed)
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n"
                          "data: {dataset: embedded, subset: 500, val_size: 100, batch_size: 50}\n"
                          "train: {epochs: 2, select: pgd, select_steps: 10, adversarial: {method: fgsm-rs}}\n"
                          "eval: {n: 40, attacks: [clean, pgd], steps: 5}\n")
    plan = check_recipe_plan(recipe, [], timing=True)
    (run,) = plan.runs
    assert (run.facts.train, run.facts.val) == (500, 100)
    assert run.cost.images == 50  # the run's batch, not a handful of images
    assert math.isclose(run.cost.train, 0.004) and math.isclose(run.cost.forward, 0.001)
    assert math.isclose(run.cost.forward_backward, 0.003)
    training = 0.004 * 500 * 2  # 10 batches of 50 per epoch, 2 epochs
    validation = 2 * 100 * (0.001 + 11 * 0.003)  # per epoch: a clean forward + PGD-10 selection's 11 passes
    evaluation = 40 * (0.001 + 6 * 0.003)  # clean forward + PGD-5's 6 passes
    assert math.isclose(training + validation + evaluation, 11.56)
    assert math.isclose(run.seconds, 11.56)
