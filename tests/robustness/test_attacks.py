"""Attack wiring: eps parsing, the registry, the CW margin, the safe calling context, and AutoAttack vs the reference.

The model is a tiny conv net trained in ~1 s on synthetic, noisy 5-class data (3x8x8 images in [0, 1]) to
clearly-above-chance clean accuracy with partial robustness at eps = 8/255 (``tests/helpers/prototype_net.py``; the
``model`` and ``data`` fixtures of ``tests/robustness/conftest.py``), the same model as
``tests/robustness/test_evaluate.py`` attacks.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from kdlab.config.units import EpsError, format_eps, parse_eps, parse_eps_list
from kdlab.errors import KdlabError
from kdlab.losses.cw_margin import cw_margin, cw_margin_loss
from kdlab.robustness.accuracy import evaluate_robustness
from kdlab.robustness.attacks import ATTACKS, AttackSpec, attack_mode, build_attack, run_attack
from kdlab.robustness.seeded_pgd import start_noise
from tests.helpers.prototype_net import EPS, NUM_CLASSES, TinyNet, copy_module, eval_data, trained_model

# ---------------------------------------------------------------------------------------------------------------
# eps parsing


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), (" 8 / 255 ", 8 / 255), ("0.031", 0.031), ("0", 0.0),
                                         ("1e-2", 0.01), ("1", 1.0), (0.5, 0.5), ("16/255", 16 / 255)])
def test_parse_eps_accepts_fractions_and_decimals(text, value):
    assert parse_eps(text) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("text", ["abc", "", "8/0", "-1/255", "8", "nan", "inf", "8//255", "eight/255", True])
def test_parse_eps_rejects_junk_with_a_friendly_error(text):
    with pytest.raises(EpsError) as err:
        parse_eps(text)
    assert isinstance(err.value, KdlabError) and isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


def test_parse_eps_list_and_format():
    assert parse_eps_list("0,2/255,4/255,8/255,16/255") == pytest.approx([0, 2 / 255, 4 / 255, 8 / 255, 16 / 255])
    with pytest.raises(KdlabError):
        parse_eps_list(" , ")
    assert [format_eps(e) for e in (0.0, 8 / 255, 0.5)] == ["0", "8/255", "127.5/255"]


# ---------------------------------------------------------------------------------------------------------------
# registry and specs


def test_registry_has_every_attack_with_documented_defaults():
    assert set(ATTACKS) == {"clean", "fgsm", "pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square",
                            "autoattack", "aa-fast"}
    pgd = AttackSpec("pgd").resolved()
    assert (pgd.eps, pgd.alpha, pgd.steps, pgd.restarts, pgd.seed) == pytest.approx((8 / 255, 2 / 255, 20, 1, 0))
    assert AttackSpec("cw").resolved().steps == 30
    assert AttackSpec("fgsm").resolved().alpha == pytest.approx(8 / 255)
    assert AttackSpec("square").resolved().steps == 5000
    assert AttackSpec("apgd-ce").resolved().steps == 100
    assert AttackSpec("clean").resolved().eps == 0.0
    assert AttackSpec("pgd", eps=16 / 255).resolved().alpha == pytest.approx(4 / 255)
    with pytest.raises(KdlabError, match="unknown attack"):
        AttackSpec("pgd-xl").resolved()
    with pytest.raises(KdlabError):
        AttackSpec("pgd", steps=0).resolved()
    with pytest.raises(KdlabError):
        AttackSpec("pgd", eps=8.0).resolved()


def test_targeted_attacks_need_enough_classes():
    three_class = TinyNet(num_classes=3)
    with pytest.raises(KdlabError, match="at least 4 classes"):
        build_attack(three_class, AttackSpec("apgd-t"), num_classes=3)


def test_aa_fast_equals_torchattacks_autoattack_run_directly(model):
    """``aa-fast`` is torchattacks' own AutoAttack: the same robust points as calling it directly."""
    images, labels = eval_data(40)
    ours = evaluate_robustness(model, images, labels, [AttackSpec("aa-fast", eps=EPS, seed=0)])[0]
    net = copy_module(model)  # torchattacks leaves .grad on the parameters it attacks through
    reference = torchattacks.AutoAttack(net, norm="Linf", eps=EPS, version="standard", n_classes=NUM_CLASSES,
                                        seed=0)(images, labels)
    with torch.no_grad():
        expected = (model(reference).argmax(1) == labels) & (model(images).argmax(1) == labels)
    assert torch.equal(ours.robust, expected)
    assert expected.sum() < (model(images).argmax(1) == labels).sum()  # not vacuous: it breaks some points


def test_autoattack_refuses_settings_that_would_leave_the_standard_protocol():
    for changed in ({"steps": 20}, {"restarts": 5}):
        with pytest.raises(KdlabError, match="autoattack is the standard protocol"):
            AttackSpec("autoattack", **changed).resolved()
    assert AttackSpec("autoattack", steps=100, restarts=1).resolved().steps == 100


def test_autoattack_settings_are_the_reference_standard_settings(model):
    """Every setting of the reference ``_set_version('standard')``, read from pyautoattack itself."""
    from pyautoattack import AutoAttack as ReferenceAutoAttack

    for num_classes in (10, 100, NUM_CLASSES):
        ref = ReferenceAutoAttack(model, eps=EPS, version="standard", seed=0, device="cpu")
        ours = build_attack(model, AttackSpec("autoattack"), num_classes)
        names = [name for name, _ in ours.components]
        assert names == ref.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
        apgd, apgd_t, fab_t, square = (component.attack for _, component in ours.components)
        targets = min(ref.apgd_targeted.n_target_classes, num_classes - 1)
        assert (apgd.steps, apgd.n_restarts, apgd.thr_decr, apgd.loss, apgd.eot_iter) == (
            ref.apgd.n_iter, ref.apgd.n_restarts, ref.apgd.thr_decr, "ce", ref.apgd.eot_iter)
        assert (apgd_t.steps, apgd_t.n_restarts, apgd_t.thr_decr, apgd_t.n_target_classes) == (
            ref.apgd_targeted.n_iter, ref.apgd_targeted.n_restarts, ref.apgd_targeted.thr_decr, targets)
        assert fab_t.multi_targeted and (fab_t.steps, fab_t.n_restarts, fab_t.n_target_classes) == (
            ref.fab.n_iter, ref.fab.n_restarts, min(ref.fab.n_target_classes, num_classes - 1))
        assert (fab_t.alpha_max, fab_t.eta, fab_t.beta) == (ref.fab.alpha_max, ref.fab.eta, ref.fab.beta)
        assert (square.n_queries, square.p_init, square.n_restarts, square.rescale_schedule, square.loss) == (
            ref.square.n_queries, ref.square.p_init, ref.square.n_restarts, ref.square.rescale_schedule, "margin")
        for attack in (apgd, apgd_t, fab_t, square):
            assert attack.eps == EPS and attack.norm == "Linf" and attack.seed == 0


# ---------------------------------------------------------------------------------------------------------------
# CW margin


def test_cw_margin_loss_equals_hand_computed_margin():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.1, 3.0, -1.0], [1.0, 1.5, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 2])
    # margins max_{j != y} z_j - z_y: 1 - 2 = -1;  3 - 0.1 = 2.9;  1.5 - 0 = 1.5
    assert cw_margin(logits, labels).tolist() == pytest.approx([-1.0, 2.9, 1.5])
    assert cw_margin_loss(logits, labels, reduction="none").tolist() == pytest.approx([-1.0, 0.0, 0.0])
    assert cw_margin_loss(logits, labels, kappa=2.0, reduction="none").tolist() == pytest.approx([-1.0, 2.0, 1.5])
    assert cw_margin_loss(logits, labels, kappa=2.0).item() == pytest.approx((-1.0 + 2.0 + 1.5) / 3)
    assert cw_margin_loss(logits, labels, kappa=2.0, reduction="sum").item() == pytest.approx(2.5)
    # gradient of the first (unclamped) sample: +1 on the runner-up class, -1 on the true class
    cw_margin_loss(logits, labels, reduction="sum").backward()
    assert logits.grad[0].tolist() == pytest.approx([-1.0, 1.0, 0.0])
    assert logits.grad[1:].abs().sum() == 0  # clamped at kappa = 0: already misclassified
    with pytest.raises(ValueError):
        cw_margin_loss(logits, labels, reduction="avg")


# ---------------------------------------------------------------------------------------------------------------
# the safe calling context


class ModeSpy(nn.Module):
    """Dropout + BatchNorm model that records the mode it is called in and returns (logits, features)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.seen_training: list[bool] = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return self.base(self.bn(x) * 0 + x + 0 * self.drop(x)), {"features": x}


def test_attack_runs_in_eval_mode_and_restores_modes_and_grads(model, data):
    images, labels = data
    spy = ModeSpy(model)
    spy.train()
    spy.bn.eval()  # a mixed state must come back exactly
    flags = {name: m.training for name, m in spy.named_modules()}
    result = evaluate_robustness(spy, images[:20], labels[:20], [AttackSpec("pgd", steps=3)])[0]
    assert spy.seen_training and not any(spy.seen_training)
    assert {name: m.training for name, m in spy.named_modules()} == flags
    assert all(p.requires_grad for p in spy.parameters())
    assert all(p.grad is None for p in spy.parameters())
    assert result.accuracy < result.clean_accuracy  # it attacked: some clean-correct point was broken


def test_attacks_still_attack_inside_no_grad_and_inference_mode(model, data):
    images, labels = data
    spec = AttackSpec("pgd", steps=5)
    baseline = evaluate_robustness(model, images, labels, [spec])[0]
    with torch.no_grad():
        under_no_grad = evaluate_robustness(model, images, labels, [spec])[0]
    with torch.inference_mode():
        under_inference = evaluate_robustness(model, images, labels, [spec])[0]
    assert baseline.accuracy < baseline.clean_accuracy - 5
    assert torch.equal(under_no_grad.robust, baseline.robust)
    assert torch.equal(under_inference.robust, baseline.robust)


def test_same_seed_same_images_and_caller_rng_untouched(model, data):
    images, labels = data
    with attack_mode(model) as net:
        attack = build_attack(net, AttackSpec("apgd-ce", steps=10, seed=3), NUM_CLASSES)
        torch.manual_seed(123)
        state = torch.get_rng_state()
        first = run_attack(attack, images[:32], labels[:32], seed=3)
        assert torch.equal(torch.get_rng_state(), state)
        second = run_attack(attack, images[:32], labels[:32], seed=3)
    assert torch.equal(first, second)
    assert not first.requires_grad and first.dtype == torch.float32


@pytest.mark.parametrize("spec", [AttackSpec("fgsm"), AttackSpec("pgd", steps=5), AttackSpec("cw", steps=5),
                                  AttackSpec("pgd", steps=3, restarts=3), AttackSpec("apgd-ce", steps=10),
                                  AttackSpec("apgd-dlr", steps=10), AttackSpec("square", steps=50)],
                         ids=lambda s: f"{s.name}-{s.restarts}")
def test_adversarial_images_stay_within_eps_and_in_unit_range(model, data, spec):
    images, labels = data
    result = evaluate_robustness(model, images, labels, [spec], keep_adv=True)[0]
    adv = result.adv_images
    assert adv.shape == images.shape
    assert float((adv - images).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert result.max_perturbation <= EPS + 1e-6
    assert result.accuracy < result.clean_accuracy  # it attacked: some clean-correct point was broken
    # the robust mask is what the model predicts on the returned images
    assert torch.equal(result.robust, (model(adv).argmax(1) == labels) & (model(images).argmax(1) == labels))


def _reference_pgd(model, images, labels, start, alpha, steps):
    """Madry et al.'s L-inf PGD on cross-entropy from a given start, written out independently of kdlab."""
    adv = start.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), images - EPS), images + EPS).clamp(0, 1)
    return adv.detach()


def test_pgd_restarts_keep_the_worst_case_of_independent_runs(model, data):
    """PGD with 3 restarts = per point, the worst case of 3 independent PGD runs from its 3 random starts."""
    images, labels = data
    steps, alpha = 3, EPS / 4
    one, three = evaluate_robustness(model, images, labels, [AttackSpec("pgd", steps=steps),
                                                             AttackSpec("pgd", steps=steps, restarts=3)])
    with torch.no_grad():
        clean = model(images).argmax(1) == labels
    survives = []
    for restart in range(3):
        noise = start_noise(0, restart, torch.arange(images.shape[0]), images.shape[1:], "cpu")
        start = (images + EPS * noise).clamp(0, 1)
        adv = _reference_pgd(model, images, labels, start, alpha, steps)
        with torch.no_grad():
            survives.append(model(adv).argmax(1) == labels)
    assert torch.equal(one.robust, clean & survives[0])
    assert torch.equal(three.robust, clean & survives[0] & survives[1] & survives[2])
    assert three.robust_count < one.robust_count  # the later restarts do break extra points here


# ---------------------------------------------------------------------------------------------------------------
# AutoAttack against the reference implementation


class Sharpened(nn.Module):
    """The trained net with logits x20: APGD-CE then leaves work for APGD-T, so more components matter."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        return 20.0 * self.base(x)


def test_autoattack_matches_reference_autoattack_standard(caplog):
    """kdlab's ``autoattack`` vs pyautoattack ``AutoAttack(version='standard')`` on the same model and images.

    5 classes, so both use 4 target classes (the reference's ``n_target_classes`` is set to C - 1, the value
    its own ``check_n_classes`` asks for). Both run the same attacks on the same points with the same seed, so
    the per-point results agree exactly -- a stronger check than the 0.5-point tolerance, asserted too.
    """
    from pyautoattack import AutoAttack as ReferenceAutoAttack

    images, labels = eval_data(200)
    net = Sharpened(trained_model()).eval()
    ours = evaluate_robustness(net, images, labels, [AttackSpec("autoattack", eps=EPS, seed=0)], batch_size=256)[0]

    caplog.set_level(logging.DEBUG, logger="auto-attack")
    ref = ReferenceAutoAttack(net, eps=EPS, version="standard", seed=0, device="cpu")
    ref.apgd_targeted.n_target_classes = NUM_CLASSES - 1
    ref.fab.n_target_classes = NUM_CLASSES - 1
    x_adv, _ = ref.run_standard_evaluation(images, labels, batch_size=256)
    with torch.no_grad():
        ref_robust = net(x_adv).argmax(1) == labels
    ref_accuracy = 100.0 * float(ref_robust.float().mean())
    ref_components = {m.group(1).lower(): float(m.group(2)) for m in
                      re.finditer(r"robust accuracy after (\S+): ([\d.]+)%", caplog.text)}

    print(f"kdlab autoattack {ours.accuracy:.2f}% {ours.components} ({ours.wall_s:.1f} s); "
          f"reference {ref_accuracy:.2f}% {ref_components}")
    assert abs(ours.accuracy - ref_accuracy) <= 0.5
    assert torch.equal(ours.robust, ref_robust)
    assert ref_components == pytest.approx({k: v for k, v in ours.components.items() if k != "clean"}, abs=0.01)
    # the comparison is not vacuous: some points are robust, and a component after APGD-CE breaks some points
    assert 10 < ours.accuracy < ours.components["apgd-ce"] < ours.clean_accuracy
