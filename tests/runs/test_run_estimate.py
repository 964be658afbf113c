"""Time estimates (kdlab.runs.estimate): a run's expected time, announced after its first timed steps (the
arithmetic against hand-computed values on a fake clock, and the line a real tiny run prints), and an ablation's
remaining time."""

import math
import re

import pytest
import torch
from torch import nn

from kdlab.config.recipe import validate_recipe
from kdlab.config.sections import TrainSpec
from kdlab.runs.estimate import (
    MIN_STEPS,
    WARMUP_STEPS,
    ExpectedTime,
    NoteReporter,
    RunShape,
    remaining_seconds,
)
from kdlab.runs.run import run_recipe
from kdlab.train.engine import DataSource, StepResult, fit
from kdlab.train.reporter import Reporter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class QuarterSecondSteps(nn.Module):
    """A method whose every step takes 0.25 s on the fake clock."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.clock = clock

    def forward(self, batch, generator) -> StepResult:
        self.clock.now += 0.25
        return StepResult(loss=(self.weight * batch[0].mean()).sum())


def test_the_estimate_scales_the_timed_steps_and_counts_validation_and_evaluation_passes(tmp_path):
    clock, notes = FakeClock(), []
    recipe = validate_recipe({"data": {"batch_size": 16, "val_size": 96}, "model": {"arch": "resnet_small"},
                              "train": {"epochs": 3, "select": "pgd", "select_steps": 10,
                                        "adversarial": {"method": "fgsm-rs"}},
                              "eval": {"n": 192, "attacks": ["clean", "pgd"], "steps": 20}})
    shape = RunShape(recipe=recipe, train=16 * 40, val=96, test=1000, passes=2.0)
    reporter = ExpectedTime(Reporter(), notes.append, shape, now=clock, synchronize=lambda: None)
    data = DataSource(batches=lambda generator: ((torch.ones(16, 1), torch.zeros(16)) for _ in range(40)),
                      batches_per_epoch=40, batch_size=lambda batch: 16)

    def validate():
        clock.now += 5.0  # validation time is never mistaken for step time
        return {"pgd": 0.0}

    fit(QuarterSecondSteps(clock), data, TrainSpec(epochs=3, lr=0.1), seed=0, run_dir=tmp_path,
        validate=validate, select="pgd", export_best=lambda path: None, reporter=reporter)
    assert len(notes) == 1 and notes[0].startswith("expected time ")
    # 120 steps of 0.25 s; 16 images per 0.25 s = 64 images/s; 2 passes per image: 1/128 s per pass.
    assert math.isclose(reporter.seconds["training"], 120 * 0.25)
    per_pass = 1 / 128
    # validation, every epoch (none done yet): 96 images x (a forward + PGD-10's 11 passes)
    assert math.isclose(reporter.seconds["validation"], 3 * 96 * (per_pass / 3 + 11 * per_pass))
    # evaluation: 192 images x (clean forward + PGD-20's 21 passes)
    assert math.isclose(reporter.seconds["evaluation"], 192 * (per_pass / 3 + 21 * per_pass))
    first = WARMUP_STEPS + 1
    assert f"64 img/s over steps {first}-{first + MIN_STEPS - 1}" in notes[0]


def test_a_resumed_run_is_estimated_from_its_own_steps(tmp_path):
    clock, notes = FakeClock(), []
    recipe = validate_recipe({"data": {"batch_size": 16}, "model": {"arch": "resnet_small"},
                              "train": {"epochs": 4, "select": "last"}, "eval": {"attacks": ["clean"]}})
    reporter = ExpectedTime(Reporter(), notes.append, RunShape(recipe, 640, 0, 0, 1.0), now=clock,
                            synchronize=lambda: None)
    reporter.fit_started(epochs=4, batches_per_epoch=40, start_epoch=3)  # two epochs left: 80 steps
    for step in range(1, 41):
        clock.now += 0.5
        reporter.step_done(3, step, {}, 16)
    assert notes[0].startswith("expected time to finish ")
    assert math.isclose(reporter.seconds["training"], 80 * 0.5) and reporter.seconds["validation"] == 0


def test_a_tiny_run_prints_its_expected_time_before_it_ends(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    recipe = validate_recipe({"name": "tiny", "data": {"dataset": "embedded", "subset": 600, "val_size": 20,
                                                       "batch_size": 32},
                              "model": {"arch": "resnet_small", "width": 4},
                              "train": {"epochs": 2, "max_batches_per_epoch": 8, "select": "clean"},
                              "eval": {"n": 20, "attacks": ["clean"]}})
    outcome = run_recipe(recipe, reporter_factory=NoteReporter)
    printed = capsys.readouterr().out
    match = re.search(r"  tiny: expected time (\d+):(\d\d):(\d\d): training \d+:\d\d:\d\d \(([\d,]+) img/s", printed)
    assert match, printed
    expected = int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3])
    measured = outcome.summary["wall_seconds"]
    assert 0.2 * measured - 2 <= expected <= 5 * measured + 2  # plausible on a loaded machine, not exact
    assert float(match[4].replace(",", "")) > 0


def test_a_loop_reporting_only_at_epoch_ends_is_timed_without_its_validation():
    """The engine may report only every train.log_every steps; with short epochs that is each epoch's end."""
    clock, notes = FakeClock(), []
    recipe = validate_recipe({"data": {"batch_size": 16}, "model": {"arch": "resnet_small"},
                              "train": {"epochs": 10, "select": "last"}, "eval": {"attacks": ["clean"]}})
    reporter = ExpectedTime(Reporter(), notes.append, RunShape(recipe, 80, 0, 0, 1.0), now=clock,
                            synchronize=lambda: None)
    reporter.fit_started(epochs=10, batches_per_epoch=5, start_epoch=1)
    for epoch in (1, 2):
        clock.now += 5 * 0.2  # five steps of 0.2 s, reported once
        reporter.step_done(epoch, 5, {}, 80)
        clock.now += 30.0  # validation
        reporter.epoch_done(epoch, {})
    assert len(notes) == 1 and "over steps 6-10" in notes[0]
    # the 10 steps so far took 2 s, the 40 left take 8; epoch 1's validation took 30 s (select: last -> no
    # estimate for the others)
    assert math.isclose(reporter.seconds["training"], 50 * 0.2)
    assert math.isclose(reporter.seconds["validation"], 30.0)


def test_eta_is_the_mean_cell_time_per_remaining_round():
    assert remaining_seconds([], remaining=4, jobs=2) is None
    assert remaining_seconds([100.0, 140.0], remaining=3, jobs=2) == pytest.approx(120.0 * 2)
    assert remaining_seconds([100.0], remaining=3, jobs=1) == pytest.approx(300.0)
