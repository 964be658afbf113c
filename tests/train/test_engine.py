"""The shared training loop: exact resume, NaN guard, checkpoints, schedules."""

import math

import pytest
import torch
from torch import nn

from kdlab.config.sections import AdversarialSpec, TrainSpec
from kdlab.errors import KdlabError
from kdlab.methods.supervised import SupervisedTraining
from kdlab.models.files import safe_load
from kdlab.train.engine import DataSource, StepResult, fit, lr_factor
from tests.helpers.resume import StopAfter

IMAGES = torch.rand(64, 3, 8, 8)
LABELS = (IMAGES.mean(dim=(1, 2, 3)) > 0.5).long()


def tiny_method(adversarial: str = "none") -> SupervisedTraining:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    return SupervisedTraining(model, AdversarialSpec(method=adversarial, eps=4 / 255, steps=2))


def source() -> DataSource:
    def batches(generator):
        order = torch.randperm(64, generator=generator)
        for start in range(0, 64, 16):
            index = order[start:start + 16]
            yield IMAGES[index], LABELS[index]

    return DataSource(batches=batches, batches_per_epoch=4, batch_size=lambda b: len(b[1]))


def run(tmp_path, method, epochs=4, resume=False, reporter=None, validate=None, select="clean"):
    spec = TrainSpec(epochs=epochs, lr=0.05, warmup_epochs=1)
    return fit(method, source(), spec, seed=3, run_dir=tmp_path, validate=validate, select=select,
               export_best=lambda path: torch.save({"ok": 1}, path), resume=resume, reporter=reporter)


def comparable(history):
    return [{k: v for k, v in row.items() if k not in {"epoch_seconds", "images_per_s"}} for row in history]


@pytest.mark.parametrize("adversarial", ["none", "fgsm-rs"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, adversarial):
    straight = tiny_method(adversarial)
    full = run(tmp_path / "straight", straight)

    interrupted = tiny_method(adversarial)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", interrupted, reporter=StopAfter(2))
    assert safe_load(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    fresh = tiny_method(adversarial)  # a new process would rebuild the method from scratch
    resumed = run(tmp_path / "resumed", fresh, resume=True)

    for (name, a), (_, b) in zip(straight.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert comparable(full.history) == comparable(resumed.history)


def test_training_reduces_loss_and_writes_metrics(tmp_path):
    result = run(tmp_path, tiny_method(), epochs=6)
    assert result.history[-1]["ce"] < result.history[0]["ce"]
    lines = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 7 and lines[0].startswith("epoch,lr,ce")


def test_best_checkpoint_follows_the_selection_metric_not_clean_accuracy(tmp_path):
    # Robust overfitting: clean accuracy keeps rising while PGD accuracy peaks at epoch 2.
    scores = iter([{"clean": 50.0, "pgd": 20.0}, {"clean": 55.0, "pgd": 25.0},
                   {"clean": 60.0, "pgd": 15.0}, {"clean": 65.0, "pgd": 5.0}])
    exported = []
    result = fit(tiny_method(), source(), TrainSpec(epochs=4, lr=0.05), seed=3, run_dir=tmp_path,
                 validate=lambda: next(scores), select="pgd", export_best=lambda path: exported.append(path))
    assert result.best_epoch == 2 and result.best_score == 25.0
    assert len(exported) == 2  # best.pt written at epochs 1 and 2, never after the PGD peak
    assert [row["val_pgd"] for row in result.history] == [20.0, 25.0, 15.0, 5.0]
    assert [row["val_clean"] for row in result.history] == [50.0, 55.0, 60.0, 65.0]
    clean = iter([{"clean": 50.0}, {"clean": 70.0}, {"clean": 60.0}, {"clean": 65.0}])
    assert run(tmp_path / "clean", tiny_method(), validate=lambda: next(clean)).best_epoch == 2


class ExplodesAtEpoch(nn.Module):
    def __init__(self, epoch):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls, self.epoch = 0, epoch

    def forward(self, batch, generator):
        self.calls += 1
        value = self.weight.sum() * (float("nan") if self.calls > 4 * (self.epoch - 1) else 1.0)
        return StepResult(loss=value, terms={"x": value})


def test_nan_stops_with_a_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(KdlabError, match="loss became nan at epoch 2"):
        run(tmp_path, ExplodesAtEpoch(2))
    assert safe_load(tmp_path / "last.pt")["epoch"] == 1


def test_schedules():
    spec = TrainSpec(epochs=10, schedule="cosine", warmup_epochs=1)
    factor = lr_factor(spec, steps_per_epoch=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    step = lr_factor(TrainSpec(epochs=10, schedule="multistep", milestones=[5, 8], gamma=0.1), 10)
    assert [step(40), step(50), step(85)] == pytest.approx([1.0, 0.1, 0.01])


def _reference_cyclic(steps: int, lr: float, momentum: float, base_momentum: float):
    """What Wong et al.'s train_fgsm.py gets from torch's own CyclicLR: (lr, momentum) used at every step."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.0, max_lr=lr, step_size_up=steps / 2,
                                                  step_size_down=steps / 2, base_momentum=base_momentum,
                                                  max_momentum=momentum)
    used = []
    for _ in range(steps):
        used.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        scheduler.step()
    return used


class RecordsOptimizer(nn.Module):
    """A method that records the lr and momentum the optimizer holds when each step's forward runs."""

    def __init__(self, optimizers):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.optimizers, self.seen = optimizers, []

    def forward(self, batch, generator):
        group = self.optimizers[-1].param_groups[0]
        self.seen.append((group["lr"], group["momentum"]))
        value = (self.weight * batch[0].mean()).sum()
        return StepResult(loss=value, terms={"x": value})


@pytest.mark.parametrize("epochs", [3, 5])  # 12 and 20 steps: CyclicLR's peak at a step, and between two
def test_cyclic_schedule_equals_torch_cyclic_lr_at_every_step(tmp_path, monkeypatch, epochs):
    from kdlab.train import engine

    optimizers = []
    build = engine.build_optimizer
    monkeypatch.setattr(engine, "build_optimizer", lambda *a: optimizers.append(build(*a)) or optimizers[-1])
    method = RecordsOptimizer(optimizers)
    spec = TrainSpec(epochs=epochs, lr=0.2, momentum=0.9, schedule="cyclic")
    assert spec.cyclic_base_momentum == 0.8  # CyclicLR's default base_momentum, which train_fgsm.py keeps
    fit(method, source(), spec, seed=0, run_dir=tmp_path, validate=None, export_best=lambda path: None)
    expected = _reference_cyclic(4 * epochs, lr=0.2, momentum=0.9, base_momentum=0.8)
    assert len(method.seen) == len(expected) == 4 * epochs
    for step, ((lr, momentum), (want_lr, want_momentum)) in enumerate(zip(method.seen, expected)):
        assert lr == pytest.approx(want_lr, rel=1e-12, abs=1e-15), step
        assert momentum == pytest.approx(want_momentum, rel=1e-12), step
    # the triangle by hand: 0 at the first step, the peak 0.2 at step total/2 (momentum 0.8 there)
    assert method.seen[0] == (0.0, 0.9)
    if epochs == 3:
        assert method.seen[6] == pytest.approx((0.2, 0.8)) and method.seen[3] == pytest.approx((0.1, 0.85))


def test_cyclic_resume_continues_the_cycle(tmp_path):
    spec = TrainSpec(epochs=4, lr=0.05, schedule="cyclic")

    def go(path, method, resume=False, reporter=None):
        return fit(method, source(), spec, seed=3, run_dir=path, validate=None, resume=resume, reporter=reporter,
                   export_best=lambda p: torch.save({"ok": 1}, p))

    straight = tiny_method("fgsm-rs")
    go(tmp_path / "straight", straight)
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path / "resumed", tiny_method("fgsm-rs"), reporter=StopAfter(2))
    fresh = tiny_method("fgsm-rs")
    go(tmp_path / "resumed", fresh, resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name


def test_cyclic_options_are_refused_where_they_would_be_ignored():
    with pytest.raises(ValueError, match="cyclic_base_momentum applies only to schedule: cyclic"):
        TrainSpec(schedule="cosine", cyclic_base_momentum=0.8)
    with pytest.raises(ValueError, match="remove train.warmup_epochs"):
        TrainSpec(schedule="cyclic", warmup_epochs=1)
    assert TrainSpec(schedule="cyclic", cyclic_base_momentum=0.9).cyclic_base_momentum == 0.9
    assert TrainSpec().cyclic_base_momentum is None
