"""Distillation methods without adversarial training of the student: kd, fitnet, at, rrm (and the shared base).

Each loss is checked against a number worked out by hand on a tiny example; each method's step against its
formula written out in plain torch on features read with plain forward hooks; the teacher against being
trained (no gradient, BatchNorm statistics unchanged, never in train mode, outside the state dict).
"""

import math

import pytest
import torch

from kdlab.config.recipe import load_recipe, validate_recipe
from kdlab.config.sections import AdversarialSpec
from kdlab.errors import KdlabError
from kdlab.losses import attention_loss, attention_map, hint_loss, representation_loss
from kdlab.methods.registry import build_method
from kdlab.methods.supervised import SupervisedTraining
from kdlab.models.registry import build_classifier
from tests.helpers.methods import (
    batch,
    models,
    store_input,
    store_output,
    train_steps_leave_teacher_untouched,
)

BASE = {"student": {"arch": "resnet_small", "width": 4}, "teacher": {"checkpoint": "unused.pt"}}
METHODS = ["kd", "fitnet", "at", "rrm", "mixacm"]




def settings(name, **method):
    return validate_recipe({**BASE, "method": {"name": name, **method}}).method


def capture(model, paths, inputs_of=()):
    """Plain forward hooks: each path's output, the inputs of ``inputs_of`` and the logits."""
    seen = {}
    handles = [model.register_forward_hook(lambda module, args, out: seen.__setitem__("logits", out))]
    for path in paths:
        handles.append(model.get_submodule(path).register_forward_hook(
            store_output(seen, path)))
    for path in inputs_of:
        handles.append(model.get_submodule(path).register_forward_pre_hook(
            store_input(seen, path)))
    return seen, handles


def cross_entropy(logits, labels):
    return (logits.logsumexp(1) - logits.gather(1, labels[:, None]).squeeze(1)).mean()


# --------------------------------------------------------------------------- losses by hand
def test_hint_loss_is_the_mean_squared_difference():
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert hint_loss(student, torch.zeros_like(student)).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert hint_loss(student, student + 0.5).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same shape"):
        hint_loss(student, torch.zeros(1, 2, 2, 2))


def test_attention_loss_by_hand():
    # student channels [1, 0] and [1, 2] at two positions: mean_c F^2 = [1, 2] -> [1, 2] / sqrt(5)
    # teacher channel [2, 2]: [4, 4] -> [1, 1] / sqrt(2); loss = mean of the squared differences = 1 - 3 / sqrt(10)
    student = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])
    teacher = torch.tensor([[[[2.0, 2.0]]]])
    assert attention_map(student).flatten().tolist() == pytest.approx([1 / math.sqrt(5), 2 / math.sqrt(5)])
    assert attention_loss(student, teacher).item() == pytest.approx(1 - 3 / math.sqrt(10))
    # p = 1 uses |F|: channel means [1, 1] -> equal attention, as the teacher's
    assert attention_loss(student, teacher, p=1).item() == pytest.approx(0.0, abs=1e-12)


def test_attention_loss_pools_the_larger_map_and_ignores_channel_counts():
    teacher = torch.rand(2, 3, 2, 2) + 0.1
    upsampled = teacher.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 4x4, constant 2x2 blocks
    student = torch.cat([upsampled, upsampled], 1)  # 6 channels: the same channel mean of F^2
    assert attention_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-12)
    assert attention_loss(teacher, student).item() == pytest.approx(0.0, abs=1e-12)
    assert attention_loss(student, teacher.flip(-1)).item() > 1e-6


def test_representation_loss_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[1.0, 1.0], [0.0, -3.0]])
    # cos = 1/sqrt(2) and -1 -> mean(1 - cos) = (1 - 1/sqrt(2) + 2) / 2
    assert representation_loss(student, teacher).item() == pytest.approx((3 - 1 / math.sqrt(2)) / 2)
    # l2, the authors' (l_2/train_rrm.py): ||r_s - r_t|| / ||r_t||: 1 / sqrt(2) and 5 / 3
    assert representation_loss(student, teacher, "l2").item() == pytest.approx((1 / math.sqrt(2) + 5 / 3) / 2)
    assert representation_loss(student, teacher, "l2_absolute").item() == pytest.approx((1 + 5) / 2)
    assert representation_loss(2 * student, 2 * teacher, "l2").item() == pytest.approx(
        (1 / math.sqrt(2) + 5 / 3) / 2)  # relative: the same for representations scaled alike
    assert representation_loss(student, 3 * student).item() == pytest.approx(0.0, abs=1e-6)  # scale-free


# --------------------------------------------------------------------------- each step against its formula
def test_kd_step_is_weighted_ce_plus_t2_kl():
    student, teacher = models()
    spec = settings("kd")
    assert (spec.ce_weight, spec.weight, spec.temperature) == (0.1, 0.9, 4.0)  # mdistiller's defaults
    method = build_method(spec, student, teacher)
    s_seen, _ = capture(student, [])
    t_seen, _ = capture(teacher, [])
    images, labels = batch()
    result = method((images, labels), torch.Generator())
    z_s, z_t, T = s_seen["logits"], t_seen["logits"], 4.0
    log_p = (z_s / T) - (z_s / T).logsumexp(1, keepdim=True)
    log_q = (z_t / T) - (z_t / T).logsumexp(1, keepdim=True)
    kl = (log_q.exp() * (log_q - log_p)).sum(1).mean()
    expected = 0.1 * cross_entropy(z_s, labels) + 0.9 * T**2 * kl
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(result.terms) == {"ce", "kd"}


def test_fitnet_step_regresses_the_middle_block():
    student, teacher = models()
    spec = settings("fitnet")
    method = build_method(spec, student, teacher)
    assert spec.block == 3 and spec.weight == 100.0
    s_seen, _ = capture(student, ["net.stage2"])
    t_seen, _ = capture(teacher, ["net.stage2"])
    images, labels = batch()
    result = method((images, labels), torch.Generator())
    regressed = method.regressor(s_seen["net.stage2"])
    assert regressed.shape == t_seen["net.stage2"].shape  # 16 -> 32 channels
    expected_hint = (regressed - t_seen["net.stage2"]).pow(2).mean()
    assert result.terms["hint"].item() == pytest.approx(100 * expected_hint.item(), rel=1e-5)
    assert result.terms["ce"].item() == pytest.approx(cross_entropy(s_seen["logits"], labels).item(), rel=1e-5)
    result.loss.backward()
    assert all(p.grad is not None for p in method.regressor.parameters())


def test_at_step_sums_attention_losses_over_stages():
    student, teacher = models()
    method = build_method(settings("at"), student, teacher)
    paths = ["net.stage1", "net.stage2", "net.stage3"]  # blocks 2, 3, 4
    s_seen, _ = capture(student, paths)
    t_seen, _ = capture(teacher, paths)
    images, labels = batch()
    result = method((images, labels), torch.Generator())

    def q(features):
        a = features.pow(2).mean(1).flatten(1)
        return a / a.norm(dim=1, keepdim=True)

    expected = sum((q(s_seen[p]) - q(t_seen[p])).pow(2).mean() for p in paths)
    assert result.terms["at"].item() == pytest.approx(1000 * expected.item(), rel=1e-5)
    assert result.terms["ce"].item() == pytest.approx(cross_entropy(s_seen["logits"], labels).item(), rel=1e-5)


def test_rrm_step_matches_penultimate_features_on_clean_images():
    student, teacher = models()
    spec = settings("rrm", connector="linear")
    method = build_method(spec, student, teacher)
    assert method.student_layer == "net.head.fc" and method.teacher_layer == "net.head.fc"
    s_seen, _ = capture(student, [], inputs_of=["net.head.fc"])
    t_seen, _ = capture(teacher, [], inputs_of=["net.head.fc"])
    images, labels = batch()
    result = method((images, labels), torch.Generator())
    r_s, r_t = method.connector(s_seen["in:net.head.fc"]), t_seen["in:net.head.fc"]
    assert r_s.shape == r_t.shape == (6, 32)
    cos = (r_s * r_t).sum(1) / (r_s.norm(dim=1) * r_t.norm(dim=1))
    assert result.terms["rrm"].item() == pytest.approx((1 - cos).mean().item(), rel=1e-5)
    assert result.terms["ce"].item() == pytest.approx(0.005 * cross_entropy(s_seen["logits"], labels).item(), rel=1e-5)
    with pytest.raises(KdlabError, match="identity needs equal widths"):
        build_method(settings("rrm", connector="identity"), *models())


@pytest.mark.parametrize("distance", ["l2", "l2_absolute"])
def test_rrm_l2_step_divides_by_the_teachers_norm_as_the_authors_unless_absolute(distance):
    student, teacher = models()
    method = build_method(settings("rrm", connector="linear", distance=distance), student, teacher)
    s_seen, _ = capture(student, [], inputs_of=["net.head.fc"])
    t_seen, _ = capture(teacher, [], inputs_of=["net.head.fc"])
    result = method(batch(), torch.Generator())
    r_s, r_t = method.connector(s_seen["in:net.head.fc"]), t_seen["in:net.head.fc"]
    gap = ((r_s - r_t) ** 2).sum(1).sqrt()
    expected = gap / (r_t ** 2).sum(1).sqrt() if distance == "l2" else gap
    assert result.terms["rrm"].item() == pytest.approx(expected.mean().item(), rel=1e-5)


# --------------------------------------------------------------------------- the frozen teacher
@pytest.mark.parametrize("name", METHODS)
def test_teacher_takes_no_gradient_and_keeps_its_batchnorm_statistics(name):
    student, teacher = models()
    teacher.train()  # even a teacher handed over in train mode is frozen
    method = build_method(settings(name), student, teacher)
    assert not teacher.training
    teacher.train()  # something switched it to train mode: the method's train() (the engine calls it each epoch)
    method.train()  # puts it back
    assert not teacher.training and student.training
    train_steps_leave_teacher_untouched(method, teacher)
    assert all(not key.startswith("teacher") for key in method.state_dict())
    assert method.passes == 1.0 and method.teacher_forwards == 1.0
    assert any(p.grad is not None for p in student.parameters())


def test_method_needs_a_teacher():
    with pytest.raises(ValueError, match="needs a teacher"):
        build_method(settings("kd"), models()[0], None)


# --------------------------------------------------------------------------- settings belong to one method
@pytest.mark.parametrize("name, foreign, owner", [
    ("kd", {"acm": {"weight": 1}}, "mixacm"),
    ("kd", {"feature": {"kind": "l1"}}, "skd"),
    ("fitnet", {"p": 2}, "at"),
    ("at", {"distance": "cosine"}, "rrm"),
    ("rrm", {"mixup": {"enabled": False}}, "mixacm"),
    ("mixacm", {"temperature": 4}, "ard and iad and kd"),
    ("mixacm", {"block": 3}, "fitnet"),
])
def test_a_setting_of_another_method_is_refused(name, foreign, owner):
    with pytest.raises(KdlabError, match=f"is a setting of {owner}, not of {name}") as error:
        validate_recipe({**BASE, "method": {"name": name, **foreign}})
    assert "\n" not in str(error.value)


def test_methods_of_the_other_task_and_unknown_methods_are_refused():
    with pytest.raises(KdlabError, match="method 'skd' is for detection recipes, not classification"):
        validate_recipe({**BASE, "method": {"name": "skd"}})
    with pytest.raises(KdlabError, match="method 'kd' is for classification recipes, not detection"):
        load_recipe("recipes/skd_quickstart.yaml", ["method={name: kd}"])
    with pytest.raises(KdlabError, match="unknown method.name 'fitnets': did you mean 'fitnet'"):
        validate_recipe({**BASE, "method": {"name": "fitnets"}})
    with pytest.raises(KdlabError, match="needs a distillation recipe"):
        validate_recipe({"model": {"arch": "resnet_small"}, "method": {"name": "kd"}})


def test_default_method_is_the_tasks_own():
    assert validate_recipe(BASE).method.name == "mixacm"
    assert load_recipe("recipes/skd_quickstart_teacher.yaml").method.name == "skd"


# --------------------------------------------------------------------------- cost
def test_supervised_passes_count_the_inner_maximisation():
    model = build_classifier("resnet_small", 10, width=4)
    counts = {method: SupervisedTraining(model, AdversarialSpec(method=method, steps=3)).passes
              for method in ("none", "pgd", "fgsm-rs", "trades")}
    assert counts == {"none": 1.0, "pgd": 4.0, "fgsm-rs": 2.0, "trades": 6.0}
    assert settings("mixacm", kd={"weight": 0}, acm={"weight": 0}).teacher_forwards == 0.0
    student, teacher = models()
    method = build_method(settings("mixacm", kd={"weight": 0}, acm={"weight": 0}), student, teacher)
    assert method.teacher is None and method.teacher_forwards == 0.0  # plain CE: the teacher is never run
