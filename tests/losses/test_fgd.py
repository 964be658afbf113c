"""FGD (focal and global distillation) as a Structural-KD feature kind.

The loss is checked against a value worked out by hand on a 2 x 2 map and against a plain-Python loop
re-implementation of the authors' ``FeatureLoss`` arithmetic (random maps, several boxes, random context
blocks); the box masks against hand-listed cells on every level of a 64 px batch and against the boxes of a
resized, padded batch as the detector's own transform left them; gradients reach the student, its adapters
and the context blocks, never the teacher; a short fit with ``kind: fgd`` runs, saves the context blocks and
resumes exactly.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from kdlab.config.methods.skd import SKDSettings
from kdlab.losses import multilevel as multilevel_module
from kdlab.losses.fgd import FGDContexts, fgd_loss, fgd_masks
from kdlab.losses.multilevel import multilevel_feature_loss
from kdlab.methods.skd import StructuralKD
from tests.helpers.detection import detector, write_recipes
from tests.helpers.resume import best_weights_equal, interrupted_then_resumed

ALPHA, BETA, GAMMA, LAMBDA, TEMP = 0.001, 0.0005, 0.0005, 0.000005, 0.5
ONLY = {  # one term at a time, weight 1
    "fg": {"alpha_fgd": 1.0, "beta_fgd": 0.0, "gamma_fgd": 0.0, "lambda_fgd": 0.0},
    "bg": {"alpha_fgd": 0.0, "beta_fgd": 1.0, "gamma_fgd": 0.0, "lambda_fgd": 0.0},
    "attention": {"alpha_fgd": 0.0, "beta_fgd": 0.0, "gamma_fgd": 1.0, "lambda_fgd": 0.0},
    "global": {"alpha_fgd": 0.0, "beta_fgd": 0.0, "gamma_fgd": 0.0, "lambda_fgd": 1.0},
}


# --------------------------------------------------------------------------- a value worked out by hand
def test_hand_value_on_a_two_by_two_map():
    # teacher: channel 0 has a 2 at (1, 1), else 0; student: channel 1 has a -1 at (0, 0), else 0
    teacher = torch.zeros(1, 2, 2, 2)
    teacher[0, 0, 1, 1] = 2.0
    student = torch.zeros(1, 2, 2, 2)
    student[0, 1, 0, 0] = -1.0
    # a 4 x 4 image on a 2 x 2 level: the box (2.5, 2.5, 4, 4) -> (1.25, 1.25, 2, 2): rows and columns
    # floor(1.25) = 1 .. ceil(2) = 2, i.e. cell (1, 1) on the map, area 1 / ((2 + 1 - 1) (2 + 1 - 1)) = 1/4
    boxes = [torch.tensor([[2.5, 2.5, 4.0, 4.0]])]
    e = math.e
    # teacher attention, T = 0.5: mean_c |t| = [[0, 0], [0, 1]] -> A^S = 4 softmax(0, 0, 0, 2);
    # mean_hw |t| = (0.5, 0) -> A^C = 2 softmax(1, 0)
    s_t = [4 / (e**2 + 3)] * 3 + [4 * e**2 / (e**2 + 3)]
    c_t = [2 * e / (e + 1), 2 / (e + 1)]
    # student attention: mean_c |s| = [[0.5, 0], [0, 0]] -> A^S = 4 softmax(1, 0, 0, 0);
    # mean_hw |s| = (0, 0.25) -> A^C = 2 softmax(0, 0.5)
    s_s = [4 * e / (e + 3)] + [4 / (e + 3)] * 3
    c_s = [2 / (1 + e**0.5), 2 * e**0.5 / (1 + e**0.5)]
    fg = 1 / 4 * s_t[3] * c_t[0] * (0 - 2) ** 2  # the only foreground cell: channel 0 differs by 2
    bg = 1 / 3 * s_t[0] * c_t[1] * (-1 - 0) ** 2  # 3 background cells, 1/3 each; channel 1 differs at (0, 0)
    attention = sum(abs(a - b) for a, b in zip(c_s, c_t)) + sum(abs(a - b) for a, b in zip(s_s, s_t))
    glob = 2**2 + 1**2  # the context blocks start as the identity (their last conv is zero)
    expected = ALPHA * fg + BETA * bg + GAMMA * attention + LAMBDA * glob
    got = fgd_loss(student, teacher, boxes, (4, 4), FGDContexts(2))  # the defaults are the RetinaNet config's
    assert got.item() == pytest.approx(expected, rel=1e-6)
    for term, value in {"fg": fg, "bg": bg, "attention": attention, "global": glob}.items():
        assert fgd_loss(student, teacher, boxes, (4, 4), FGDContexts(2), **ONLY[term]).item() == pytest.approx(
            value, rel=1e-6), term


# --------------------------------------------------------------------------- a loop re-implementation
def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [v / sum(exps) for v in exps]


def _attention(x, n, c, h, w, temp):
    spatial = _softmax([sum(abs(x[n][k][i][j]) for k in range(c)) / c / temp for i in range(h) for j in range(w)])
    channel = _softmax([sum(abs(x[n][k][i][j]) for i in range(h) for j in range(w)) / (h * w) / temp
                        for k in range(c)])
    return [[h * w * spatial[i * w + j] for j in range(w)] for i in range(h)], [c * v for v in channel]


def _masks(boxes, image_size, h, w):
    """The authors' loop: slices [floor(y1'), ceil(y2')] x [floor(x1'), ceil(x2')], max of 1 / cells."""
    fg = [[0.0] * w for _ in range(h)]
    for x1, y1, x2, y2 in boxes:
        x1, x2 = x1 / image_size[1] * w, x2 / image_size[1] * w
        y1, y2 = y1 / image_size[0] * h, y2 / image_size[0] * h
        wmin, wmax, hmin, hmax = math.floor(x1), math.ceil(x2), math.floor(y1), math.ceil(y2)
        area = 1.0 / (hmax + 1 - hmin) / (wmax + 1 - wmin)
        for i in range(max(hmin, 0), min(hmax + 1, h)):
            for j in range(max(wmin, 0), min(wmax + 1, w)):
                fg[i][j] = max(fg[i][j], area)
    free = sum(1 for i in range(h) for j in range(w) if fg[i][j] == 0)
    bg = [[(1.0 / free if fg[i][j] == 0 else 0.0) for j in range(w)] for i in range(h)]
    return fg, bg


def _gc_block(block, x, n, c, h, w):
    """G(F) = F + transform(context(F)), written out with the block's weights."""
    mask_w, mask_b = block.mask.weight.view(-1).tolist(), block.mask.bias.item()
    logits = [sum(mask_w[k] * x[n][k][i][j] for k in range(c)) + mask_b for i in range(h) for j in range(w)]
    weights = _softmax(logits)
    context = [sum(x[n][k][p // w][p % w] * weights[p] for p in range(h * w)) for k in range(c)]
    conv1, norm, conv2 = block.transform[0], block.transform[1], block.transform[3]
    w1, b1 = conv1.weight.view(c // 2, c).tolist(), conv1.bias.tolist()
    hidden = [sum(w1[o][k] * context[k] for k in range(c)) + b1[o] for o in range(c // 2)]
    mean = sum(hidden) / len(hidden)
    var = sum((v - mean) ** 2 for v in hidden) / len(hidden)
    gamma, beta = norm.weight.view(-1).tolist(), norm.bias.view(-1).tolist()
    hidden = [max(0.0, (v - mean) / math.sqrt(var + norm.eps) * gamma[o] + beta[o]) for o, v in enumerate(hidden)]
    w2, b2 = conv2.weight.view(c, c // 2).tolist(), conv2.bias.tolist()
    add = [sum(w2[k][o] * hidden[o] for o in range(c // 2)) + b2[k] for k in range(c)]
    return [[[x[n][k][i][j] + add[k] for j in range(w)] for i in range(h)] for k in range(c)]


def reference_terms(student, teacher, boxes, image_size, contexts, temp=TEMP):
    s, t = student.double().tolist(), teacher.double().tolist()
    batch, c, h, w = student.shape
    terms = dict.fromkeys(ONLY, 0.0)
    for n in range(batch):
        fg, bg = _masks(boxes[n].tolist(), image_size, h, w)
        spatial_t, channel_t = _attention(t, n, c, h, w, temp)
        spatial_s, channel_s = _attention(s, n, c, h, w, temp)
        g_s, g_t = _gc_block(contexts.student, s, n, c, h, w), _gc_block(contexts.teacher, t, n, c, h, w)
        for k in range(c):
            for i in range(h):
                for j in range(w):
                    error = spatial_t[i][j] * channel_t[k] * (s[n][k][i][j] - t[n][k][i][j]) ** 2
                    terms["fg"] += fg[i][j] * error
                    terms["bg"] += bg[i][j] * error
                    terms["global"] += (g_s[k][i][j] - g_t[k][i][j]) ** 2
        terms["attention"] += sum(abs(a - b) for a, b in zip(channel_s, channel_t))
        terms["attention"] += sum(abs(spatial_s[i][j] - spatial_t[i][j]) for i in range(h) for j in range(w))
    return {name: value / batch for name, value in terms.items()}


def random_contexts(channels: int, seed: int) -> FGDContexts:
    torch.manual_seed(seed)
    contexts = FGDContexts(channels)
    with torch.no_grad():  # away from the identity start, so the global term tests the whole block
        for parameter in contexts.parameters():
            parameter.normal_(0.0, 0.5)
    return contexts


@pytest.mark.parametrize("shape,image_size", [((2, 4, 3, 5), (48, 80)), ((2, 4, 2, 2), (64, 64)),
                                              ((1, 6, 1, 1), (32, 32))])
def test_each_term_matches_a_loop_reimplementation(shape, image_size):
    generator = torch.Generator().manual_seed(sum(shape))
    student, teacher = torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator)
    # overlapping boxes (the smaller one wins where they overlap), one running past the image, an empty image
    boxes = [torch.tensor([[3.0, 5.0, 40.0, 30.0], [10.0, 12.0, 20.0, 19.0], [30.0, 1.0, 200.0, 7.5]]),
             torch.zeros(0, 4)][: shape[0]]
    contexts = random_contexts(shape[1], seed=1)
    expected = reference_terms(student, teacher, boxes, image_size, contexts)
    for term, weights in ONLY.items():
        got = fgd_loss(student, teacher, boxes, image_size, contexts, temp=TEMP, **weights)
        assert got.item() == pytest.approx(expected[term], rel=1e-5, abs=1e-9), term
    total = fgd_loss(student, teacher, boxes, image_size, contexts, temp=0.5)
    weighted = ALPHA * expected["fg"] + BETA * expected["bg"] + GAMMA * expected["attention"]
    assert total.item() == pytest.approx(weighted + LAMBDA * expected["global"], rel=1e-5)
    hot = fgd_loss(student, teacher, boxes, image_size, contexts, temp=2.0, **ONLY["fg"])  # temp is used
    assert hot.item() == pytest.approx(reference_terms(student, teacher, boxes, image_size, contexts, 2.0)["fg"],
                                       rel=1e-5)


# --------------------------------------------------------------------------- masks at each level's scale
def test_masks_follow_the_box_on_every_level_of_a_64_pixel_batch():
    box = [torch.tensor([[8.0, 20.0, 40.0, 30.0]])]  # x 8..40, y 20..30
    # (H = W, rows floor(20 s) .. ceil(30 s), columns floor(8 s) .. ceil(40 s)) with s = H / 64, both ends in
    # side: (first row, last row, first column, last column) covered, then the rows x columns counted
    cells = {16: (5, 8, 2, 10, 4 * 9), 8: (2, 4, 1, 5, 3 * 5), 4: (1, 2, 0, 3, 2 * 4),
             # on the 2 x 2 and 1 x 1 levels the counted rows / columns run one past the map (ceil, both ends in)
             2: (0, 1, 0, 1, 2 * 3), 1: (0, 0, 0, 0, 2 * 2)}
    for side, (top, bottom, left, right, counted) in cells.items():
        fg, bg = fgd_masks(box, (64, 64), (side, side))
        expected = torch.zeros(1, side, side)
        expected[0, top:bottom + 1, left:right + 1] = 1 / counted
        assert torch.allclose(fg, expected), side
        free = side * side - (bottom + 1 - top) * (right + 1 - left)
        assert torch.allclose(bg, (expected == 0).float() / max(free, 1)), side
        assert bg.sum().item() == pytest.approx(1.0 if free else 0.0)
    # a wide image on a square map: x scales by 4/128 (columns 0.25 .. 1.25 -> 0 .. 2), y by 4/64 (rows 1 .. 2)
    fg, _ = fgd_masks(box, (64, 128), (4, 4))
    expected = torch.zeros(1, 4, 4)
    expected[0, 1:3, 0:3] = 1 / (2 * 3)
    assert torch.equal(fg, expected)


def test_the_step_maps_boxes_through_the_detectors_resize_and_padding(batch, monkeypatch):
    # 64 px images resized to 80 px by the detector's transform, then padded to 96 (a multiple of 32): the
    # boxes must be scaled by 80 / 64 and mapped to each level by the level's size over 96, not over 80
    calls = []

    def recording(student, teacher, boxes, image_size, contexts, **options):
        calls.append((tuple(student.shape[-2:]), [b.clone() for b in boxes], image_size))
        return student.sum() * 0

    monkeypatch.setattr(multilevel_module, "fgd_loss", recording)
    torch.manual_seed(0)
    teacher, student = detector("retinanet", 8, resize=80).eval(), detector("retinanet", 8, resize=80)
    method = StructuralKD(student, teacher, SKDSettings(feature={"kind": "fgd", "weight": 1.0}))
    method.train()
    _images, targets = batch
    original = [t["boxes"].clone() for t in targets]
    method(batch, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, t["boxes"]) for a, t in zip(original, targets))  # the batch is untouched
    assert [shape for shape, _, _ in calls] == [(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]  # P3-P7 of 96 px
    for _, boxes, image_size in calls:
        assert image_size == (96, 96)
        for got, source in zip(boxes, original):
            assert torch.allclose(got, source * 80 / 64)
    # on P3 (stride 8 of the padded 96 px batch) the first box of image 0 covers exactly these cells
    x1, y1, x2, y2 = (original[0][0] * 80 / 64).tolist()
    fg, _ = fgd_masks([calls[0][1][0][:1]], (96, 96), (12, 12))
    rows, cols = fg[0].nonzero().unbind(1)
    assert (rows.min().item(), rows.max().item()) == (math.floor(y1 / 8), min(math.ceil(y2 / 8), 11))
    assert (cols.min().item(), cols.max().item()) == (math.floor(x1 / 8), min(math.ceil(x2 / 8), 11))


# --------------------------------------------------------------------------- gradients, every level
@pytest.mark.parametrize("shape", [(2, 4, 1, 1), (1, 4, 1, 1), (2, 4, 2, 2), (1, 4, 2, 2), (2, 4, 6, 5)])
def test_gradients_reach_student_adapter_and_context_blocks_never_the_teacher(shape):
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(shape[0], 6, *shape[2:], generator=generator).requires_grad_(True)
    teacher = torch.randn(*shape, generator=generator).requires_grad_(True)
    adapters = nn.ModuleDict({"p": nn.Conv2d(6, 4, 1)})
    contexts = nn.ModuleDict({"p": FGDContexts(4)})
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 12.0]])] * shape[0]
    loss = multilevel_feature_loss({"p": student}, {"p": teacher}, kind="fgd", adapters=adapters, boxes=boxes,
                                   image_size=(32, 32), contexts=contexts)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert teacher.grad is None
    assert student.grad.abs().sum() > 0 and adapters["p"].weight.grad.abs().sum() > 0
    # the context blocks start as the identity: their last conv gets the first gradient, on both sides
    for side in (contexts["p"].student, contexts["p"].teacher):
        assert side.transform[3].weight.grad.abs().sum() > 0
        assert all(torch.isfinite(p.grad).all() for p in side.parameters())


def test_kind_fgd_needs_boxes_and_context_blocks():
    level = {"p": torch.randn(1, 4, 2, 2)}
    with pytest.raises(ValueError, match="needs boxes, image_size and contexts"):
        multilevel_feature_loss(level, level, kind="fgd")
    with pytest.raises(ValueError, match="at least 2"):
        FGDContexts(1)


@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
@pytest.mark.parametrize("adapter", [False, True])
def test_structural_kd_step_with_fgd_trains_student_adapters_and_contexts_never_the_teacher(batch, arch, adapter):
    torch.manual_seed(0)
    teacher = detector(arch, 16 if adapter else 8).eval()
    student = detector(arch, 8)
    # every level, and FPN widths that differ (the adapter): kdlab's old behaviour, reached by its options
    feature = {"kind": "fgd", "adapter": adapter, "weight": 1.0, "levels": "all", "init_from_teacher": False}
    method = StructuralKD(student, teacher, SKDSettings(feature=feature))
    method.train()
    levels = {"fasterrcnn": {"0", "1", "2", "3", "pool"}, "retinanet": {"0", "1", "2", "p6", "p7"}}[arch]
    assert set(method.contexts) == levels and set(method.generators) == set()
    assert all(key.startswith(("student.", "adapters.", "contexts.")) for key in method.state_dict())
    assert all(context.student.mask.in_channels == (16 if adapter else 8) for context in method.contexts.values())

    result = method.training_step(batch, torch.Generator().manual_seed(0))
    term = result.terms["feat_fgd"]
    assert torch.isfinite(term) and term.item() > 0
    result.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.backbone.fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0
    for name in levels:  # every level, the 2 x 2 and 1 x 1 ones included
        assert method.contexts[name].student.transform[3].weight.grad.abs().sum() > 0, name
        assert method.contexts[name].teacher.transform[3].weight.grad.abs().sum() > 0, name
        if adapter:
            assert method.adapters[name].weight.grad.abs().sum() > 0, name


def test_fgd_term_is_zero_for_an_identical_student(batch):
    torch.manual_seed(0)
    teacher = detector("retinanet", 8, norm="frozen").eval()
    method = StructuralKD(copy.deepcopy(teacher).train(), teacher, SKDSettings(feature={"kind": "fgd"}))
    assert abs(method(batch, torch.Generator().manual_seed(0)).terms["feat_fgd"].item()) < 1e-7


def test_fgd_options_belong_to_their_kind():
    spec = SKDSettings(feature={"kind": "fgd"}).feature.fgd  # the weights per detector: test_references
    assert (spec.temp, spec.alpha_fgd, spec.beta_fgd, spec.gamma_fgd, spec.lambda_fgd) == (
        TEMP, "reference", "reference", "reference", "reference")
    retinanet = SKDSettings(feature={"kind": "fgd"}).with_references("retinanet", "resnet18", True).feature.fgd
    assert (retinanet.alpha_fgd, retinanet.beta_fgd, retinanet.gamma_fgd, retinanet.lambda_fgd) == (
        ALPHA, BETA, GAMMA, LAMBDA)
    assert SKDSettings(feature={"kind": "fgd", "fgd": {"gamma_fgd": 0.001}}).feature.fgd.gamma_fgd == 0.001
    other = SKDSettings(feature={"kind": "cwd", "fgd": {"temp": 1.0}}).feature  # changes nothing for cwd
    assert other.fgd is None and other == SKDSettings(feature={"kind": "cwd"}).feature
    with pytest.raises(ValueError, match="alpha"):
        SKDSettings(feature={"kind": "fgd", "fgd": {"alpha": 1.0}})


# --------------------------------------------------------------------------- a short fit
def test_a_short_fgd_fit_runs_saves_its_context_blocks_and_resumes_exactly(tmp_path):
    from kdlab.config.recipe import load_recipe
    from kdlab.runs.run import run_recipe

    _, student = write_recipes(tmp_path, "tiny-fgd", {"kind": "fgd", "weight": 1.0}, student_epochs=2)
    straight = run_recipe(load_recipe(student))
    assert "feat_fgd" in (straight.run_dir / "metrics.csv").read_text()
    assert 0.0 <= straight.summary["AP"] <= 100.0
    method_state = torch.load(straight.run_dir / "last.pt", weights_only=False)["method"]
    # the reference levels P2-P5 (FGD's Faster R-CNN config): no context block on pool
    assert {"contexts.0.student.mask.weight", "contexts.3.teacher.transform.3.weight"} <= set(method_state)
    assert not any(name.startswith("contexts.pool.") for name in method_state)
    # trained: the zero-initialised last conv of the context blocks has moved
    assert method_state["contexts.0.student.transform.3.weight"].abs().sum() > 0
    resumed = interrupted_then_resumed(load_recipe(student, [f"output.dir={tmp_path}/runs2"]), stop_epoch=1)
    assert best_weights_equal(straight, resumed)
