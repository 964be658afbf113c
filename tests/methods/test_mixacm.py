"""The MixACM step: the intended loss terms per ablation setting, one shared mixed batch, a frozen teacher."""

import pytest
import torch

from kdlab.ablation.grid import component_cells
from kdlab.config.recipe import apply_overrides, validate_recipe
from kdlab.losses import mix_batch
from kdlab.methods.mixacm import MixACM
from kdlab.models.registry import build_classifier
from tests.helpers.methods import batch, models, store_output

BASE = {"student": {"arch": "resnet_small", "width": 4}, "teacher": {"checkpoint": "unused.pt"},
        "method": {"acm": {"blocks": [2, 3, 4]}}}
EXPECTED_TERMS = {
    "student-ce": {"ce"},
    "kd-only": {"ce", "kd"},
    "acm": {"ce", "acm2", "acm3", "acm4"},
    "acm+kd": {"ce", "kd", "acm2", "acm3", "acm4"},
    "acm+mixup": {"mixup_ce", "acm2", "acm3", "acm4"},
    "mixacm": {"mixup_ce", "kd", "acm2", "acm3", "acm4"},
}




def capture(model, paths):
    """Forward hooks (plain torch) recording the input, the given submodules' outputs and the logits."""
    seen = {}
    handles = [model.register_forward_pre_hook(lambda module, args: seen.__setitem__("input", args[0]))]
    handles.append(model.register_forward_hook(lambda module, args, out: seen.__setitem__("logits", out)))
    for path in paths:
        hook = store_output(seen, path)
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    return seen, handles


def cross_entropy(logits, labels):
    """-log softmax(z)_y, averaged over the batch, written out."""
    return (logits.logsumexp(1) - logits.gather(1, labels[:, None]).squeeze(1)).mean()


def kd(student_logits, teacher_logits, temperature):
    """Hinton et al.: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch, written out."""
    log_p = student_logits / temperature - (student_logits / temperature).logsumexp(1, keepdim=True)
    log_q = teacher_logits / temperature - (teacher_logits / temperature).logsumexp(1, keepdim=True)
    return temperature**2 * (log_q.exp() * (log_q - log_p)).sum(1).mean()


def acm_distance(student_features, teacher_features):
    """MixACM's default: l2-normalised mean relu activation per channel, squared l2 distance, batch mean."""
    a_s = student_features.clamp(min=0).mean(dim=(2, 3))
    a_t = teacher_features.clamp(min=0).mean(dim=(2, 3))
    a_s, a_t = a_s / a_s.norm(dim=1, keepdim=True), a_t / a_t.norm(dim=1, keepdim=True)
    return (a_s - a_t).pow(2).sum(1).mean()


@pytest.mark.parametrize("cell", component_cells(validate_recipe(BASE)), ids=lambda c: c.label)
def test_each_component_setting_gives_the_hand_computed_loss(cell):
    """The step's loss and every term against the formulas written out on the step's own tensors."""
    spec = validate_recipe(apply_overrides(BASE, list(cell.overrides))).method
    student, teacher = models()
    method = MixACM(student, teacher, spec)
    paths = {block.index: block.path for block in student.blocks()}
    blocks = [paths[key] for key in spec.acm.blocks]
    seen_s, handles = capture(student, blocks)
    seen_t, more = capture(teacher, blocks)
    images, labels = batch()
    result = method.training_step((images, labels), torch.Generator().manual_seed(0))
    for handle in handles + more:
        handle.remove()
    assert set(result.terms) == EXPECTED_TERMS[cell.label]

    z = seen_s["logits"].detach()
    expected = {}
    if spec.mixup.enabled:
        # the same draw as the step (its generator, seed 0): lam and the permutation, then the mix by hand
        mixed = mix_batch(images, labels, spec.mixup.alpha, torch.Generator().manual_seed(0))
        assert 0 < mixed.lam < 1 and torch.equal(seen_s["input"], mixed.images)
        expected["mixup_ce"] = spec.label_weight * (mixed.lam * cross_entropy(z, labels)
                                                    + (1 - mixed.lam) * cross_entropy(z, mixed.targets_b))
    else:
        expected["ce"] = spec.label_weight * cross_entropy(z, labels)
        assert torch.equal(seen_s["input"], images)
    if "kd" in EXPECTED_TERMS[cell.label]:
        expected["kd"] = spec.kd.weight * kd(z, seen_t["logits"], spec.kd.temperature)
    if "acm2" in EXPECTED_TERMS[cell.label]:
        for key, path, connector in zip(spec.acm.blocks, blocks, method.connectors):
            distance = acm_distance(connector(seen_s[path]).detach(), seen_t[path])
            expected[f"acm{key}"] = spec.acm.weight * distance
    assert {k: v.item() for k, v in result.terms.items()} == pytest.approx(
        {k: v.item() for k, v in expected.items()}, rel=1e-5, abs=1e-5)  # abs: fp32 KL of near-equal
    # distributions at T=4 cancels to ~1e-6 (seen 1.6e-6 on a Xeon); a wrong T or T^2 moves kd by >> 1e-5
    assert result.loss.item() == pytest.approx(sum(v.item() for v in expected.values()), rel=1e-5, abs=1e-5)
    assert all(term.item() > 0 for term in result.terms.values())


def test_component_cells_are_exactly_the_papers_rows_plus_student():
    labels = [cell.label for cell in component_cells(validate_recipe(BASE))]
    assert labels == ["student-ce", "kd-only", "acm", "acm+kd", "acm+mixup", "mixacm"]


def test_teacher_and_student_see_the_identical_mixed_batch_and_teacher_gets_no_gradient():
    student, teacher = models()
    seen = {}
    student.register_forward_pre_hook(lambda module, args: seen.__setitem__("student", args[0].clone()))
    teacher.register_forward_pre_hook(lambda module, args: seen.__setitem__("teacher", args[0].clone()))
    method = MixACM(student, teacher, validate_recipe(BASE).method)
    images, labels = batch()
    result = method.training_step((images, labels), torch.Generator().manual_seed(0))
    result.loss.backward()
    assert torch.equal(seen["student"], seen["teacher"])
    assert not torch.equal(seen["student"], images)  # it is a mixed batch, not the clean one
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in method.connectors.parameters())
    assert not teacher.training
    method.train()
    assert student.training and not teacher.training


def test_teacher_is_not_part_of_the_saved_or_trained_state():
    student, teacher = models()
    method = MixACM(student, teacher, validate_recipe(BASE).method)
    names = set(method.state_dict())
    assert any(name.startswith("student.") for name in names)
    assert any(name.startswith("connectors.") for name in names)
    assert not any(name.startswith("teacher") for name in names)
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in method.parameters()}


def test_student_alone_never_runs_the_teacher():
    student, teacher = models()
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    recipe = validate_recipe(apply_overrides(BASE, list(component_cells(validate_recipe(BASE))[0].overrides)))
    MixACM(student, teacher, recipe.method).training_step(batch(), torch.Generator().manual_seed(0))
    assert calls == []


def _hand_acm(student_features, teacher_features):
    """Squared l2 distance of per-sample l2-normalised mean(relu(F)) vectors, batch mean (written out)."""
    def acm(features):
        pooled = features.clamp(min=0).mean(dim=(2, 3))
        return pooled / pooled.norm(dim=1, keepdim=True)

    return ((acm(student_features) - acm(teacher_features)) ** 2).sum(dim=1).mean()


def test_teacher_blocks_pair_each_student_block_with_its_named_teacher_block():
    """Student stages 2-4 of a 4-stage net against teacher stages 1-3: channels 8/16/32 on both sides."""
    torch.manual_seed(0)
    student = build_classifier("resnet_small", 10, width=4, stages=4)  # blocks 2..5: 4, 8, 16, 32 channels
    teacher = build_classifier("resnet_small", 10, width=8, stages=3)  # blocks 2..4: 8, 16, 32 channels
    recipe = validate_recipe({**BASE, "method": {"mixup": {"enabled": False}, "kd": {"weight": 0.0},
                                                 "acm": {"weight": 2.0, "blocks": [3, 4, 5],
                                                         "teacher_blocks": [2, 3, 4]}}})
    seen = {}
    for name, module in [("s3", student.net.stage2), ("s5", student.net.stage4),
                         ("t2", teacher.net.stage1), ("t4", teacher.net.stage3)]:
        module.register_forward_hook(lambda m, i, out, key=name: seen.__setitem__(key, out.detach().clone()))
    method = MixACM(student, teacher, recipe.method)
    assert all(isinstance(c, torch.nn.Identity) for c in method.connectors)  # equal channels: identity
    result = method.training_step(batch(), torch.Generator().manual_seed(0))
    assert set(result.terms) == {"ce", "acm3", "acm4", "acm5"}
    expected = {"acm3": ("s3", "t2"), "acm5": ("s5", "t4")}
    for term, (s, t) in expected.items():
        assert result.terms[term].item() == pytest.approx(2.0 * _hand_acm(seen[s], seen[t]).item(), rel=1e-5)
    assert seen["s5"].shape[2:] == (4, 4) and seen["t4"].shape[2:] == (8, 8)  # last stage with last stage


def test_teacher_blocks_default_to_the_student_blocks():
    assert validate_recipe(BASE).method.acm.block_pairs == [(2, 2), (3, 3), (4, 4)]


def test_teacher_blocks_of_another_length_are_refused_in_one_line():
    from kdlab.errors import KdlabError

    raw = {**BASE, "method": {"acm": {"blocks": [3, 4, 5], "teacher_blocks": [2, 3]}}}
    with pytest.raises(KdlabError) as error:
        validate_recipe(raw)
    message = str(error.value)
    assert "teacher_blocks has 2 entries but acm.blocks has 3" in message and "\n" not in message
