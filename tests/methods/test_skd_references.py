"""Structural KD's peers follow their reference configs by default (``kdlab.config.methods.skd``): the FPN levels
each kind distils per detector, the teacher's neck and heads copied into the student (FGD, one-stage MGD), MGD's
two-stage mask ratio, FGD's two-stage weights and gradient clipping at max_norm 35 (MGD, FGD); each old kdlab
behaviour stays reachable by its option.

The expected values below are written out from the reference configs themselves (MMRazor ``configs/distill/mmdet/
{pkd,cwd}``, ``yzd-v/MGD det/configs/distillers/mgd``, ``yzd-v/FGD configs/distillers/fgd``), not read back from
kdlab: mmdet's two-stage neck outputs 0-3 are P2-P5 (torchvision's 0-3, ``pool`` = mmdet's P6, the stride-2 max
pool of P5), RetinaNet's outputs 0-4 are P3-P7 (torchvision's 0, 1, 2, p6, p7).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.config.methods.skd import SKDSettings, fpn_level_names
from kdlab.config.recipe import load_recipe
from kdlab.config.sections import TrainSpec
from kdlab.data.detection import iterate_detection_batches, make_synthetic_shapes
from kdlab.errors import KdlabError
from kdlab.losses import multilevel as multilevel_module
from kdlab.losses.pkd import pkd_loss
from kdlab.methods.skd import StructuralKD
from kdlab.models.detection import build_detector, fpn_level_channels, fpn_levels
from kdlab.runtime.acceleration import StepPrecision
from kdlab.train.engine import DataSource, StepResult, fit
from tests.helpers.detection import detector, write_recipes

ALL_FASTER = ["0", "1", "2", "3", "pool"]
ALL_RETINA = ["0", "1", "2", "p6", "p7"]
# (kind, arch) -> the levels of the reference config; "all" where it distils every level
REFERENCE_LEVELS = {
    ("pkd", "fasterrcnn"): ["0", "1", "2", "3"],  # pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco: data_idx 0-3
    ("pkd", "retinanet"): ["0", "1", "2", "p6"],  # pkd_fpn_retina_x101_retina_r50_2x_coco: data_idx 0-3 (P3-P6)
    ("cwd", "fasterrcnn"): "all",  # cwd_fpn_frcnn_r101_frcnn_r50_1x_coco: data_idx 0-4
    ("cwd", "retinanet"): "all",  # cwd_fpn_retina_r101_retina_r50_1x_coco (inherits 0-4)
    ("mgd", "fasterrcnn"): ["0", "1", "2", "3"],  # ..._distill_faster_rcnn_r50_fpn_2x_coco: fpn_convs 0-3
    ("mgd", "retinanet"): "all",  # retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco: fpn_convs 0-4
    ("fgd", "fasterrcnn"): ["0", "1", "2", "3"],  # fgd_faster_rcnn_r101_fpn_2x_distill_...: fpn_convs 0-3
    ("fgd", "retinanet"): "all",  # fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco: fpn_convs 0-4
    ("ssim", "fasterrcnn"): "all",  # Structural KD: every level (kdlab's reading)
    ("ssim", "retinanet"): "all",
}
INHERITS = {("fgd", "fasterrcnn"), ("fgd", "retinanet"), ("mgd", "retinanet")}  # init_student / init_cfg


def student_recipe(tmp_path, arch: str, feature: dict, sets: list[str] | None = None):
    """A tiny detection student recipe of ``arch`` with ``feature`` as its method.feature."""
    _, path = write_recipes(tmp_path, "tiny-ref", feature)
    overrides = [] if arch == "fasterrcnn" else [
        "student.arch=retinanet", "student.options={fpn_channels: 8, anchor_base: 16, topk_candidates: 50}"]
    return load_recipe(path, overrides + (sets or []))


@pytest.fixture(scope="module")
def batch():
    shapes = make_synthetic_shapes(2, image_size=64, seed=0)
    return next(iter(iterate_detection_batches(shapes, 2)))


# --------------------------------------------------------------------------- levels
@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3"])
def test_the_level_table_names_the_levels_the_detectors_return(arch, backbone):
    built = build_detector(arch, backbone, 4, 64, 64, fpn_channels=8)
    assert fpn_level_names(arch, backbone) == list(fpn_level_channels(built))


@pytest.mark.parametrize("kind,arch", sorted(REFERENCE_LEVELS))
def test_a_recipe_resolves_the_reference_levels_of_its_kind_and_detector(tmp_path, kind, arch):
    recipe = student_recipe(tmp_path, arch, {"kind": kind})
    assert recipe.method.feature.levels == REFERENCE_LEVELS[kind, arch]
    again = student_recipe(tmp_path, arch, {"kind": kind}, ["method.feature.levels=all"])
    assert again.method.feature.levels == "all"  # the old behaviour, by its option


def test_the_method_distils_exactly_the_reference_levels(batch):
    """PKD on Faster R-CNN: the term is the sum over P2-P5 of pkd_loss, computed here level by level (with pool
    included the sum would differ: pool's term is positive for two different networks)."""
    torch.manual_seed(0)
    teacher, student = detector("fasterrcnn", 8, norm="frozen").eval(), detector("fasterrcnn", 8, norm="frozen")
    method = StructuralKD(student, teacher, SKDSettings(feature={"kind": "pkd", "weight": 1.0}))
    assert method.levels == ["0", "1", "2", "3"]
    term = method(batch, torch.Generator().manual_seed(0)).terms["feat_pkd"]
    with torch.no_grad():
        s_levels, t_levels = fpn_levels(student, batch[0]), fpn_levels(teacher, batch[0])
    per_level = {name: pkd_loss(s_levels[name], t_levels[name]).item() for name in ALL_FASTER}
    assert term.item() == pytest.approx(sum(per_level[name] for name in ["0", "1", "2", "3"]), rel=1e-5)
    assert per_level["pool"] > 1e-3  # so leaving pool in would show
    every = StructuralKD(student, teacher, SKDSettings(feature={"kind": "pkd", "weight": 1.0, "levels": "all"}))
    assert every(batch, torch.Generator().manual_seed(0)).terms["feat_pkd"].item() == pytest.approx(
        sum(per_level.values()), rel=1e-5)


def test_a_levels_list_must_name_levels_of_the_detector(tmp_path):
    with pytest.raises(KdlabError) as error:
        student_recipe(tmp_path, "fasterrcnn", {"kind": "pkd", "levels": ["0", "p7"]})
    assert "['p7']" in str(error.value) and "\n" not in str(error.value)
    chosen = student_recipe(tmp_path, "fasterrcnn", {"kind": "pkd", "levels": ["1", "pool"]})
    assert chosen.method.feature.levels == ["1", "pool"]


# --------------------------------------------------------------------------- init from the teacher
def _neck_and_heads_equal(student: nn.Module, teacher: nn.Module) -> tuple[bool, bool]:
    """(every non-body entry equal to the teacher's, every backbone.body parameter equal to the teacher's)."""
    s_state, t_state = student.state_dict(), teacher.state_dict()
    rest = all(torch.equal(s_state[name], value) for name, value in t_state.items()
               if not name.startswith("backbone.body."))
    body = all(torch.equal(s_state[name], value) for name, value in t_state.items()
               if name.startswith("backbone.body.") and value.is_floating_point() and value.dim() > 1)
    return rest, body


@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
@pytest.mark.parametrize("kind", ["fgd", "mgd", "pkd", "cwd", "ssim"])
def test_init_from_teacher_copies_the_neck_and_heads_not_the_backbone(arch, kind):
    torch.manual_seed(0)
    teacher, student = detector(arch, 8).eval(), detector(arch, 8)
    teacher_before = {name: value.clone() for name, value in teacher.state_dict().items()}
    method = StructuralKD(student, teacher, SKDSettings(feature={"kind": kind}))
    rest, body = _neck_and_heads_equal(student, teacher)
    assert rest == ((kind, arch) in INHERITS) and not body
    assert method.feature.init_from_teacher == ((kind, arch) in INHERITS)
    # the teacher is untouched and the copies are the student's own tensors
    assert all(torch.equal(teacher.state_dict()[name], value) for name, value in teacher_before.items())
    if rest:
        with torch.no_grad():
            student.backbone.fpn.layer_blocks[0][0].weight.add_(1.0)
        assert not torch.equal(student.backbone.fpn.layer_blocks[0][0].weight,
                               teacher.backbone.fpn.layer_blocks[0][0].weight)
        assert {name for name in method.inherited} == {name for name in teacher.state_dict()
                                                       if not name.startswith("backbone.body.")}
        assert any(name.startswith(("rpn.", "roi_heads.", "head.")) for name in method.inherited)


def test_init_from_teacher_is_an_option_both_ways():
    torch.manual_seed(0)
    teacher = detector("fasterrcnn", 8).eval()
    student = detector("fasterrcnn", 8)
    StructuralKD(student, teacher, SKDSettings(feature={"kind": "fgd", "init_from_teacher": False}))  # old kdlab
    assert _neck_and_heads_equal(student, teacher) == (False, False)
    StructuralKD(student, teacher, SKDSettings(feature={"kind": "ssim", "init_from_teacher": True}))
    assert _neck_and_heads_equal(student, teacher) == (True, False)
    control = detector("fasterrcnn", 8)  # kind none runs no teacher forward, yet the initialisation alone applies
    method = StructuralKD(control, teacher, SKDSettings(feature={"kind": "none", "init_from_teacher": True}))
    assert _neck_and_heads_equal(control, teacher) == (True, False) and not method.distills


def test_init_from_teacher_refuses_a_teacher_whose_shapes_differ():
    torch.manual_seed(0)
    teacher, student = detector("fasterrcnn", 16).eval(), detector("fasterrcnn", 8)
    before = {name: value.clone() for name, value in student.state_dict().items()}
    feature = {"kind": "fgd", "adapter": True, "init_from_teacher": True}
    with pytest.raises(KdlabError) as error:
        StructuralKD(student, teacher, SKDSettings(feature=feature))
    message = str(error.value)
    assert "\n" not in message and "init_from_teacher: false" in message and "[16, 64, 1, 1]" in message
    assert all(torch.equal(student.state_dict()[name], value) for name, value in before.items())  # nothing copied
    StructuralKD(student, teacher, SKDSettings(feature={**feature, "init_from_teacher": False}))  # the way out


def test_init_from_teacher_needs_a_teacher(tmp_path):
    teacher, _ = write_recipes(tmp_path, "tiny-ref", {"kind": "ssim"})
    with pytest.raises(KdlabError, match="init_from_teacher: true needs a teacher"):
        load_recipe(teacher, ["method.feature.init_from_teacher=true"])
    assert load_recipe(teacher).method.feature.init_from_teacher is False


# --------------------------------------------------------------------------- MGD mask ratio, FGD weights
@pytest.mark.parametrize("arch,ratio", [("fasterrcnn", 0.45), ("retinanet", 0.65)])
def test_mgd_mask_ratio_default_is_the_authors_per_detector(tmp_path, batch, monkeypatch, arch, ratio):
    recipe = student_recipe(tmp_path, arch, {"kind": "mgd"})
    assert recipe.method.feature.mgd.mask_ratio == ratio
    assert student_recipe(tmp_path, arch, {"kind": "mgd", "mgd": {"mask_ratio": 0.65}}).method.feature.mgd.mask_ratio \
        == 0.65  # kdlab's old value for both, by its option
    used = []
    original = multilevel_module.mgd_mask
    monkeypatch.setattr(multilevel_module, "mgd_mask", lambda like, r, rng: used.append(r) or original(like, r, rng))
    torch.manual_seed(0)
    method = StructuralKD(detector(arch, 8), detector(arch, 8).eval(), SKDSettings(feature={"kind": "mgd"}))
    method(batch, torch.Generator().manual_seed(0))
    assert used and set(used) == {ratio}


@pytest.mark.parametrize("arch,weights", [
    ("fasterrcnn", (0.00005, 0.000025, 0.00005, 0.0000005)),  # fgd_faster_rcnn_r101_fpn_2x_distill_...
    ("retinanet", (0.001, 0.0005, 0.0005, 0.000005)),  # fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco
])
def test_fgd_weights_default_to_the_authors_config_of_the_detector(tmp_path, batch, monkeypatch, arch, weights):
    names = ("alpha_fgd", "beta_fgd", "gamma_fgd", "lambda_fgd")
    fgd = student_recipe(tmp_path, arch, {"kind": "fgd"}).method.feature.fgd
    assert tuple(getattr(fgd, name) for name in names) == weights
    old = {"alpha_fgd": 0.001, "beta_fgd": 0.0005, "gamma_fgd": 0.0005, "lambda_fgd": 0.000005}
    kept = student_recipe(tmp_path, arch, {"kind": "fgd", "fgd": old}).method.feature.fgd
    assert tuple(getattr(kept, name) for name in names) == tuple(old.values())  # kdlab's old values, by option
    seen = []
    original = multilevel_module.fgd_loss
    monkeypatch.setattr(multilevel_module, "fgd_loss",
                        lambda *args, **options: seen.append(options) or original(*args, **options))
    torch.manual_seed(0)
    method = StructuralKD(detector(arch, 8), detector(arch, 8).eval(), SKDSettings(feature={"kind": "fgd"}))
    method(batch, torch.Generator().manual_seed(0))
    assert seen and all(tuple(options[name] for name in names) == weights for options in seen)


# --------------------------------------------------------------------------- gradient clipping
@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
@pytest.mark.parametrize("kind,clip", [("mgd", 35.0), ("fgd", 35.0), ("pkd", None), ("cwd", None), ("ssim", None),
                                       ("none", None)])
def test_grad_clip_reference_is_35_for_mgd_and_fgd_students(tmp_path, arch, kind, clip):
    assert student_recipe(tmp_path, arch, {"kind": kind}).train.grad_clip == clip
    assert student_recipe(tmp_path, arch, {"kind": kind}, ["train.grad_clip=null"]).train.grad_clip is None
    assert student_recipe(tmp_path, arch, {"kind": kind}, ["train.grad_clip=5"]).train.grad_clip == 5.0


def test_teachers_never_clip_by_default(tmp_path):
    teacher, _ = write_recipes(tmp_path, "tiny-ref", {"kind": "fgd"})
    assert load_recipe(teacher).train.grad_clip is None


def test_grad_clip_must_be_positive(tmp_path):
    with pytest.raises(KdlabError, match="grad_clip"):
        student_recipe(tmp_path, "fasterrcnn", {"kind": "fgd"}, ["train.grad_clip=0"])


class Linear(nn.Module):
    """loss = 3 w0 + 4 w1: the gradient is (3, 4), of norm 5, whatever w is."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, batch, generator):
        return StepResult(loss=(self.w * torch.tensor([3.0, 4.0])).sum())


@pytest.mark.parametrize("max_norm,moved", [(None, (3.0, 4.0)), (10.0, (3.0, 4.0)), (1.0, (0.6, 0.8)),
                                            (2.5, (1.5, 2.0))])
def test_clipping_bounds_the_gradient_norm_of_a_step(max_norm, moved):
    model = Linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    StepPrecision("fp32", torch.device("cpu")).backward_step(model(None, None).loss, optimizer, max_norm)
    assert model.w.grad.norm().item() == pytest.approx(min(5.0, max_norm or 5.0), rel=1e-5)
    assert (-model.w.detach()).tolist() == pytest.approx(list(moved), rel=1e-5)


@pytest.mark.parametrize("grad_clip,moved", [(None, (3.0, 4.0)), (1.0, (0.6, 0.8))])
def test_the_engine_clips_with_train_grad_clip(tmp_path, grad_clip, moved):
    model = Linear()
    source = DataSource(batches=lambda generator: iter([0]), batches_per_epoch=1, batch_size=lambda batch: 1)
    spec = TrainSpec(epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", grad_clip=grad_clip)
    fit(model, source, spec, seed=0, run_dir=tmp_path, validate=None, select="last", export_best=lambda path: None)
    assert (-model.w.detach()).tolist() == pytest.approx(list(moved), rel=1e-5)


# --------------------------------------------------------------------------- the resolved recipe
def test_the_resolved_recipe_records_the_values_used_and_keys_the_same(tmp_path):
    import yaml

    from kdlab.config.recipe import validate_recipe

    recipe = student_recipe(tmp_path, "fasterrcnn", {"kind": "fgd"})
    written = yaml.safe_load(recipe.to_yaml())
    assert written["method"]["feature"]["levels"] == ["0", "1", "2", "3"]
    assert written["method"]["feature"]["init_from_teacher"] is True
    assert written["method"]["feature"]["fgd"]["alpha_fgd"] == 0.00005 and written["train"]["grad_clip"] == 35.0
    assert validate_recipe(written).key("t") == recipe.key("t")
