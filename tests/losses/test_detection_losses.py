"""The detection-distillation peers of Structural KD (PKD, CWD, MGD) on FPN levels.

Each loss is checked against values computed independently (numpy correlation coefficients and softmaxes, a
hand-built MGD mask and generator), then through the structural-KD step on tiny Faster R-CNN and RetinaNet
detectors: gradients reach the student, its adapters and MGD generators and never the teacher, on every FPN
level (at 64 px these include 2 x 2 and 1 x 1 maps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.config.methods.skd import SKDSettings
from kdlab.losses.cwd import cwd_loss
from kdlab.losses.mgd import mgd_generator, mgd_loss, mgd_mask
from kdlab.losses.multilevel import multilevel_feature_loss
from kdlab.losses.pkd import pkd_loss
from kdlab.methods.skd import StructuralKD
from kdlab.models.detection import fpn_levels
from tests.helpers.detection import detector, write_recipes

PEERS = ("pkd", "cwd", "mgd")


def maps(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator)


# --------------------------------------------------------------------------- PKD
def test_pkd_is_one_minus_pearson_per_channel_over_batch_and_positions():
    student, teacher = maps(2, 3, 4, 5)
    s, t = student.double().numpy(), teacher.double().numpy()
    n = 2 * 4 * 5
    expected = np.mean([(n - 1) / n * (1 - np.corrcoef(s[:, c].ravel(), t[:, c].ravel())[0, 1])
                        for c in range(3)])
    assert pkd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-4)


def test_pkd_sample_channel_correlates_each_map_alone():
    student, teacher = maps(2, 3, 4, 5, seed=1)
    s, t = student.double().numpy(), teacher.double().numpy()
    n = 4 * 5
    expected = np.mean([(n - 1) / n * (1 - np.corrcoef(s[b, c].ravel(), t[b, c].ravel())[0, 1])
                        for b in range(2) for c in range(3)])
    assert pkd_loss(student, teacher, "sample_channel").item() == pytest.approx(expected, rel=1e-4)


def test_pkd_ignores_scale_and_offset_and_two_values_have_hand_values():
    _, teacher = maps(2, 3, 4, 4, seed=2)
    scale = torch.tensor([0.1, 5.0, 30.0]).view(1, 3, 1, 1)
    assert pkd_loss(teacher * scale + 7.0, teacher).item() < 1e-6  # r = 1 per channel
    assert pkd_loss(-teacher, teacher).item() == pytest.approx(2 * (32 - 1) / 32, rel=1e-4)  # r = -1
    # two values per channel, anti-correlated (r = -1): (n - 1) / n * (1 - r) = 1 / 2 * 2 = 1
    student = torch.tensor([[[[0.0, 1.0]]]])
    assert pkd_loss(student, 1 - student).item() == pytest.approx(1.0, rel=1e-5)


# --------------------------------------------------------------------------- CWD
def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_cwd_hand_value_on_two_positions():
    # teacher softmax (1/4, 3/4), student (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2)
    teacher = torch.tensor([[[[0.0, math.log(3.0)]]]])
    student = torch.zeros(1, 1, 1, 2)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert cwd_loss(student, teacher).item() == pytest.approx(kl, rel=1e-6)
    # tau = 2 with the teacher doubled gives the same softmaxes: the loss is tau^2 = 4 times the KL
    assert cwd_loss(student, 2 * teacher, tau=2.0).item() == pytest.approx(4 * kl, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_is_tau_squared_kl_of_spatial_softmaxes_averaged_over_samples_and_channels(tau):
    student, teacher = maps(2, 3, 3, 4, seed=3)
    s, t = student.double().numpy(), teacher.double().numpy()
    kls = []
    for b in range(2):
        for c in range(3):
            p_t, p_s = softmax(t[b, c].ravel() / tau), softmax(s[b, c].ravel() / tau)
            kls.append(np.sum(p_t * np.log(p_t / p_s)))
    assert cwd_loss(student, teacher, tau).item() == pytest.approx(tau**2 * np.mean(kls), rel=1e-5)


# --------------------------------------------------------------------------- MGD
def test_mgd_mask_ratio_is_respected_on_average_and_shared_by_channels():
    like = torch.zeros(64, 16, 32, 32)
    mask = mgd_mask(like, 0.65, torch.Generator().manual_seed(0))
    assert mask.shape == (64, 1, 32, 32)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert 1 - mask.mean().item() == pytest.approx(0.65, abs=0.005)  # 65 536 draws: std ~0.002
    assert 1 - mgd_mask(like, 0.2, torch.Generator().manual_seed(1)).mean().item() == pytest.approx(0.2, abs=0.005)
    again = mgd_mask(like, 0.65, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # a pure function of the generator's state: exact resume


def relu_generator(channels: int) -> nn.Module:
    """G with identity kernels and zero biases: G(x) = relu(x), so the loss can be written out by hand."""
    generator = mgd_generator(channels)
    with torch.no_grad():
        for conv in (generator[0], generator[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(channels):
                conv.weight[c, c, 1, 1] = 1.0
    return generator


def test_mgd_loss_is_summed_squared_error_of_the_regenerated_masked_map_per_image():
    student, teacher = maps(3, 4, 5, 6, seed=4)
    # the mask by hand, from the same generator state: masked (0) where u > 1 - 0.65
    uniform = torch.rand((3, 1, 5, 6), generator=torch.Generator().manual_seed(9)).numpy()
    keep = (uniform <= 0.35).astype(np.float64)
    s, t = student.double().numpy(), teacher.double().numpy()
    expected = np.sum((np.maximum(s * keep, 0) - t) ** 2) / 3
    mask = mgd_mask(student, 0.65, torch.Generator().manual_seed(9))
    assert mgd_loss(student, teacher, relu_generator(4), mask).item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- every level, gradients
@pytest.mark.parametrize("kind", PEERS)
@pytest.mark.parametrize("shape", [(2, 4, 1, 1), (1, 4, 1, 1), (2, 4, 2, 2), (1, 4, 2, 2), (2, 4, 8, 6)])
def test_each_peer_is_finite_with_gradients_on_tiny_levels(kind, shape):
    student, teacher = maps(*shape, seed=5)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    adapters = nn.ModuleDict({"0": nn.Conv2d(4, 4, 1)})
    generators = nn.ModuleDict({"0": mgd_generator(4)}) if kind == "mgd" else None
    loss = multilevel_feature_loss({"0": student}, {"0": teacher}, kind=kind, adapters=adapters,
                                   generators=generators, rng=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert teacher.grad is None
    assert torch.isfinite(student.grad).all() and torch.isfinite(adapters["0"].weight.grad).all()
    if kind == "mgd":
        assert torch.isfinite(generators["0"][0].weight.grad).all()
    n, _, h, w = shape
    # a signal exists unless a channel has one value (pkd: one sample of a 1 x 1 map; cwd: any 1 x 1 map)
    if (kind == "pkd" and n * h * w > 1) or (kind == "cwd" and h * w > 1):
        assert student.grad.abs().sum() > 0
    if kind == "cwd" and h * w == 1:
        assert loss.item() == 0.0


@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
@pytest.mark.parametrize("kind", PEERS)
@pytest.mark.parametrize("adapter", [False, True])
def test_structural_kd_step_trains_student_adapters_and_generators_never_the_teacher(batch, arch, kind, adapter):
    torch.manual_seed(0)
    teacher = detector(arch, 16 if adapter else 8).eval()
    student = detector(arch, 8)
    # every level, and FPN widths that differ (the adapter): kdlab's old behaviour, reached by its options
    feature = {"kind": kind, "adapter": adapter, "weight": 1.0, "levels": "all", "init_from_teacher": False}
    method = StructuralKD(student, teacher, SKDSettings(feature=feature))
    method.train()
    levels = {"fasterrcnn": {"0", "1", "2", "3", "pool"}, "retinanet": {"0", "1", "2", "p6", "p7"}}[arch]
    assert set(method.generators) == (levels if kind == "mgd" else set())
    assert set(method.adapters) == (levels if adapter else set())
    assert all(key.startswith(("student.", "adapters.", "generators.")) for key in method.state_dict())

    with torch.no_grad():
        captured = {name: tuple(level.shape[-2:]) for name, level in fpn_levels(teacher, batch[0]).items()}
    assert (1, 1) in captured.values() and (2, 2) in captured.values()  # the smallest levels are included

    result = method.training_step(batch, torch.Generator().manual_seed(0))
    term = result.terms[f"feat_{kind}"]
    assert torch.isfinite(term) and term.item() > 0
    result.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.backbone.fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0
    for name in levels:
        if adapter:
            assert torch.isfinite(method.adapters[name].weight.grad).all(), name
        if kind == "mgd":
            assert method.generators[name][2].weight.grad.abs().sum() > 0, name


def test_mgd_step_is_a_function_of_the_engine_generator(batch):
    torch.manual_seed(0)
    # frozen BN: no statistics change between the calls; RetinaNet's losses draw no random samples
    teacher, student = detector("retinanet", 8, norm="frozen").eval(), detector("retinanet", 8, norm="frozen")
    method = StructuralKD(student, teacher, SKDSettings(feature={"kind": "mgd", "weight": 1.0}))
    method.train()
    first = method(batch, torch.Generator().manual_seed(3)).terms["feat_mgd"].item()
    second = method(batch, torch.Generator().manual_seed(3)).terms["feat_mgd"].item()
    other = method(batch, torch.Generator().manual_seed(4)).terms["feat_mgd"].item()
    assert first == second and first != other


def test_peer_options_belong_to_their_kind():
    assert SKDSettings(feature={"kind": "cwd"}).feature.cwd.tau == 1.0
    assert SKDSettings(feature={"kind": "mgd"}).feature.mgd.mask_ratio == "reference"  # per detector: test_references
    assert SKDSettings(feature={"kind": "pkd"}).feature.pkd.granularity == "channel"
    other = SKDSettings(feature={"kind": "ssim", "cwd": {"tau": 3.0}}).feature  # changes nothing for ssim
    assert other.cwd is None and other == SKDSettings(feature={"kind": "ssim"}).feature


# --------------------------------------------------------------------------- lambda per kind, on validation
class UnreadableSplit:
    """A test split whose images, targets and selections fail on any use: tuning must never read them. Its
    size stays readable (the recipe's size checks count it; a count says nothing about the images)."""

    def __init__(self, size: int):
        self.size = size

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read during tuning (.{name})")

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        raise AssertionError("the test split was read during tuning ([])")

    def __iter__(self):
        raise AssertionError("the test split was read during tuning (iter)")


@pytest.fixture(scope="module")
def tiny_recipes(tmp_path_factory):
    from kdlab.config.recipe import load_recipe
    from kdlab.runs.run import run_recipe

    root = tmp_path_factory.mktemp("tune")
    teacher, student = write_recipes(root, "tiny-student", {"kind": "ssim"})
    run_recipe(load_recipe(teacher))  # the teacher exists (and was tested) before any tuning
    return root, student


def test_tune_chooses_lambda_per_kind_on_validation_without_reading_the_test_split(tiny_recipes, monkeypatch):
    import csv
    from dataclasses import replace

    from typer.testing import CliRunner

    from kdlab.cli.main import app
    from kdlab.tasks import detection

    root, student = tiny_recipes
    original = detection.load_data
    loads = []

    def load_data(recipe):
        data = original(recipe)
        loads.append(recipe.eval.split)
        return replace(data, test=UnreadableSplit(len(data.test))) if recipe.eval.split == "val" else data

    monkeypatch.setattr(detection, "load_data", load_data)
    out = root / "ablations"
    result = CliRunner().invoke(app, [
        "ablate", str(student), "--grid", "method.feature.kind=none,l2", "--tune", "method.feature.weight=0.5,50",
        "--tune", "method.feature.weight[kind=none]=1", "--tune-val-size", "4", "--seeds", "0,1",
        "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert loads.count("val") >= 3 and loads.count("test") >= 4  # 3 tuning runs; 2 cells x 2 seeds

    with open(out / "tiny-student-grid-method.feature.kind-method.feature.weight-val.csv", newline="") as stream:
        val_rows = list(csv.DictReader(stream))
    assert [row["cell"] for row in val_rows] == ["kind=none,weight=1", "kind=l2,weight=0.5", "kind=l2,weight=50"]
    assert all(row["eval_split"] == "val" and row["eval_n"] == "4" and row["seed"] == "0" for row in val_rows)
    scores = {row["cell"]: float(row["AP"]) for row in val_rows}
    best_l2 = "0.5" if scores["kind=l2,weight=0.5"] >= scores["kind=l2,weight=50"] else "50"

    tuned = out / "tiny-student-grid-method.feature.kind-tuned.csv"
    with open(tuned, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {(row["cell"], row["seed"]) for row in rows} == {(c, s) for c in ("kind=none", "kind=l2") for s in "01"}
    assert all(row["eval_split"] == "test" and row["eval_n"] == "8" for row in rows)
    assert {row["cell"]: row["tuned"] for row in rows} == {"kind=none": "weight=1", "kind=l2": f"weight={best_l2}"}
    markdown = tuned.with_suffix(".md").read_text()
    assert "| tuned |" in markdown and "never on the test split" in markdown and "-val.csv" in markdown
    weights = {json_weight(row["run_dir"]) for row in rows if row["cell"] == "kind=l2"}
    assert weights == {float(best_l2)}  # the seeds ran with the chosen lambda


def test_tune_from_reuses_another_tuning_table_without_validation_runs(tiny_recipes, monkeypatch):
    """RetinaNet reuses Faster R-CNN's choice: with --tune-from, the value per cell comes from that table (here a
    hand-written one whose best l2 value is the larger), and no validation run is made."""
    import csv

    from typer.testing import CliRunner

    from kdlab.cli.main import app
    from kdlab.tasks import detection

    root, student = tiny_recipes
    chosen_elsewhere = root / "other-detector-val.csv"
    chosen_elsewhere.write_text('cell,seed,AP,AP50\n"kind=none,weight=1",0,0.10,0.3\n'
                                '"kind=l2,weight=0.5",0,0.20,0.9\n"kind=l2,weight=50",0,0.30,0.1\n')
    original, splits = detection.load_data, []
    monkeypatch.setattr(detection, "load_data", lambda recipe: splits.append(recipe.eval.split) or original(recipe))
    out = root / "ablations-from"

    def ablate(values: str = "0.5,50", *extra: str):
        return CliRunner().invoke(app, [
            "ablate", str(student), "--grid", "method.feature.kind=none,l2", "--tune", f"method.feature.weight={values}",
            "--tune", "method.feature.weight[kind=none]=1", "--seeds", "0", "--threads", "1", "--out", str(out),
            "--tune-from", str(chosen_elsewhere), *extra])

    result = ablate()
    assert result.exit_code == 0, result.output
    assert "val" not in splits
    with open(out / "tiny-student-grid-method.feature.kind-tuned.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {row["cell"]: row["tuned"] for row in rows} == {"kind=none": "weight=1", "kind=l2": "weight=50"}
    assert {row["tuned_on"] for row in rows} == {"other-detector-val.csv"}
    assert {json_weight(row["run_dir"]) for row in rows if row["cell"] == "kind=l2"} == {50.0}

    splits.clear()  # values the table was not made with, or a metric it lacks: one line, exit 2, no training
    for result, message in ((ablate("0.5,5"), "no row for kind=l2,weight=5:"),
                            (ablate("0.5,50", "--tune-metric", "APs"), "no APs for cell"),
                            (ablate("0.5,50", "--tune-val-size", "4"), "drop --tune-val-size")):
        assert result.exit_code == 2 and message in result.output, result.output
    assert splits == []


def json_weight(run_dir: str) -> float:
    from pathlib import Path

    import yaml

    return yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text())["method"]["feature"]["weight"]


def test_tune_mistakes_are_one_line_errors(tiny_recipes):
    from kdlab.ablation.grid import plan_ablation
    from kdlab.ablation.tuning import parse_tune, tuning_plan
    from kdlab.errors import KdlabError

    _root, student = tiny_recipes
    plan = plan_ablation(str(student), components=False, blocks=None, cumulative=False,
                         grid=["method.feature.kind=none,l2"], seeds=[0], attacks=[], overrides=[], name=None)
    with pytest.raises(KdlabError, match="--tune-val-size"):
        tuning_plan(plan, parse_tune(["method.feature.weight=1,2"]), 0, None)
    with pytest.raises(KdlabError, match="no such cell"):
        tuning_plan(plan, parse_tune(["method.feature.weight=1,2", "method.feature.weight[kind=pkd]=1"]), 0, 4)
    with pytest.raises(KdlabError, match="one key"):
        parse_tune(["method.feature.weight=1,2", "train.lr=0.1"])
    with pytest.raises(KdlabError, match="KEY=V1,V2,V3"):
        parse_tune(["method.feature.weight"])


# --------------------------------------------------------------------------- kdlab inspect on detectors
@pytest.mark.parametrize("recipe,levels", [
    # Faster R-CNN: P2-P5 at strides 4-32 and the max-pool level at 64, on 192 x 256 images
    ("recipes/skd_bccd_cpu.yaml", {"0": (48, 64), "1": (24, 32), "2": (12, 16), "3": (6, 8), "pool": (3, 4)}),
    # RetinaNet: P3-P5 at strides 8-32, P6 and P7 by stride-2 3x3 convolutions (padding 1): 3 x 4 -> 2 x 2
    ("recipes/skd_bccd_retinanet_cpu.yaml", {"0": (24, 32), "1": (12, 16), "2": (6, 8), "p6": (3, 4),
                                             "p7": (2, 2)}),
])
def test_inspect_lists_the_fpn_levels_of_student_and_teacher(recipe, levels):
    from typer.testing import CliRunner

    from kdlab.check.inspect import recipe_view
    from kdlab.cli.main import app

    result = CliRunner().invoke(app, ["inspect", recipe])
    assert result.exit_code == 0, result.output
    view = recipe_view(recipe, [], 10, 32)
    assert [row["level"] for row in view.rows] == list(levels)
    for row in view.rows:
        height, width = levels[row["level"]]
        assert row["s shape"] == row["t shape"] == f"1×64×{height}×{width}"
        assert row["s ch"] == row["t ch"] == 64
    assert "resnet18-FPN" in view.title and "resnet34-FPN" in view.title
