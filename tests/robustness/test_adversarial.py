"""Training-time adversarial examples: TRADES in eval mode, bounds, default steps, ascent, one TRADES step."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.sections import AdversarialSpec, TrainSpec
from kdlab.methods import supervised
from kdlab.methods.supervised import SupervisedTraining
from kdlab.robustness.training_attacks import fgsm_rs_examples, pgd_examples, trades_examples
from kdlab.train.engine import DataSource, fit

EPS = 8 / 255


def bn_model() -> nn.Module:
    """A small conv net with BatchNorm whose running statistics are far from their initial values."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 7 * 7, 10))
    with torch.no_grad():  # move the running statistics away from (0, 1) so eval and train outputs differ
        for _ in range(5):
            model(torch.rand(16, 3, 16, 16) * 0.3 + 0.6)
    return model


def edge_images(n: int = 8, size: int = 16) -> torch.Tensor:
    """Images whose pixels sit at or next to 0 and 1, so an attack that does not clamp leaves [0, 1]."""
    generator = torch.Generator().manual_seed(4)
    levels = torch.tensor([0.0, 0.002, 0.998, 1.0])
    return levels[torch.randint(0, 4, (n, 3, size, size), generator=generator)]


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.named_buffers()}


def test_trades_examples_leave_batchnorm_buffers_unchanged():
    model = bn_model().train()
    before = buffers(model)
    assert {n.rsplit(".", 1)[1] for n in before} == {"running_mean", "running_var", "num_batches_tracked"}
    trades_examples(model, edge_images(), eps=EPS, alpha=2 / 255, steps=3,
                    generator=torch.Generator().manual_seed(0))
    for name, value in buffers(model).items():
        assert torch.equal(value, before[name]), name


def test_trades_examples_do_not_depend_on_the_callers_mode():
    # The reference builds x_adv with the model in eval mode whatever mode training left it in.
    model = bn_model()
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    made = {}
    for mode in (True, False):
        model.train(mode)
        made[mode] = trades_examples(model, images, eps=EPS, alpha=2 / 255, steps=3,
                                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(made[True], made[False])


@pytest.mark.parametrize("mode", [True, False], ids=["train", "eval"])
def test_trades_examples_restore_every_modules_training_flag(mode):
    model = bn_model().train(mode)
    model[4].train(not mode)  # a mixed tree: one BatchNorm in the other mode
    flags = [module.training for module in model.modules()]
    trades_examples(model, edge_images(), eps=EPS, alpha=2 / 255, steps=2,
                    generator=torch.Generator().manual_seed(0))
    assert [module.training for module in model.modules()] == flags


def test_trades_takes_sign_steps_of_alpha_from_a_tiny_gaussian_start():
    # eps = 1 never projects; from 0.5 the pixel range never clamps: one step moves each pixel by
    # alpha (sign of the gradient) plus the start noise of std 0.001 (|noise| < 0.006 here).
    model = bn_model()
    images = torch.full((4, 3, 16, 16), 0.5)
    adversarial = trades_examples(model, images, eps=1.0, alpha=0.05, steps=1,
                                  generator=torch.Generator().manual_seed(0))
    moved = (adversarial - images).abs()
    assert moved.min() > 0.05 - 0.006 and moved.max() < 0.05 + 0.006


def attacks(model, images, labels, spec_method):
    spec = AdversarialSpec(method=spec_method)
    generator = torch.Generator().manual_seed(1)
    if spec_method == "pgd":
        return pgd_examples(model, images, labels, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                            generator=generator)
    if spec_method == "fgsm-rs":
        return fgsm_rs_examples(model, images, labels, eps=spec.eps, alpha=spec.step_size,
                                generator=generator)
    return trades_examples(model, images, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                           generator=generator)


@pytest.mark.parametrize("method", ["pgd", "fgsm-rs", "trades"])
def test_examples_stay_in_the_eps_ball_and_in_the_pixel_range(method):
    model = bn_model().train()
    images = edge_images()
    labels = torch.arange(8) % 10
    adversarial = attacks(model, images, labels, method)
    distance = (adversarial - images).abs()
    assert distance.max() <= EPS + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    # They did move: pixels at 0.002/0.998 can go 8/255 inwards (a no-op attack would pass the bounds).
    assert distance.max() > 0.9 * EPS


def test_default_step_sizes_follow_the_reference_scripts():
    # Rice et al. PGD-AT: 10 steps of 2/255; TRADES: 10 steps of 0.007 ~ 2/255, beta 6; Wong et al.
    # fast AT: alpha 10/255 for eps 8/255.
    for method, alpha in (("pgd", 2 / 255), ("trades", 2 / 255), ("fgsm-rs", 10 / 255)):
        spec = AdversarialSpec(method=method)
        assert spec.eps == pytest.approx(8 / 255)
        assert spec.step_size == pytest.approx(alpha)
        assert spec.steps == 10
    assert AdversarialSpec(method="trades").trades_beta == 6.0
    assert AdversarialSpec(method="pgd", alpha=1 / 255).step_size == pytest.approx(1 / 255)


def trained_mlp():
    """An MLP fitted to a learnable rule (the brightest channel), clean loss well below log 3."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(256, 3, 6, 6, generator=generator)
    labels = images.reshape(256, 3, -1).mean(dim=2).argmax(dim=1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model, images[:64], labels[:64]


@pytest.mark.parametrize("method", ["pgd", "fgsm-rs"])
def test_pgd_and_fgsm_rs_increase_the_cross_entropy(method):
    model, images, labels = trained_mlp()
    with torch.no_grad():
        clean = F.cross_entropy(model(images), labels).item()
    adversarial = attacks(model, images, labels, method)
    with torch.no_grad():
        attacked = F.cross_entropy(model(adversarial), labels).item()
    assert clean < 0.5
    assert attacked > clean + 0.2


def test_one_trades_step_through_the_engine_matches_a_hand_assembled_loss(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(16) % 10
    before = copy.deepcopy(model)
    seen = []

    def recording(*args, **kwargs):
        seen.append(trades_examples(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(supervised, "trades_examples", recording)
    method = SupervisedTraining(model, AdversarialSpec(method="trades", steps=3))
    data = DataSource(batches=lambda generator: iter([(images, labels)]), batches_per_epoch=1,
                      batch_size=lambda batch: len(batch[1]))
    result = fit(method, data, TrainSpec(epochs=1, lr=0.1), seed=0, run_dir=tmp_path, validate=None,
                 export_best=lambda path: None)
    (adversarial,) = seen
    assert not torch.equal(adversarial, images)

    # CE(f(x), y) + 6 * KL(f(x) || f(x')) summed over classes, averaged over the batch, written out by hand
    # with the weights before the step, in train mode (batch statistics), as trades.py computes it.
    before.train()
    with torch.no_grad():
        log_clean = torch.log_softmax(before(images), dim=1)
        log_adversarial = torch.log_softmax(before(adversarial), dim=1)
    ce = -log_clean[torch.arange(16), labels].mean()
    kl = (log_clean.exp() * (log_clean - log_adversarial)).sum() / 16
    row = result.history[0]
    assert row["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert row["trades_kl"] == pytest.approx(6.0 * kl.item(), rel=1e-4)
    assert row["loss"] == pytest.approx((ce + 6.0 * kl).item(), rel=1e-5)
    assert kl.item() > 1e-4 and torch.isfinite(torch.tensor(row["loss"]))
    changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters())]
    assert all(changed)
    assert model.training

    # BatchNorm running mean: exactly three train-mode updates (momentum 0.1), in trades.py's order
    # clean, adversarial, clean; none from the inner maximisation (it runs in eval mode).
    with torch.no_grad():
        clean_mean = before[0](images).mean(dim=(0, 2, 3))
        adversarial_mean = before[0](adversarial).mean(dim=(0, 2, 3))
    expected = torch.zeros(8)  # the initial running mean
    for batch_mean in (clean_mean, adversarial_mean, clean_mean):
        expected = 0.9 * expected + 0.1 * batch_mean
    assert int(model[1].num_batches_tracked) == 3
    assert torch.allclose(model[1].running_mean, expected, atol=1e-6)
