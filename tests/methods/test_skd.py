"""Structural KD for detection: the method's terms and gradients, and the detection task end to end.

Everything is tiny (64 px synthetic shapes, 8-channel FPNs, a few images) so the file runs in well under a
minute on one core; the point is wiring and exactness (resume, eval rows, refusals), not accuracy.
"""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from kdlab.config.methods.skd import SKDSettings
from kdlab.config.recipe import load_recipe
from kdlab.data.detection import iterate_detection_batches, make_synthetic_shapes
from kdlab.errors import KdlabError
from kdlab.methods.skd import StructuralKD
from kdlab.models.detection import build_detector
from kdlab.runs.run import run_recipe
from tests.helpers.detection import NUM_CLASSES, SIZE, TINY, write_recipes
from tests.helpers.resume import best_weights_equal, interrupted_then_resumed
from tests.helpers.ssim_reference import reference_ssim_maps

FASTER_RCNN_LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def detector(channels: int = 8, backbone: str = "resnet18", **options) -> torch.nn.Module:
    return build_detector("fasterrcnn", backbone, NUM_CLASSES, SIZE, SIZE, fpn_channels=channels, **TINY, **options)


def method_spec(kind: str = "ssim", adapter: bool = False, weight: float = 1.0) -> SKDSettings:
    return SKDSettings(feature={"kind": kind, "adapter": adapter, "weight": weight})


@pytest.fixture(scope="module")
def batch():
    shapes = make_synthetic_shapes(2, image_size=SIZE, seed=0)
    return next(iter(iterate_detection_batches(shapes, 2)))


class CallCounter:
    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *_):
        self.calls += 1


# --------------------------------------------------------------------------- the method
def test_gradients_reach_student_and_adapter_never_the_teacher(batch):
    torch.manual_seed(0)
    teacher, student = detector(16).eval(), detector(8)  # widths differ: the 1x1 adapters bridge them
    method = StructuralKD(student, teacher, method_spec("ssim", adapter=True))
    method.train()
    assert not teacher.training and student.training
    assert set(method.adapters) == {"0", "1", "2", "3", "pool"}
    assert all(name.startswith(("student.", "adapters.")) for name, _ in method.named_parameters())
    assert all(key.startswith(("student.", "adapters.")) for key in method.state_dict())

    result = method.training_step(batch, torch.Generator().manual_seed(0))
    assert set(result.terms) == FASTER_RCNN_LOSSES | {"feat_ssim"}
    result.loss.backward()

    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for name in ("0", "1", "2", "3"):  # at 64 px "pool" is 1 x 1: min-max maps it to a constant (no signal)
        grad = method.adapters[name].weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    fpn_grad = student.backbone.fpn.layer_blocks[0][0].weight.grad
    stem_grad = student.backbone.body.conv1.weight.grad
    assert fpn_grad is not None and fpn_grad.abs().sum() > 0
    assert stem_grad is not None and stem_grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["none", "l1", "l2", "ssim"])
def test_each_kind_gives_exactly_its_terms(batch, kind):
    torch.manual_seed(0)
    teacher, student = detector().eval(), detector()
    teacher_calls = CallCounter(teacher.backbone)
    method = StructuralKD(student, teacher, method_spec(kind))
    method.train()
    calls_before = teacher_calls.calls  # the compatibility check's dry run is not a training forward
    result = method.training_step(batch, torch.Generator().manual_seed(0))
    expected = FASTER_RCNN_LOSSES | (set() if kind == "none" else {f"feat_{kind}"})
    assert set(result.terms) == expected
    assert teacher_calls.calls - calls_before == (0 if kind == "none" else 1)
    assert (method.teacher is None) == (kind == "none")


def _psi(x: torch.Tensor) -> torch.Tensor:
    """Min-max per (sample, channel) map, written out; ranges below 1e-6 (constant maps) divide by 1e-6."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-6)


def _fpn(model: torch.nn.Module, images) -> dict:
    """FPN levels straight from torchvision's API: the detector's transform, then its backbone (+ FPN)."""
    image_list, _ = model.transform(list(images))
    return model.backbone(image_list.tensors)


def reference_feature_term(student, teacher, images, kind: str, weight: float, form: str) -> float:
    """lambda * sum over FPN levels of the per-level loss, from torchvision features and plain formulas."""
    with torch.no_grad():
        student_levels, teacher_levels = _fpn(student, images), _fpn(teacher, images)
    total = 0.0
    for name, teacher_level in teacher_levels.items():
        s, t = _psi(student_levels[name]).double(), _psi(teacher_level).double()
        if kind == "l1":
            total += (s - t).abs().mean().item()
        elif kind == "l2":
            total += ((s - t) ** 2).mean().item()
        else:  # window: the largest odd size <= min(H, W), at most 11, sigma scaled with it
            side = min(s.shape[-2:])
            taps = min(11, side if side % 2 else side - 1)
            maps = [
                reference_ssim_maps(s[b, c].tolist(), t[b, c].tolist(), taps, 1.5 * taps / 11)["lcs"]
                for b in range(s.shape[0])
                for c in range(s.shape[1])
            ]
            mean_ssim = sum(sum(map(sum, m)) for m in maps) / (len(maps) * len(maps[0]) * len(maps[0][0]))
            total += (1 - mean_ssim) / (2 if form == "halved" else 1)
    return weight * total


@pytest.mark.parametrize(
    "kind,weight,form",
    [("ssim", None, "halved"), ("ssim", 3.0, "one_minus"), ("l1", None, "halved"), ("l2", 3.0, "halved"),
     ("none", None, "halved")],
)
def test_loss_is_the_detectors_losses_plus_lambda_times_a_reference_feature_term(batch, kind, weight, form):
    torch.manual_seed(0)
    teacher, student = detector(norm="frozen").eval(), detector(norm="frozen")  # frozen BN: train = eval
    feature = {"kind": kind, "ssim_form": form} | ({} if weight is None else {"weight": weight})
    method = StructuralKD(student, teacher, SKDSettings(feature=feature))
    method.train()
    images, targets = batch
    lam = 2.0 if weight is None else weight  # the default lambda is the paper's, 2
    feature_term = 0.0
    if kind != "none":
        feature_term = reference_feature_term(student, teacher, images, kind, lam, form)
    torch.manual_seed(7)  # the RPN / RoI samplers draw from the global generator: the same draws twice
    detection = student(list(images), copy.deepcopy(targets))
    torch.manual_seed(7)
    result = method.training_step(batch, torch.Generator().manual_seed(0))
    if kind != "none":
        assert result.terms[f"feat_{kind}"].item() == pytest.approx(feature_term, rel=1e-5, abs=1e-6)
    expected = sum(value.item() for value in detection.values()) + feature_term
    assert result.loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_no_teacher_means_detection_losses_only(batch):
    torch.manual_seed(0)
    method = StructuralKD(detector(), None, method_spec("ssim", adapter=True))
    result = method.training_step(batch, torch.Generator().manual_seed(0))
    assert set(result.terms) == FASTER_RCNN_LOSSES and len(method.adapters) == 0


@pytest.mark.parametrize("kind", ["ssim", "l1", "l2"])
def test_feature_term_is_zero_for_an_identical_student(batch, kind):
    # Frozen BN: the student (train mode) computes exactly what the teacher (eval mode) computes.
    torch.manual_seed(0)
    teacher = detector(norm="frozen").eval()
    student = copy.deepcopy(teacher).train()
    method = StructuralKD(student, teacher, method_spec(kind))
    term = method.training_step(batch, torch.Generator().manual_seed(0)).terms[f"feat_{kind}"]
    assert abs(term.item()) < 1e-5
    other = StructuralKD(detector(norm="frozen"), teacher, method_spec(kind))  # a different student: > 0
    assert other.training_step(batch, torch.Generator().manual_seed(0)).terms[f"feat_{kind}"].item() > 1e-3


def test_misaligned_fpn_is_refused_with_the_fix():
    teacher = build_detector("fasterrcnn", "resnet18", NUM_CLASSES, 48, SIZE, fpn_channels=8, **TINY)
    with pytest.raises(KdlabError, match="min_size/max_size") as caught:
        StructuralKD(detector(), teacher, method_spec())
    assert "\n" not in str(caught.value)
    with pytest.raises(KdlabError, match="adapter"):
        StructuralKD(detector(8), detector(16), method_spec())


# --------------------------------------------------------------------------- the task, end to end
@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("skd")
    teacher, student = write_recipes(root, "tiny-det-student", {"kind": "ssim", "weight": 1.0},
                                     teacher_name="tiny-det-teacher", student_epochs=2)
    return root, teacher, student


@pytest.fixture(scope="module")
def straight_run(recipes):
    _root, _teacher, student = recipes
    return run_recipe(load_recipe(student))


def test_detection_run_records_ap_and_resumes_exactly(recipes, straight_run):

    root, _teacher, student = recipes
    summary = json.loads((straight_run.run_dir / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["kind"] == "distill"
    for name in ("AP", "AP50", "AP75"):
        assert 0.0 <= summary[name] <= 100.0
    assert summary["eval_n"] == 8 and summary["train_images"] == 8
    metrics = (straight_run.run_dir / "metrics.csv").read_text()
    assert "feat_ssim" in metrics and "loss_classifier" in metrics
    with open(root / "runs.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["kind"] for row in rows] == ["train", "distill"] and rows[-1]["AP50"] != ""

    other = load_recipe(student, [f"output.dir={root}/runs2", f"output.table={root}/t2.csv"])
    resumed = interrupted_then_resumed(other, stop_epoch=1)
    assert best_weights_equal(straight_run, resumed)
    for name in ("AP", "AP50", "AP75"):
        assert resumed.summary[name] == straight_run.summary[name]
    # the teacher was trained once and reused by both student runs
    assert resumed.summary["teacher"] == straight_run.summary["teacher"]


def test_teacher_with_other_resizing_or_classes_is_refused(recipes, tmp_path):
    from kdlab.models.files import save_model

    _root, _teacher, student = recipes
    options = {"backbone": "resnet18", "min_size": 48, "max_size": SIZE, "fpn_channels": 8, **TINY}
    path = tmp_path / "misaligned.pt"
    save_model(path, build_detector("fasterrcnn", num_classes=NUM_CLASSES, **options), task="detection",
               arch="fasterrcnn", options=options, num_classes=NUM_CLASSES)
    overrides = ["teacher.recipe=null", f"teacher.checkpoint={path}", f"output.dir={tmp_path}/runs"]
    with pytest.raises(KdlabError, match="resize images differently") as caught:
        run_recipe(load_recipe(student, overrides))
    message = str(caught.value)
    assert "\n" not in message and "identical min_size/max_size" in message

    options["min_size"] = SIZE
    save_model(path, build_detector("fasterrcnn", num_classes=3, **options), task="detection",
               arch="fasterrcnn", options=options, num_classes=3)
    with pytest.raises(KdlabError, match="predicts 3 classes but the data has 4"):
        run_recipe(load_recipe(student, overrides))


def test_detection_recipe_mistakes_are_one_line_errors(recipes, tmp_path):
    from kdlab.tasks.detection import build_detection_model

    with pytest.raises(KdlabError, match="min_size and max_size"):
        build_detection_model(load_recipe(recipes[1], ["model.min_size=null"]).trained_model, NUM_CLASSES)
    with pytest.raises(KdlabError, match="method.name: skd"):
        run_recipe(load_recipe(recipes[2], ["method.name=mixacm", f"output.dir={tmp_path}/runs"]))


def test_kdlab_eval_on_a_detection_run_appends_a_coco_ap_row(straight_run, tmp_path):
    from kdlab.cli.main import app
    from kdlab.models.files import file_digest

    out = tmp_path / "eval.csv"
    result = CliRunner().invoke(app, ["eval", str(straight_run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "coco-box-ap" in result.output and "AP50" in result.output
    with open(out, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1
    row = rows[0]
    assert row["attack"] == "coco-box-ap" and row["dataset"] == "synthetic" and row["n"] == "8"
    assert row["checkpoint_sha256"] == file_digest(straight_run.run_dir / "best.pt")
    assert float(row["AP50"]) == pytest.approx(straight_run.summary["AP50"])
    assert row["git_commit"]

    refused = CliRunner().invoke(app, ["eval", str(straight_run.run_dir), "--attack", "pgd", "--eps", "4/255",
                                       "--out", str(out)])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "--attack, --eps apply to classification runs" in refused.output
    with open(out, newline="") as stream:
        assert len(list(csv.DictReader(stream))) == 1  # nothing appended, the earlier row kept


def test_kind_ablation_plans_and_tabulates_ap(recipes, straight_run, tmp_path):
    from kdlab.ablation.execute import run_ablation
    from kdlab.ablation.grid import plan_ablation

    _root, _teacher, student = recipes
    plan = plan_ablation(str(student), components=False, blocks=None, cumulative=False,
                         grid=["method.feature.kind=none,l1,l2,ssim"], seeds=[0], attacks=["pgd"],
                         overrides=["train.epochs=1"], name="skd-tiny")
    kinds = [plan.recipe_for(cell, 0).method.feature.kind for cell in plan.cells]
    assert kinds == ["none", "l1", "l2", "ssim"]
    plan.cells = plan.cells[-1:]  # run one cell (SKD): the others differ only in the term tested above
    table = run_ablation(plan, tmp_path / "ablations", threads=1)
    with open(table, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["cell"] for row in rows] == ["kind=ssim"]
    assert 0.0 <= float(rows[0]["AP"]) <= 100.0 and 0.0 <= float(rows[0]["AP50"]) <= 100.0
    header = table.with_suffix(".md").read_text().splitlines()[4]
    assert "| AP | AP50 | AP75 |" in header
