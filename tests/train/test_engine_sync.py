"""The step loop never reads a tensor back to the host per step; a NaN is still caught; fp32 numbers are unchanged."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.methods.mixacm import MixACMSettings
from kdlab.config.sections import AdversarialSpec, TrainSpec
from kdlab.errors import KdlabError
from kdlab.methods.mixacm import MixACM
from kdlab.methods.supervised import SupervisedTraining
from kdlab.models.files import safe_load
from kdlab.runtime.sample_random import SampleGenerator, key_of
from kdlab.train.engine import StepResult, fit
from tests.helpers.tiny_training import STEPS, source, tiny_net

EPOCHS = 2


class HostReads:
    """Counts every way a tensor's value reaches Python: item, float/int/bool/index, tolist, numpy."""

    NAMES = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def read(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)

        return read


def train(method, tmp_path, **train_options):
    spec = TrainSpec(epochs=EPOCHS, lr=0.05, **train_options)
    return fit(method, source(), spec, seed=1, run_dir=tmp_path, validate=None, select="",
               export_best=lambda path: None)


@pytest.mark.parametrize("kind", ["fgsm-rs", "mixacm"])
def test_the_step_loop_reads_no_tensor_back_to_the_host_per_step(tmp_path, monkeypatch, kind):
    """With log_every beyond the epoch's 10 steps, an epoch reads its totals once (at its end), whatever the
    number of steps: the old loop read every loss term, the accuracy count and the NaN check every step
    (at least 4 reads a step here, 80 in this run)."""
    torch.manual_seed(0)
    if kind == "fgsm-rs":  # adversarial training: random starts, an inner gradient, augmentation
        method = SupervisedTraining(tiny_net(), AdversarialSpec(method="fgsm-rs", eps=4 / 255))
    else:  # a distillation step: frozen teacher, feature taps, connectors, KD (no mixup: its lam is host RNG)
        settings = MixACMSettings.model_validate({"name": "mixacm", "mixup": {"enabled": False},
                                                  "kd": {"weight": 1.0}, "acm": {"weight": 1.0, "blocks": [2, 3]}})
        method = MixACM(tiny_net(4), tiny_net(8), settings, image_shape=(3, 8, 8))
    reads = HostReads(monkeypatch)
    result = train(method, tmp_path, log_every=1000)
    assert len(result.history) == EPOCHS and math.isfinite(result.history[-1]["loss"])
    assert reads.count <= 2 * EPOCHS, f"{reads.count} host reads in {EPOCHS * STEPS} steps"


def test_reads_follow_log_every_not_the_number_of_steps(tmp_path, monkeypatch):
    reads = HostReads(monkeypatch)
    train(SupervisedTraining(tiny_net(), AdversarialSpec()), tmp_path, log_every=5)
    assert reads.count <= 2 * EPOCHS * 2  # a read after step 5 and one at the end of each epoch


class NaNFromStep(nn.Module):
    """A linear model whose loss becomes NaN from global step ``bad`` on."""

    def __init__(self, bad: int):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 3)
        self.calls, self.bad = 0, bad

    def forward(self, batch, generator):
        self.calls += 1
        images, labels = batch
        ce = F.cross_entropy(self.linear(images.flatten(1)), labels)
        if self.calls >= self.bad:
            ce = ce * float("nan")
        return StepResult(loss=ce, terms={"ce": ce}, correct=torch.zeros((), dtype=torch.long), count=len(labels))


@pytest.mark.parametrize("bad_step, caught_at", [(2, 3), (10, 10)])
def test_a_nan_is_caught_within_log_every_steps_and_last_pt_stays_the_previous_epochs(tmp_path, bad_step,
                                                                                     caught_at):
    """log_every 3, 10 steps an epoch: a NaN at epoch 2 step 2 is seen at the read after step 3; one at the last step (10) at
    the end-of-epoch read, which comes before validation and saving."""
    method = NaNFromStep(bad=STEPS + bad_step)
    validated = []
    spec = TrainSpec(epochs=3, lr=0.05, log_every=3)
    with pytest.raises(KdlabError) as error:
        fit(method, source(), spec, seed=1, run_dir=tmp_path, validate=lambda: validated.append(1) or {"c": 1.0},
            select="c", export_best=lambda path: None)
    message = str(error.value)
    assert f"loss became nan at epoch 2, step {bad_step} (ce=nan, seen at the check after step {caught_at}" in message
    assert "last good checkpoint is kept" in message and "\n" not in message
    assert method.calls == STEPS + caught_at  # stopped at that check, not at the end of the epoch
    assert validated == [1]  # epoch 1 only: nothing of the NaN epoch was validated or saved
    state = safe_load(tmp_path / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(value).all() for value in state["method"].values())
    assert len((tmp_path / "metrics.csv").read_text().strip().splitlines()) == 2  # header + epoch 1


def cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))


@pytest.mark.parametrize("rng", ["sample", "batch"])
def test_fp32_training_equals_a_plain_pytorch_loop_exactly(tmp_path, rng):
    """An independent reference: SGD (momentum 0.9, weight decay 5e-4 on every parameter), a per-step cosine
    schedule, CE on the same batches (each epoch's generator seeded by seed * 1_000_003 + epoch, as the engine
    documents; with train.rng: sample, the default, it also carries the epoch's key ("train", seed, epoch) for the
    per-sample crops and flips, as kdlab.runtime.sample_random documents). Same ops in the same order: the
    weights, the epoch-mean losses and the accuracy match to the bit."""
    torch.manual_seed(0)
    model = tiny_net()
    reference = tiny_net()
    reference.load_state_dict(model.state_dict())
    result = train(SupervisedTraining(model, AdversarialSpec()), tmp_path, log_every=4, rng=rng)

    def generator(epoch):
        if rng == "sample":
            return SampleGenerator(key_of("train", 1, epoch), 1 * 1_000_003 + epoch)
        return torch.Generator().manual_seed(1 * 1_000_003 + epoch)

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine(step, EPOCHS * STEPS))
    for epoch in range(1, EPOCHS + 1):
        losses, correct = [], 0
        for images, labels in source().batches(generator(epoch)):
            logits = reference(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == labels).sum())
        row = result.history[epoch - 1]
        assert row["ce"] == row["loss"] == sum(losses) / STEPS
        assert row["train_acc"] == 100.0 * correct / (STEPS * 8)
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name
