"""Methods that adversarially train the student: ard, rslad, iad, adaad and the pgd-at reference row.

Each loss is checked against numbers worked out by hand; each inner maximisation against the quantity the
method says it maximises, written out here in plain torch (it must stay in the eps-ball and [0, 1] and end
higher than it started); each step against its formula on the logits read with plain forward hooks; the
declared cost against the forward passes counted by hooks; the teacher against being trained; settings against
the methods that do not have them; the ``--methods`` preset against the cells it must plan.
"""

import copy
import math

import pytest
import torch
import yaml

from kdlab.ablation.grid import plan_ablation
from kdlab.config.recipe import validate_recipe
from kdlab.config.sections import TrainSpec
from kdlab.errors import KdlabError
from kdlab.losses import adaad_loss, ard_loss, iad_loss, rslad_loss, soft_kl, teacher_confidence
from kdlab.methods.registry import build_method
from kdlab.models.registry import build_classifier
from kdlab.train.engine import DataSource, fit
from tests.helpers.methods import batch, models, train_steps_leave_teacher_untouched

BASE = {"student": {"arch": "resnet_small", "width": 4}, "teacher": {"checkpoint": "unused.pt"}}
ADVERSARIAL = ["ard", "rslad", "iad", "adaad", "pgd-at"]
EPS = 8 / 255
LN3 = math.log(3.0)
# KL((3/4, 1/4) || (1/2, 1/2)), the divergence of the tiny examples below
K = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def settings(name, **method):
    return validate_recipe({**BASE, "method": {"name": name, **method}}).method


def log_softmax(z):
    return z - z.logsumexp(1, keepdim=True)


def kl_rows(target_logits, student_logits):
    """Per-sample KL(softmax(target) || softmax(student)), written out."""
    log_q, log_p = log_softmax(target_logits), log_softmax(student_logits)
    return (log_q.exp() * (log_q - log_p)).sum(1)


def cross_entropy_rows(logits, labels):
    return logits.logsumexp(1) - logits.gather(1, labels[:, None]).squeeze(1)


def record_outputs(model):
    """Every output of ``model``'s forward passes, in order (a plain forward hook)."""
    outputs = []
    handle = model.register_forward_hook(lambda module, args, out: outputs.append(out))
    return outputs, handle


# --------------------------------------------------------------------------- losses by hand
def test_soft_kl_by_hand_with_each_reduction_and_temperature():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[LN3, 0.0]])  # softmax = (3/4, 1/4)
    assert soft_kl(student, teacher, reduction="batchmean").item() == pytest.approx(K)
    assert soft_kl(student, teacher, reduction="mean").item() == pytest.approx(K / 2)  # / (batch x classes)
    # T = 2 on doubled logits gives back (3/4, 1/4) vs (1/2, 1/2)
    assert soft_kl(2 * student, 2 * teacher, 2.0).item() == pytest.approx(K)
    # T = 2 on the logits themselves: (sqrt 3, 1) / (1 + sqrt 3) against (1/2, 1/2)
    q = 3 ** 0.5 / (1 + 3 ** 0.5)
    expected = q * math.log(2 * q) + (1 - q) * math.log(2 * (1 - q))
    assert soft_kl(student, teacher, 2.0).item() == pytest.approx(expected)
    two = soft_kl(torch.zeros(2, 2), torch.tensor([[LN3, 0.0], [0.0, 0.0]]), reduction="none")
    assert two.tolist() == pytest.approx([K, 0.0])
    assert soft_kl(torch.zeros(2, 2), torch.tensor([[LN3, 0.0], [0.0, 0.0]]), reduction="sum").item() == (
        pytest.approx(K))


def test_ard_loss_by_hand():
    adversarial = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0]])  # at T = 2: (3/4, 1/4)
    clean = torch.tensor([[LN3, 0.0]])
    labels = torch.tensor([0])
    kl, ce = ard_loss(adversarial, clean, teacher, labels, alpha=0.25, temperature=2.0, reduction="mean")
    assert kl.item() == pytest.approx(0.25 * 4 * K / 2)  # alpha T^2 KL / (batch x classes)
    assert ce.item() == pytest.approx(0.75 * -math.log(0.75))
    kl, _ = ard_loss(adversarial, clean, teacher, labels, alpha=0.25, temperature=2.0, reduction="batchmean")
    assert kl.item() == pytest.approx(0.25 * 4 * K)


def test_rslad_loss_by_hand():
    teacher = torch.tensor([[LN3, 0.0]])
    robust, natural = rslad_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, LN3]]), teacher)
    assert robust.item() == pytest.approx(5 / 6 * K / 2)  # the default: 5/6, elementwise mean
    # clean (1/4, 3/4) against the teacher's (3/4, 1/4): 3/4 ln 3 + 1/4 ln(1/3) = ln(3) / 2
    assert natural.item() == pytest.approx(1 / 6 * (LN3 / 2) / 2)
    # their CIFAR-100 scripts: 10 x torch.mean of each term
    robust, natural = rslad_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, LN3]]), teacher, scale=10.0)
    assert (robust.item(), natural.item()) == pytest.approx((10 * 5 / 6 * K / 2, 10 * 1 / 6 * (LN3 / 2) / 2))


def test_iad_loss_by_hand():
    labels = torch.tensor([0, 1])
    teacher_adversarial = torch.tensor([[LN3, 0.0], [0.0, 0.0]])  # P_t(y | x') = 3/4 and 1/2
    confidence = teacher_confidence(teacher_adversarial, labels, beta=0.5)
    assert confidence.tolist() == pytest.approx([0.75 ** 0.5, 0.5 ** 0.5])
    adversarial = torch.zeros(2, 2)
    clean = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[LN3, 0.0], [LN3, 0.0]])
    terms = iad_loss(adversarial, clean, teacher, labels, alpha=0.8, temperature=1.0, confidence=confidence)
    assert terms["ard_kl"].item() == pytest.approx(0.8 * K)  # both samples K, batchmean
    # introspection: KL(s(x) || s(x')) = (K, 0), weighted by 1 - w, averaged over the batch
    assert terms["introspection"].item() == pytest.approx(0.8 * (1 - 0.75 ** 0.5) * K / 2)
    assert terms["ce"].item() == pytest.approx(0.2 * (-math.log(0.75) - math.log(0.5)) / 2)
    warmup = iad_loss(adversarial, clean, teacher, labels, alpha=0.8, temperature=1.0, confidence=None)
    assert set(warmup) == {"ard_kl", "ce"}


def test_adaad_loss_by_hand():
    robust, natural = adaad_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[LN3, 0.0]]),
                                 torch.tensor([[0.0, LN3]]), alpha=0.75)
    assert robust.item() == pytest.approx(0.75 * K / 2)
    assert natural.item() == pytest.approx(0.25 * K / 2)
    robust, natural = adaad_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[LN3, 0.0]]),
                                 torch.zeros(1, 2))
    assert robust.item() == pytest.approx(K / 2) and natural.item() == 0.0  # default alpha 1


# --------------------------------------------------------------------------- the inner maximisation
def quantity(name, student, teacher, images, labels, adversarial):
    """What each method says its inner loop maximises, written out (in the mode its reference attacks in)."""
    if name in ("ard", "iad", "pgd-at"):  # the student's CE on the true labels, train mode
        return cross_entropy_rows(student(adversarial), labels).sum()
    student.eval()  # rslad and adaad attack with the student in eval mode
    with torch.no_grad():
        if name == "rslad":  # KL to the teacher's soft labels on the CLEAN image
            return kl_rows(teacher(images), student(adversarial)).sum()
        return kl_rows(teacher(adversarial), student(adversarial)).sum()  # adaad: the discrepancy on x'


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_inner_maximisation_stays_in_the_ball_and_increases_its_quantity(name):
    student, teacher = models()
    method = build_method(settings(name, inner={"steps": 5}), student, teacher)
    method.train()
    images, labels = batch()
    images[0, :, :4] = 0.0  # pixels on the border of [0, 1]: an attack that does not clamp leaves it
    images[1, :, :4] = 1.0
    adversarial = method.adversarial_examples(images, labels, torch.Generator().manual_seed(3))
    assert (adversarial - images).abs().max().item() <= EPS + 1e-6
    assert adversarial.min().item() >= 0.0 and adversarial.max().item() <= 1.0
    assert (adversarial - images).abs().max().item() > EPS / 2  # it moved
    student.train()
    start = quantity(name, student, teacher, images, labels, images).item()
    student.train()
    end = quantity(name, student, teacher, images, labels, adversarial).item()
    assert end > start * 1.05 + 1e-6, (start, end)


@pytest.mark.parametrize("name, eval_mode", [("ard", False), ("iad", False), ("pgd-at", False),
                                             ("rslad", True), ("adaad", True)])
def test_examples_are_made_in_the_mode_of_the_reference(name, eval_mode):
    """RSLAD and AdaAD attack in eval mode (BN statistics untouched); ARD, IAD, PGD-AT in train mode."""
    student, teacher = models()
    method = build_method(settings(name, inner={"steps": 2}), student, teacher)
    method.train()
    before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    images, labels = batch()
    method.adversarial_examples(images, labels, torch.Generator().manual_seed(3))
    unchanged = all(torch.equal(before[k], v) for k, v in student.state_dict().items() if "running" in k)
    assert unchanged == eval_mode
    assert student.training and all(module.training for module in student.modules())


def test_adaad_gradient_flows_through_the_teacher_to_the_input_only():
    student, teacher = models()
    method = build_method(settings("adaad", inner={"steps": 1, "start": "none"}), student, teacher)
    images, labels = batch()
    objective = method.objective(images, labels)
    x = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(objective(x), x)
    # the objective with the teacher's output detached has another input gradient: the teacher's path counts
    y = images.clone().requires_grad_(True)
    (detached,) = torch.autograd.grad(kl_rows(teacher(y).detach(), student(y)).sum(), y)
    assert not torch.allclose(gradient, detached)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


# --------------------------------------------------------------------------- each step against its formula
def run_step(name, **method):
    student, teacher = models()
    built = build_method(settings(name, inner={"steps": 2}, **method), student, teacher)
    built.train()
    s_out, _ = record_outputs(student)
    t_out, _ = record_outputs(teacher)
    images, labels = batch()
    result = built((images, labels), torch.Generator().manual_seed(0))
    return built, result, s_out, t_out, labels


def test_ard_step_is_its_formula():
    _, result, s_out, t_out, labels = run_step("ard", alpha=0.7, temperature=4.0)
    assert len(s_out) == 2 + 2 and len(t_out) == 1  # 2 attack passes, s(x'), s(x); t(x)
    adversarial, clean, teacher = s_out[2], s_out[3], t_out[0]
    # the written-out formula in float64; kdlab's float32 KL is a small difference of larger terms (about 0.006
    # here), whose round-off depends on the processor's kernels: 1.3e-5 relative on an Intel Xeon (AVX-512)
    # against under 1e-5 on AMD EPYC. 1e-4 still catches a wrong weight, temperature or reduction (>= 1 %).
    adversarial, clean, teacher = adversarial.double(), clean.double(), teacher.double()
    expected_kl = 0.7 * 16 * kl_rows(teacher / 4, adversarial / 4).sum() / adversarial.numel()
    expected_ce = 0.3 * cross_entropy_rows(clean, labels).mean()
    assert result.terms["ard_kl"].item() == pytest.approx(expected_kl.item(), rel=1e-4)
    assert result.loss.item() == pytest.approx((expected_kl + expected_ce).item(), rel=1e-4)


def test_rslad_step_is_its_formula():
    _, result, s_out, t_out, _ = run_step("rslad")
    assert len(s_out) == 2 + 2 and len(t_out) == 1
    adversarial, clean, teacher = s_out[2], s_out[3], t_out[0]
    n = adversarial.numel()
    expected = 5 / 6 * kl_rows(teacher, adversarial).sum() / n + 1 / 6 * kl_rows(teacher, clean).sum() / n
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_rslad_kl_scale_multiplies_both_terms_of_the_step_and_keeps_the_key_at_1():
    _, result, s_out, t_out, _ = run_step("rslad", kl_scale=10.0)
    adversarial, clean, teacher = s_out[2], s_out[3], t_out[0]
    n = adversarial.numel()
    expected = 10 * (5 / 6 * kl_rows(teacher, adversarial).sum() / n + 1 / 6 * kl_rows(teacher, clean).sum() / n)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the option at 1 (the default) leaves the run key it had before it existed (computed on commit 66a1360, when
    # train.rng's default was batch)
    from pathlib import Path

    from kdlab.config.recipe import load_recipe

    path = str(Path(__file__).resolve().parents[2] / "recipes" / "methods_cifar10_cpu.yaml")
    old = ["train.rng=batch"]
    assert load_recipe(path, ["method={name: rslad}", *old]).key("teacher-identity") == "ae476f2715"
    assert load_recipe(path, ["method={name: rslad, kl_scale: 10}", *old]).key("teacher-identity") != "ae476f2715"


def test_adaad_step_is_its_formula():
    _, result, s_out, t_out, _ = run_step("adaad", alpha=0.6)
    # inner: both nets per step; then s(x), s(x'), t(x), t(x')
    assert len(s_out) == 2 + 2 and len(t_out) == 2 + 2
    clean, adversarial, teacher_clean, teacher_adversarial = s_out[2], s_out[3], t_out[2], t_out[3]
    n = adversarial.numel()
    expected = (0.6 * kl_rows(teacher_adversarial, adversarial).sum() / n
                + 0.4 * kl_rows(teacher_clean, clean).sum() / n)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_iad_step_is_its_formula_after_the_warm_up_and_ard_before():
    method, result, s_out, t_out, labels = run_step("iad", warmup_epochs=0, alpha=0.9, beta=0.5)
    # attack, s(x'), the BatchNorm-update pass s(x'), s(x), second s(x); t(x), t(x')
    assert len(s_out) == 2 + 4 and len(t_out) == 2
    adversarial, clean, teacher, teacher_adversarial = s_out[2], s_out[4], t_out[0], t_out[1]
    assert torch.allclose(s_out[3], adversarial, atol=1e-5)  # the update pass runs on x' (its output unused)
    w = log_softmax(teacher_adversarial).exp().gather(1, labels[:, None]).squeeze(1) ** 0.5
    expected = (0.9 * kl_rows(teacher, adversarial).mean()
                + 0.9 * ((1 - w) * kl_rows(s_out[5], adversarial)).mean()
                + 0.1 * cross_entropy_rows(clean, labels).mean())
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0 < result.terms["introspection"].item()
    method, result, s_out, _, _ = run_step("iad", warmup_epochs=3)
    method.set_epoch(3)
    assert "introspection" not in result.terms and len(s_out) == 2 + 3
    assert not method.introspecting
    method.set_epoch(4)
    assert method.introspecting


class TinyBN(torch.nn.Module):
    """conv -> BatchNorm -> ReLU -> pool -> linear: a student whose running statistics one step visibly moves."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def reference_iad_statistics(student, teacher, images, labels, *, steps, step, eps, introspecting):
    """The running statistics after one IAD-I.py training step, written out from ZFancy/IAD ``IAD-I.py``
    (``train``): every student pass in train mode -- ``AttackPGD`` (k CE sign steps from x, here without the
    random start, then ``basic_net(x')``), ``basicop = basic_net(pert_inputs).detach()``, and ``basic_net(inputs)``
    once in the CE term, plus once more as the introspection target after the warm-up."""
    student.train()
    x = images.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(student(x), labels, reduction="sum"), x)
        x = torch.min(torch.max(x.detach() + step * grad.sign(), images - eps), images + eps).clamp(0, 1)
    student(x)  # outputs
    student(x).detach()  # basicop
    teacher(x)  # guide (the teacher is not the student: no effect on its statistics)
    for _ in range(2 if introspecting else 1):
        student(images)
    return student.bn.running_mean.clone(), student.bn.running_var.clone()


@pytest.mark.parametrize("warmup_epochs", [0, 5])
def test_iad_batchnorm_statistics_after_one_step_are_the_references(warmup_epochs):
    torch.manual_seed(0)
    student, teacher = TinyBN(), TinyBN()
    images, labels = batch()
    reference = copy.deepcopy(student)
    expected_mean, expected_var = reference_iad_statistics(reference, teacher, images, labels, steps=2,
                                                           step=2 / 255, eps=EPS,
                                                           introspecting=warmup_epochs == 0)
    statistics = {}
    for update in (True, False):
        model = copy.deepcopy(student)
        method = build_method(settings("iad", inner={"steps": 2, "start": "none"}, warmup_epochs=warmup_epochs,
                                       bn_update_pass=update), model, copy.deepcopy(teacher))
        method.train()
        method((images, labels), torch.Generator().manual_seed(0))
        statistics[update] = (model.bn.running_mean, model.bn.running_var)
    assert torch.allclose(statistics[True][0], expected_mean, rtol=1e-5, atol=1e-7)
    assert torch.allclose(statistics[True][1], expected_var, rtol=1e-5, atol=1e-7)
    # without the update pass (kdlab before issue #24) they are not the reference's (here ~10 % apart)
    for got, expected in zip(statistics[False], (expected_mean, expected_var)):
        assert ((got - expected).abs().max() / expected.abs().max()).item() > 0.01


def test_iad_without_the_update_pass_keeps_the_key_it_had_before_the_option():
    """The update pass became the default (issue #24), so the key of a default iad cell changed (its cached runs
    were made without it); written out as false, the old behaviour keeps its old key (computed before the option
    existed, on commit 66a1360, when train.rng's default was batch)."""
    from pathlib import Path

    from kdlab.config.recipe import load_recipe

    path = str(Path(__file__).resolve().parents[2] / "recipes" / "methods_cifar10_cpu.yaml")
    old = load_recipe(path, ["method={name: iad, bn_update_pass: false}", "train.rng=batch"]).key("teacher-identity")
    assert old == "4cfeaca6d0"
    assert load_recipe(path, ["method={name: iad}", "train.rng=batch"]).key("teacher-identity") != old


def test_the_engine_tells_iad_the_epoch_also_on_resume(tmp_path):
    student, teacher = models()
    method = build_method(settings("iad", inner={"steps": 1}, warmup_epochs=1), student, teacher)
    seen = []
    forward = method.forward
    method.forward = lambda batch, generator: (seen.append((method.epoch, method.introspecting)),
                                               forward(batch, generator))[1]
    images, labels = batch(8)
    source = DataSource(batches=lambda generator: [(images, labels)], batches_per_epoch=1, batch_size=len)
    spec = TrainSpec(epochs=2, lr=0.01)
    fit(method, source, spec, seed=0, run_dir=tmp_path, validate=None, export_best=lambda path: None)
    assert seen == [(1, False), (2, True)]
    seen.clear()
    method.set_epoch(1)
    fit(method, source, TrainSpec(epochs=3, lr=0.01), seed=0, run_dir=tmp_path, validate=None,
        export_best=lambda path: None, resume=True)
    assert seen == [(3, True)]


def test_pgd_at_is_the_supervised_pgd_step_without_a_teacher():
    student, teacher = models()
    method = build_method(settings("pgd-at", inner={"steps": 2}), student, teacher)
    assert method.teacher is None and method.teacher_forwards == 0.0
    t_out, _ = record_outputs(teacher)
    s_out, _ = record_outputs(student)
    images, labels = batch()
    method.train()
    result = method((images, labels), torch.Generator().manual_seed(0))
    assert not t_out and len(s_out) == 3
    assert result.loss.item() == pytest.approx(cross_entropy_rows(s_out[2], labels).mean().item(), rel=1e-5)
    with pytest.raises(KdlabError, match="pgd-at starts PGD uniformly"):
        settings("pgd-at", inner={"start": "normal"})


# --------------------------------------------------------------------------- cost, counted
@pytest.mark.parametrize("name, student_passes, teacher_forwards", [
    ("ard", 3 + 2, 1), ("rslad", 3 + 2, 1), ("iad", 3 + 4, 2), ("adaad", 3 + 2, 3 + 2), ("pgd-at", 3 + 1, 0)])
def test_declared_cost_is_the_forward_passes_a_step_makes(name, student_passes, teacher_forwards):
    student, teacher = models()
    extra = {"warmup_epochs": 0} if name == "iad" else {}
    method = build_method(settings(name, inner={"steps": 3}, **extra), student, teacher)
    method.train()
    s_out, _ = record_outputs(student)
    t_out, _ = record_outputs(teacher)
    method(batch(), torch.Generator().manual_seed(0))
    assert (len(s_out), len(t_out)) == (student_passes, teacher_forwards)
    assert (method.passes, method.teacher_forwards) == (student_passes, teacher_forwards)


# --------------------------------------------------------------------------- the frozen teacher
@pytest.mark.parametrize("name", ["ard", "rslad", "iad", "adaad"])
def test_teacher_takes_no_gradient_step_and_keeps_its_batchnorm_statistics(name):
    student, teacher = models()
    teacher.train()
    extra = {"warmup_epochs": 0} if name == "iad" else {}
    method = build_method(settings(name, inner={"steps": 2}, **extra), student, teacher)
    method.train()
    assert not teacher.training and student.training
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    train_steps_leave_teacher_untouched(method, teacher)
    assert not teacher.training
    assert all(not key.startswith("teacher") for key in method.state_dict())
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())  # it trains


# --------------------------------------------------------------------------- settings belong to one method
@pytest.mark.parametrize("name, foreign, owner", [
    ("rslad", {"temperature": 4}, "ard and iad and kd"),
    ("adaad", {"beta": 0.1}, "iad"),
    ("ard", {"warmup_epochs": 5}, "iad"),
    ("pgd-at", {"alpha": 0.5}, "adaad and ard and iad and rslad"),
    ("kd", {"inner": {"steps": 3}}, "adaad and ard and iad and pgd-at and rslad"),
    ("mixacm", {"second_clean_pass": False}, "iad"),
    ("ard", {"bn_update_pass": False}, "iad"),
    ("iad", {"kl_scale": 10}, "rslad"),
    ("ard", {"acm": {"weight": 1}}, "mixacm"),
])
def test_a_setting_of_another_method_is_refused(name, foreign, owner):
    with pytest.raises(KdlabError, match=f"is a setting of {owner}, not of {name}") as error:
        validate_recipe({**BASE, "method": {"name": name, **foreign}})
    assert "\n" not in str(error.value)


def test_adversarial_settings_keep_the_authors_defaults():
    ard, rslad, iad, adaad = (settings(name) for name in ("ard", "rslad", "iad", "adaad"))
    assert (ard.alpha, ard.temperature, ard.reduction, ard.start) == (1.0, 30.0, "mean", "uniform")
    assert (rslad.alpha, rslad.reduction, rslad.start, rslad.kl_scale) == (pytest.approx(5 / 6), "mean", "normal", 1)
    assert (iad.alpha, iad.temperature, iad.beta, iad.warmup_epochs) == (1.0, 1.0, 0.1, 60)
    assert iad.reduction == "batchmean" and iad.start == "uniform" and iad.bn_update_pass
    assert (adaad.alpha, adaad.reduction, adaad.start) == (1.0, "mean", "normal")
    for spec in (ard, rslad, iad, adaad, settings("pgd-at")):
        assert spec.inner.eps == pytest.approx(8 / 255) and spec.inner.step == pytest.approx(2 / 255)
        assert spec.inner.steps == 10
    assert settings("ard", inner={"eps": "4/255"}).inner.eps == pytest.approx(4 / 255)


# --------------------------------------------------------------------------- the --methods preset
def methods_recipe(tmp_path):
    path = tmp_path / "methods.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cmp", "data": {"dataset": "embedded", "subset": 64, "batch_size": 16},
        "student": {"arch": "resnet_small", "width": 4}, "teacher": {"checkpoint": str(tmp_path / "t.pt")},
        "method": {"name": "mixacm", "acm": {"weight": 5.0}},
    }))
    return path


def plan(path, **kwargs):
    options = {"components": False, "blocks": None, "cumulative": False, "grid": [], "seeds": [0, 1], "attacks": ["pgd"],
                   "overrides": [], "name": None}
    return plan_ablation(str(path), **{**options, **kwargs})


def test_methods_preset_plans_one_cell_per_method_with_its_own_settings(tmp_path):
    names = "mixacm,rrm,kd,fitnet,at,ard,rslad,iad,adaad,pgd-at"
    made = plan(methods_recipe(tmp_path), methods=names, inner_steps=3, inner_step="6/255",
                method_overrides=["ard.alpha=0.9"])
    assert made.title == "cmp-methods" and made.kind == "methods" and made.include_teacher
    assert [cell.label for cell in made.cells] == names.split(",")
    by_label = {cell.label: cell for cell in made.cells}
    assert by_label["kd"].overrides == ("method={name: kd}",)
    inner = ("method.inner.steps=3", "method.inner.step=6/255")
    assert by_label["ard"].overrides == ("method={name: ard}", *inner, "method.alpha=0.9")
    assert by_label["pgd-at"].overrides == ("method={name: pgd-at}", *inner)
    recipes = {cell.label: made.recipe_for(cell, 1) for cell in made.cells}
    assert {label: recipe.method.name for label, recipe in recipes.items()} == {n: n for n in recipes}
    assert recipes["mixacm"].method.acm.weight == 5.0  # the recipe's own method keeps its section
    assert recipes["kd"].method == settings("kd")  # every other method: its own defaults, nothing of MixACM's
    assert recipes["ard"].method.alpha == 0.9 and recipes["ard"].method.inner.steps == 3
    assert {recipes[n].method.inner.steps for n in ("rslad", "iad", "adaad", "pgd-at")} == {3}
    assert {recipes[n].method.inner.step for n in ("rslad", "iad", "adaad", "pgd-at")} == {6 / 255}
    assert all(recipe.seed == 1 and recipe.teacher == recipes["kd"].teacher for recipe in recipes.values())
    assert all(recipe.student == recipes["kd"].student for recipe in recipes.values())


def test_methods_preset_refuses_what_it_cannot_run(tmp_path):
    path = methods_recipe(tmp_path)
    with pytest.raises(KdlabError, match="unknown method 'ardd'"):
        plan(path, methods="kd,ardd")
    with pytest.raises(KdlabError, match="not of kd"):  # a setting kd does not have
        plan(path, methods="kd,ard", method_overrides=["kd.alpha=0.5"])
    with pytest.raises(KdlabError, match="--method-set 'rslad.alpha=1'"):  # not among --methods
        plan(path, methods="kd,ard", method_overrides=["rslad.alpha=1"])
    with pytest.raises(KdlabError, match="belong to --methods"):
        plan(path, grid=["train.lr=0.1"], inner_steps=3)
    with pytest.raises(KdlabError, match="lists a method twice"):
        plan(path, methods="kd,kd")


# --------------------------------------------------------------------------- through kdlab distill
@pytest.mark.parametrize("name, passes, teacher_forwards", [("iad", "5.0", "2.0"), ("pgd-at", "2.0", "0.0")])
def test_adversarial_methods_train_through_kdlab_distill(tmp_path, name, passes, teacher_forwards):
    import csv

    from typer.testing import CliRunner

    from kdlab.cli.main import app
    from kdlab.models.files import save_model

    save_model(tmp_path / "t.pt", build_classifier("resnet_small", 10, width=8), task="classification",
               arch="resnet_small", options={"width": 8}, num_classes=10)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": name, "device": "cpu",
        "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 16, "augment": False},
        "student": {"arch": "resnet_small", "width": 4}, "teacher": {"checkpoint": str(tmp_path / "t.pt")},
        "method": {"name": name, "inner": {"steps": 1}, **({"warmup_epochs": 0} if name == "iad" else {})},
        "train": {"epochs": 1, "max_batches_per_epoch": 2}, "eval": {"n": 20, "attacks": ["clean"]},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")},
    }))
    result = CliRunner().invoke(app, ["distill", str(recipe), "--threads", "1"])
    assert result.exit_code == 0, result.output
    row = list(csv.DictReader((tmp_path / "runs.csv").open()))[-1]
    assert (row["passes_per_image"], row["teacher_forwards_per_image"]) == (passes, teacher_forwards)
