"""Robustness evaluation: shared clean pass, batching, determinism, sanity checks (positive and negative), sweeps, plots.

Uses the tiny conv net trained in ``tests/robustness/test_attacks.py`` (cached, trained once per session). The negative
sanity-check tests put a gradient-masking layer inside that classifier (a quantising ``torch.round``, a layer whose
backward is zero, an input detector that snaps off-grid inputs back) and check the checks flag it.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from kdlab.errors import KdlabError
from kdlab.report.plots import plot_ablation_bars, plot_robustness_curve
from kdlab.robustness.accuracy import AttackResult, eps_sweep, evaluate_robustness
from kdlab.robustness.attacks import AttackSpec
from kdlab.robustness.sanity import sanity_check
from tests.helpers.prototype_net import EPS, accuracy, copy_module

# ---------------------------------------------------------------------------------------------------------------
# basic properties of the numbers


def test_trained_model_is_clearly_above_chance(model, data):
    images, labels = data
    assert accuracy(model, images, labels) > 70  # chance is 20%


def test_eps0_equals_clean_and_pgd_is_below_clean(model, data):
    images, labels = data
    clean, zero, pgd = evaluate_robustness(model, images, labels, [AttackSpec("clean"), AttackSpec("pgd", eps=0.0),
                                                                   AttackSpec("pgd")])
    assert clean.accuracy == pytest.approx(accuracy(model, images, labels))
    assert torch.equal(zero.robust, clean.robust)
    assert zero.max_perturbation == 0.0
    assert pgd.accuracy < clean.accuracy - 10
    assert pgd.clean_accuracy == pytest.approx(accuracy(model, images, labels))


def test_more_pgd_steps_never_help_the_model(model, data):
    images, labels = data
    results = evaluate_robustness(model, images, labels, [AttackSpec("pgd", steps=s) for s in (1, 5, 20, 50)])
    accs = [r.accuracy for r in results]
    one_image = 100.0 / images.shape[0]
    assert all(later <= earlier + one_image for earlier, later in itertools.pairwise(accs)), accs
    assert accs[-1] < accs[0]


def test_batch_size_does_not_change_the_result(model, data):
    images, labels = data
    specs = [AttackSpec("clean"), AttackSpec("fgsm"), AttackSpec("pgd", steps=10),
             AttackSpec("cw", steps=10), AttackSpec("pgd", steps=4, restarts=2)]
    small = evaluate_robustness(model, images[:70], labels[:70], specs, batch_size=7)
    large = evaluate_robustness(model, images[:70], labels[:70], specs, batch_size=64)
    for a, b in zip(small, large):
        assert torch.equal(a.robust, b.robust), a.label


def test_same_seed_gives_the_same_number_twice(model, data):
    images, labels = data
    specs = [AttackSpec("pgd", steps=10, seed=7), AttackSpec("apgd-t", steps=5, seed=7),
             AttackSpec("square", steps=50, seed=7)]
    first = evaluate_robustness(model, images, labels, specs, batch_size=32)
    second = evaluate_robustness(model, images, labels, specs, batch_size=32)
    for a, b in zip(first, second):
        assert torch.equal(a.robust, b.robust) and a.accuracy == b.accuracy, a.label


def test_progress_rows_and_metadata(model, data):
    images, labels = data
    calls = []
    results = evaluate_robustness(model, images, labels, [AttackSpec("clean"), AttackSpec("pgd", steps=5)],
                                  batch_size=40, progress=lambda *call: calls.append(call))
    # one shared clean pass; each pass says when it starts (done = 0), so its elapsed time is real
    assert calls[:4] == [("clean", 0, 100), ("clean", 40, 100), ("clean", 80, 100), ("clean", 100, 100)]
    assert calls[4:] == [("pgd@8/255", 0, 100), ("pgd@8/255", 40, 100), ("pgd@8/255", 80, 100),
                         ("pgd@8/255", 100, 100)]
    pgd = results[1]
    assert (pgd.attack, pgd.eps, pgd.alpha, pgd.steps, pgd.restarts, pgd.n, pgd.seed) == (
        "pgd", EPS, EPS / 4, 5, 1, 100, 0)
    assert pgd.robust.dtype == torch.bool and pgd.robust.shape == (100,)
    assert pgd.wall_s > 0 and pgd.images_per_s > 0
    rows = [r.row() for r in results]
    assert list(rows[0]) == list(rows[1])
    assert rows[1]["eps_255"] == 8.0 and rows[1]["accuracy"] == pytest.approx(pgd.accuracy)


def test_bad_inputs_are_friendly_errors(model, data):
    images, labels = data
    with pytest.raises(KdlabError, match="normalis"):
        evaluate_robustness(model, (images - 0.5) / 0.25, labels, ["pgd"])
    with pytest.raises(KdlabError, match="uint8"):
        evaluate_robustness(model, (images * 255).to(torch.uint8), labels, ["pgd"])
    with pytest.raises(KdlabError, match="labels"):
        evaluate_robustness(model, images, labels + 10, ["clean"])
    with pytest.raises(KdlabError, match="unknown attack"):
        evaluate_robustness(model, images, labels, ["pgdd"])


# ---------------------------------------------------------------------------------------------------------------
# sanity checks


class QuantiseInput(nn.Module):
    """Gradient masking: rounds the input to 1/8 steps, so every input gradient is exactly zero."""

    def forward(self, x):
        return torch.round(x * 8) / 8


class _ZeroBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class ZeroGradient(nn.Module):
    """Gradient masking: the identity forward, a zero backward (a "straight-zero-gradient" layer)."""

    def forward(self, x):
        return _ZeroBackward.apply(x)


class SnapOffGrid(nn.Module):
    """Gradient masking that only a random start trips: 8-bit images (on the 1/255 grid) pass unchanged with their
    true gradient; an image off the grid is rounded back onto it (zero gradient). FGSM steps by 8/255 from the
    clean image and stays on the grid; PGD and APGD start at a random point off the grid and never move."""

    def forward(self, x):
        snapped = torch.round(x * 255) / 255
        on_grid = ((x - snapped).abs() <= 1e-4).flatten(1).all(1).view(-1, 1, 1, 1)
        return torch.where(on_grid, x, snapped)


class AlwaysDropout(nn.Module):
    """Test-time randomness: dropout that ignores eval mode (like BN/dropout stuck in train mode)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(F.dropout(x, p=0.3, training=True))


def test_sanity_check_passes_for_the_trained_model_with_the_reference_square_budget(model, data):
    images, labels = data[0][:50], data[1][:50]
    report = sanity_check(model, images, labels, eps=EPS)
    assert report == [], [str(v) for v in report]
    # the default is the standard AutoAttack's Square budget (fra31/auto-attack: n_queries=5000), on record
    assert report.square_queries == 5000
    square = next(r for r in report.results if r.attack == "square")
    assert square.row()["steps"] == 5000
    assert report.summary() == "ok (eps 8/255, n 50, seed 0: pgd 10 steps, apgd-ce 20 steps, square 5000 queries)"
    # ... and really used: the same points survive torchattacks' Square run directly with 5000 queries
    square_attack = torchattacks.Square(copy_module(model), norm="Linf", eps=EPS, n_queries=5000, n_restarts=1,
                                        p_init=0.8, loss="margin", resc_schedule=False, seed=0)
    reference = square_attack(images, labels)
    with torch.no_grad():
        expected = (model(reference).argmax(1) == labels) & (model(images).argmax(1) == labels)
    assert torch.equal(square.robust, expected)


@pytest.mark.parametrize("mask", [QuantiseInput, ZeroGradient], ids=lambda m: m.__name__)
def test_sanity_check_flags_masked_gradients_with_square(model, data, mask):
    images, labels = data
    masked = nn.Sequential(mask(), model).eval()
    report = sanity_check(masked, images, labels, eps=EPS, square_queries=1000)
    checks = {v.check for v in report}
    assert "blackbox-not-stronger-than-whitebox" in checks, [str(v) for v in report]
    message = next(v.message for v in report if v.check == "blackbox-not-stronger-than-whitebox")
    assert "Square with 1000 queries" in message and "gradient masking" in message
    assert report.square_queries == 1000 and "square 1000 queries" in report.summary()
    # the evidence is real: white-box PGD leaves (nearly) every clean-correct point standing, Square does not
    with torch.no_grad():
        clean_count = int((masked(images).argmax(1) == labels).sum())
    by_name = {(r.attack, r.eps): r for r in report.results}
    assert by_name[("pgd", EPS)].robust_count >= clean_count - 2
    assert by_name[("square", EPS)].robust_count <= clean_count - 5


def _judged_again(report):
    """``recorded`` for :func:`sanity_check`: the attack results of an earlier check on the same images, so a
    second check judges them (with other ``whitebox`` results) without attacking again."""
    by_spec = {(r.attack, round(r.eps, 9)): r for r in report.results}
    return lambda spec: by_spec[(spec.name, round(spec.eps, 9))]


def _autoattack(stages: dict[str, float], n: int) -> AttackResult:
    """An AutoAttack result as ``kdlab eval`` records it: cumulative accuracy after each stage (in %)."""
    return AttackResult("autoattack", EPS, None, 100, 1, n, 0, accuracy=min(stages.values()),
                        robust=torch.zeros(0, dtype=torch.bool), wall_s=1.0, images_per_s=1.0,
                        clean_accuracy=stages["clean"], components=dict(stages))


def test_blackbox_check_compares_square_with_the_strongest_whitebox_attack_on_record(model, data):
    images, labels = data
    n = images.shape[0]
    masked = nn.Sequential(QuantiseInput(), model).eval()
    alone = sanity_check(masked, images, labels, eps=EPS, square_queries=1000)
    assert "blackbox-not-stronger-than-whitebox" in {v.check for v in alone}
    by_name = {(r.attack, r.eps): r for r in alone.results}
    square, clean = by_name[("square", EPS)].accuracy, by_name[("pgd", 0.0)].accuracy
    own = min(by_name[("pgd", EPS)].accuracy, by_name[("apgd-ce", EPS)].accuracy)
    assert square < own - 5  # the masked model's evidence, measured above
    message = next(v.message for v in alone if v.check == "blackbox-not-stronger-than-whitebox")
    assert "run AutoAttack" in message  # without AutoAttack on record, it is the next step

    # AutoAttack's white-box stages (APGD-T) went below Square: Square beats no white-box attack, nothing flagged
    strong = _autoattack({"clean": clean, "apgd-ce": own, "apgd-t": square - 4, "fab-t": square - 4,
                          "square": square - 4}, n)
    judged = sanity_check(masked, images, labels, eps=EPS, square_queries=1000, recorded=_judged_again(alone),
                          whitebox=[strong])
    assert {v.check for v in judged} == {v.check for v in alone} - {"blackbox-not-stronger-than-whitebox"}
    assert judged.summary().endswith("square 1000 queries; also compared with autoattack)")

    # stages that stayed above Square, and a PGD-20 above them: flagged, naming the strongest of all of them
    weak = _autoattack({"clean": clean, "apgd-ce": own, "apgd-t": own - 0.5, "fab-t": own - 0.5,
                        "square": own - 0.5}, n)
    pgd20 = replace(weak, attack="pgd", steps=20, accuracy=own + 2, components={})
    judged = sanity_check(masked, images, labels, eps=EPS, square_queries=1000, recorded=_judged_again(alone),
                          whitebox=[pgd20, weak])
    message = next(v.message for v in judged if v.check == "blackbox-not-stronger-than-whitebox")
    assert f"attack on record, autoattack before square ({own - 0.5:.2f}%)" in message
    assert "run AutoAttack" not in message
    assert judged.settings["whitebox"] == ["pgd-20", "autoattack"]

    with pytest.raises(KdlabError, match="on n 7"):  # a result on other images is not evidence about these
        sanity_check(masked, images, labels, eps=EPS, square_queries=1000, recorded=_judged_again(alone),
                     whitebox=[replace(weak, n=7)])


@pytest.mark.parametrize("stages", [
    {"clean": 60.0, "apgd-ce": 40.0, "apgd-t": 35.0, "fab-t": 35.0, "square": 35.0},
    {"clean": 60.0, "apgd-ce": 40.0, "apgd-t": 35.0, "fab-t": 35.0, "square": 34.9},
    {"clean": 60.0, "apgd-ce": 40.0, "apgd-t": 35.0, "fab-t": 35.0, "square": 34.5},
    {"clean": 60.0, "apgd-ce": 40.0, "apgd-t": 35.0, "fab-t": 34.0, "square": 30.0},
    {"clean": 60.0, "apgd-ce": 40.0, "square": 39.0},
    {"clean": 60.0, "square": 50.0},
], ids=["nothing", "0.1-points", "0.5-points", "5-points", "no-apgd-t", "square-only"])
def test_autoattack_square_stage_is_judged_like_the_reference_check_square_sr(model, data, stages):
    import warnings

    from pyautoattack import checks

    images, labels = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks.check_square_sr({name: value / 100 for name, value in stages.items()})  # accuracies in [0, 1]
    reference = any("Square Attack has decreased" in str(w.message) for w in caught)
    first = sanity_check(model, images, labels, eps=EPS, pgd_steps=2, apgd_steps=2, square_queries=20)
    judged = sanity_check(model, images, labels, eps=EPS, pgd_steps=2, apgd_steps=2, square_queries=20,
                          recorded=_judged_again(first), whitebox=[_autoattack(stages, images.shape[0])])
    assert ("square-improves-autoattack" in {v.check for v in judged}) == reference
    assert reference == (stages["square"] < 34.8 if "apgd-t" in stages else len(stages) > 2)  # the cases above


def test_sanity_check_flags_fgsm_beating_pgd_when_the_random_start_masks_gradients(model, data):
    images, labels = data
    images = torch.round(images * 255) / 255  # 8-bit images, like real data
    masked = nn.Sequential(SnapOffGrid(), model).eval()
    report = sanity_check(masked, images, labels, eps=EPS, square_queries=300)
    checks = {v.check for v in report}
    assert "fgsm-not-stronger-than-pgd" in checks, [str(v) for v in report]
    # without the masking layer the same images pass the FGSM-vs-PGD check
    assert "fgsm-not-stronger-than-pgd" not in {v.check for v in sanity_check(model, images, labels, eps=EPS,
                                                                               square_queries=300)}


def test_sanity_check_flags_a_random_model(model, data):
    images, labels = data
    violations = sanity_check(AlwaysDropout(model), images, labels, eps=EPS, pgd_steps=3, apgd_steps=5,
                              square_queries=20)
    checks = {v.check for v in violations}
    assert "deterministic" in checks and "eps0-equals-clean" in checks, [str(v) for v in violations]
    assert any("train mode" in v.message for v in violations)


def test_sanity_check_flags_normalised_inputs(model, data):
    images, labels = data
    violations = sanity_check(model, (images - 0.5) / 0.25, labels)
    assert [v.check for v in violations] == ["input-range"]
    assert "normalis" in violations[0].message


# ---------------------------------------------------------------------------------------------------------------
# eps sweep and plots


def test_eps_sweep_is_monotone_and_starts_at_clean(model, data, tmp_path):
    images, labels = data
    eps_list = [0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
    results = eps_sweep(model, images, labels, [AttackSpec("pgd", steps=10), AttackSpec("fgsm")], eps_list)
    assert [(r.attack, r.eps) for r in results] == [(a, e) for e in eps_list for a in ("pgd", "fgsm")]
    pgd = [r for r in results if r.attack == "pgd"]
    assert pgd[0].accuracy == pgd[0].clean_accuracy
    assert all(b.accuracy <= a.accuracy + 1.0 for a, b in itertools.pairwise(pgd))
    assert pgd[-1].alpha == pytest.approx(4 / 255)  # the step size follows eps
    rows = pd.DataFrame([r.row() for r in results])
    path = plot_robustness_curve(rows, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_ablation_bars_with_and_without_error_columns(tmp_path):
    per_seed = pd.DataFrame({"name": ["kd", "kd", "mixacm", "mixacm"], "seed": [0, 1, 0, 1],
                             "clean": [80.0, 82.0, 84.0, 83.0], "pgd": [40.0, 42.0, 48.0, 47.0]})
    path = plot_ablation_bars(per_seed, tmp_path / "bars.png", value_columns=["clean", "pgd"])
    assert path.read_bytes()[:4] == b"\x89PNG"
    summary = pd.DataFrame({"method": ["kd", "mixacm"], "pgd_mean": [41.0, 47.5], "pgd_std": [1.4, 0.7]})
    path = plot_ablation_bars(summary, tmp_path / "sub" / "bars2.png", value_columns=["pgd_mean"],
                              error_columns=["pgd_std"], label_column="method")
    assert path.exists()
    with pytest.raises(KdlabError, match="no column"):
        plot_ablation_bars(summary, tmp_path / "x.png", value_columns=["autoattack"], label_column="method")
