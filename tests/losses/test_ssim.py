"""Structural KD (SSIM) and l1/l2 feature losses: kornia agreement, a loop reference, hand-computed values,
the loss forms and lambda, small maps, gradients."""

import kornia
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.methods.skd import FeatureKDSpec
from kdlab.losses import (
    effective_window,
    feature_distance,
    minmax_normalize,
    multilevel_feature_loss,
    ssim_loss,
    ssim_map,
)
from kdlab.models.connectors import Conv1x1Connector
from tests.helpers.ssim_reference import C1, reference_ssim_maps


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape,window_size", [((7, 8), 5), ((6, 9), 11), ((12, 11), 11)])
def test_separable_ssim_matches_a_loop_reference_with_2d_weights(shape, window_size):
    x = _rand(1, 1, *shape, seed=1, dtype=torch.float64)
    y = (0.6 * x + 0.4 * _rand(1, 1, *shape, seed=2, dtype=torch.float64)).clamp(0, 1)
    taps, sigma = effective_window(shape[0], shape[1], window_size, 1.5)
    reference = reference_ssim_maps(x[0, 0].tolist(), y[0, 0].tolist(), taps, sigma)
    for components in ("lcs", "cs", "s"):
        got = ssim_map(x, y, window_size=window_size, components=components)[0, 0]
        expected = torch.tensor(reference[components], dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9, msg=components)


# --------------------------------------------------------------------------- kornia agreement


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 4, 24, 19), (2, 2, 11, 13)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_full_ssim_matches_kornia(shape, padding):
    x, y = _rand(*shape, seed=3), _rand(*shape, seed=4)
    ours = ssim_loss(x, y, normalize="none", padding=padding)
    theirs = kornia.losses.ssim_loss(x, y, 11, padding=padding)
    assert abs(ours.item() - theirs.item()) < 1e-5
    ours_map = ssim_map(x, y, padding=padding)
    theirs_map = kornia.metrics.ssim(x, y, 11, padding=padding)
    torch.testing.assert_close(ours_map, theirs_map, rtol=0, atol=1e-5)


def test_full_ssim_matches_kornia_in_float64_and_with_a_smaller_window():
    x, y = _rand(2, 3, 14, 15, seed=5, dtype=torch.float64), _rand(2, 3, 14, 15, seed=6, dtype=torch.float64)
    torch.testing.assert_close(ssim_map(x, y), kornia.metrics.ssim(x, y, 11, eps=0.0), rtol=0, atol=1e-12)
    # kornia keeps sigma = 1.5 for every window size; so does ssim_map when the map is large enough.
    torch.testing.assert_close(
        ssim_map(x, y, window_size=5), kornia.metrics.ssim(x, y, 5, eps=0.0), rtol=0, atol=1e-12
    )


# --------------------------------------------------------------------------- loss forms, levels and lambda


def _psi(x):
    """Min-max per (sample, channel) map, written out here as the reference (not kdlab's minmax_normalize)."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    return (x - low) / (high - low)


@pytest.mark.parametrize("normalize", ["none", "sample_channel"])
def test_one_minus_form_is_one_minus_kornia_ssim_and_halved_form_is_kornia_ssim_loss(normalize):
    if normalize == "none":
        student, teacher = _rand(2, 3, 16, 13, seed=30), _rand(2, 3, 16, 13, seed=31)
        student_ref, teacher_ref = student, teacher
    else:  # signed, FPN-like features: psi first
        student = torch.randn(2, 3, 16, 13, generator=torch.Generator().manual_seed(30)) * 3 + 1
        teacher = student + torch.randn(2, 3, 16, 13, generator=torch.Generator().manual_seed(31))
        student_ref, teacher_ref = _psi(student), _psi(teacher)
    one_minus = ssim_loss(student, teacher, normalize=normalize, form="one_minus").item()
    halved = ssim_loss(student, teacher, normalize=normalize, form="halved").item()
    kornia_ssim = kornia.metrics.ssim(student_ref, teacher_ref, 11).mean().item()
    assert one_minus == pytest.approx(1 - kornia_ssim, abs=1e-5)
    assert halved == pytest.approx(kornia.losses.ssim_loss(student_ref, teacher_ref, 11).item(), abs=1e-5)
    assert ssim_loss(student, teacher, normalize=normalize).item() == halved  # the default form


def test_constant_maps_reduce_to_the_luminance_term_by_hand():
    # Constant maps: every local variance and the covariance are 0, so cs = C2 / C2 = 1 and SSIM = l.
    # l = (2 * 0.2 * 0.6 + 1e-4) / (0.04 + 0.36 + 1e-4) = 0.2401 / 0.4001, so 1 - SSIM = 0.16 / 0.4001.
    x = torch.full((2, 3, 12, 12), 0.2, dtype=torch.float64)
    y = torch.full((2, 3, 12, 12), 0.6, dtype=torch.float64)
    one_minus = ssim_loss(x, y, normalize="none", form="one_minus").item()
    assert one_minus == pytest.approx(0.16 / 0.4001, rel=1e-12)
    assert ssim_loss(x, y, normalize="none", form="halved").item() == pytest.approx(0.08 / 0.4001, rel=1e-12)


def _constant(value, side):
    return torch.full((1, 2, side, side), value, dtype=torch.float64)


def test_multilevel_ssim_sums_the_levels_times_lambda_by_hand():
    # Two constant levels (the 4 x 4 one with a shrunk window): 1 - SSIM = 1 - l per level, by hand.
    student = [_constant(0.2, 12), _constant(0.9, 4)]
    teacher = [_constant(0.6, 12), _constant(0.3, 4)]
    per_level = [0.16 / 0.4001, 0.36 / 0.9001]  # 1 - (2ab + C1) / (a^2 + b^2 + C1)
    for form, scale in (("one_minus", 1.0), ("halved", 0.5)):
        got = multilevel_feature_loss(student, teacher, weight=3.0, normalize="none", ssim_form=form)
        assert got.item() == pytest.approx(3.0 * scale * sum(per_level), rel=1e-12), form
    as_dict = multilevel_feature_loss(
        {"p3": student[0], "p4": student[1]},
        {"p4": teacher[1], "p3": teacher[0]},  # key order does not matter
        weight=3.0,
        normalize="none",
        ssim_form="one_minus",
    )
    assert as_dict.item() == pytest.approx(3.0 * sum(per_level), rel=1e-12)


def test_multilevel_ssim_is_the_sum_not_the_mean_of_kornia_per_level_losses():
    generator = torch.Generator().manual_seed(32)
    student = [torch.randn(2, 3, side, side + 1, generator=generator) for side in (16, 11)]
    teacher = [level + 0.7 * torch.randn(level.shape, generator=generator) for level in student]
    pairs = list(zip(student, teacher))
    reference = [1 - kornia.metrics.ssim(_psi(s), _psi(t), 11).mean().item() for s, t in pairs]
    got = multilevel_feature_loss(student, teacher, kind="ssim", weight=2.0, ssim_form="one_minus")
    assert got.item() == pytest.approx(2.0 * sum(reference), abs=1e-5)
    halved = multilevel_feature_loss(student, teacher, kind="ssim", weight=2.0)
    kornia_halved = sum(kornia.losses.ssim_loss(_psi(s), _psi(t), 11).item() for s, t in pairs)
    assert halved.item() == pytest.approx(2.0 * kornia_halved, abs=1e-5)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_multilevel_l1_l2_sum_the_levels_times_lambda_by_hand(kind):
    student = [torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.tensor([[[[0.0, 1.0, 1.0]]]])]
    teacher = [torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]]]), torch.tensor([[[[3.0, 1.0, 0.0]]]])]
    # level means: l1 (1 + 0 + 2 + 0) / 4 and (3 + 0 + 1) / 3; l2 (1 + 0 + 4 + 0) / 4 and (9 + 0 + 1) / 3
    per_level = [3 / 4, 4 / 3] if kind == "l1" else [5 / 4, 10 / 3]
    got = multilevel_feature_loss(student, teacher, kind=kind, weight=2.0, normalize="none")
    assert got.item() == pytest.approx(2.0 * sum(per_level))
    assert multilevel_feature_loss(student, teacher, kind="none", weight=2.0).item() == 0.0


def test_recipe_lambda_default_is_the_papers_with_the_halved_form():
    from pydantic import ValidationError

    spec = FeatureKDSpec()
    assert spec.weight == 2.0  # de Rijk et al.: lambda 2 and 4 best, for (1 - SSIM) / 2
    assert spec.ssim_form == "halved"
    assert FeatureKDSpec(ssim_form="one_minus").ssim_form == "one_minus"
    with pytest.raises(ValidationError):
        FeatureKDSpec(ssim_form="paper")
    x = _rand(1, 1, 12, 12, seed=33)
    with pytest.raises(ValueError, match="halved, one_minus"):
        ssim_loss(x, x, form="full")
    with pytest.raises(ValueError, match="halved, one_minus"):
        multilevel_feature_loss([x], [x], kind="l1", ssim_form="full")


def test_moment_backward_passes_gradcheck():
    x = _rand(1, 1, 5, 6, seed=9, dtype=torch.float64).requires_grad_(True)
    y = _rand(1, 1, 5, 6, seed=10, dtype=torch.float64).requires_grad_(True)
    for components in ("lcs", "cs", "s"):
        assert torch.autograd.gradcheck(
            lambda a, b, c=components: ssim_map(a, b, window_size=3, components=c), (x, y)
        )
    assert torch.autograd.gradcheck(lambda a: ssim_map(a, y.detach(), window_size=5), (x,))


# --------------------------------------------------------------------------- identities and small maps


@pytest.mark.parametrize("components", ["lcs", "cs", "s"])
def test_ssim_of_identical_inputs_is_one_and_the_loss_zero(components):
    x = _rand(2, 3, 12, 12, seed=11)
    torch.testing.assert_close(ssim_map(x, x, components=components), torch.ones_like(x), rtol=0, atol=1e-5)
    for form in ("halved", "one_minus"):
        loss = ssim_loss(x, x.clone(), components=components, form=form)
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert multilevel_feature_loss([x, x[..., :5, :5]], [x.clone(), x[..., :5, :5].clone()]).item() == (
        pytest.approx(0.0, abs=1e-6)
    )


def test_effective_window_shrinks_to_the_largest_odd_size_and_scales_sigma():
    assert effective_window(100, 100) == (11, 1.5)
    assert effective_window(11, 40) == (11, 1.5)
    assert effective_window(7, 7) == (7, pytest.approx(1.5 * 7 / 11))
    assert effective_window(4, 9) == (3, pytest.approx(1.5 * 3 / 11))
    assert effective_window(1, 1) == (1, pytest.approx(1.5 / 11))
    with pytest.raises(ValueError, match="odd"):
        effective_window(5, 5, window_size=4)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (5, 5), (1, 4)])
@pytest.mark.parametrize("components", ["lcs", "cs", "s"])
def test_small_maps_give_finite_values_and_gradients(size, components):
    student = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(12), requires_grad=True)
    teacher = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(13))
    loss = ssim_loss(student, teacher, components=components)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(student.grad).all()


def test_a_one_by_one_map_reduces_to_the_luminance_term():
    x = torch.tensor([[[[0.2]], [[0.9]]]], dtype=torch.float64)
    y = torch.tensor([[[[0.7]], [[0.1]]]], dtype=torch.float64)
    luminance = (2 * x * y + C1) / (x * x + y * y + C1)
    torch.testing.assert_close(ssim_map(x, y, components="lcs"), luminance)
    torch.testing.assert_close(ssim_map(x, y, components="cs"), torch.ones_like(x))
    torch.testing.assert_close(ssim_map(x, y, components="s"), torch.ones_like(x), rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- psi


def test_minmax_normalisation_makes_ssim_of_x_and_minus_x_low():
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(14))
    raw_similarity = 1 - ssim_loss(x, -x, normalize="none", form="one_minus").item()
    normalised_similarity = 1 - ssim_loss(x, -x, normalize="sample_channel", form="one_minus").item()
    assert raw_similarity == pytest.approx(kornia.metrics.ssim(x, -x, 11).mean().item(), abs=1e-5)
    kornia_normalised = kornia.metrics.ssim(_psi(x), _psi(-x), 11).mean().item()
    assert normalised_similarity == pytest.approx(kornia_normalised, abs=1e-5)
    assert raw_similarity > 0.5  # luminance and cs both flip sign: their product hides the negation
    assert normalised_similarity < -0.5


def test_minmax_normalize_granularities_and_constant_maps():
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(15)) * 7 + 3
    per_map = minmax_normalize(x, "sample_channel")
    assert torch.allclose(per_map.amin(dim=(2, 3)), torch.zeros(2, 3))
    assert torch.allclose(per_map.amax(dim=(2, 3)), torch.ones(2, 3))
    per_level = minmax_normalize(x, "level")
    assert torch.allclose(per_level.flatten(1).amin(1), torch.zeros(2))
    assert torch.allclose(per_level.flatten(1).amax(1), torch.ones(2))
    assert minmax_normalize(x, "none") is x
    constant = torch.full((1, 2, 3, 3), 4.0, requires_grad=True)
    out = minmax_normalize(constant)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(constant.grad).all()
    with pytest.raises(ValueError, match="sample_channel, level, none"):
        minmax_normalize(x, "channel")


# --------------------------------------------------------------------------- l1 / l2 baselines


def test_feature_distance_l1_and_l2_by_hand():
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    teacher = torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]]])
    assert feature_distance(student, teacher, kind="l1").item() == pytest.approx((1 + 0 + 2 + 0) / 4)
    assert feature_distance(student, teacher, kind="l2").item() == pytest.approx((1 + 0 + 4 + 0) / 4)


def _psi_level(x):
    """Min-max per sample over all channels and positions, written out here as the reference."""
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - low) / (high - low)


@pytest.mark.parametrize("normalize", ["none", "sample_channel", "level"])
def test_feature_distance_matches_torch_losses_after_psi(normalize):
    student = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(16))
    teacher = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(17))
    psi = {"none": lambda x: x, "sample_channel": _psi, "level": _psi_level}[normalize]
    s, t = psi(student), psi(teacher)
    torch.testing.assert_close(feature_distance(student, teacher, "l1", normalize), F.l1_loss(s, t))
    torch.testing.assert_close(feature_distance(student, teacher, "l2", normalize), F.mse_loss(s, t))


# --------------------------------------------------------------------------- multi-level loss and gradients


def _levels(channels, seed, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2, channels, side, side, generator=generator, requires_grad=requires_grad)
        for side in (9, 5, 1)
    ]


@pytest.mark.parametrize("kind", ["ssim", "l1", "l2"])
def test_gradients_reach_student_and_adapters_but_never_the_teacher(kind):
    student = _levels(4, seed=18, requires_grad=True)
    teacher = _levels(8, seed=19, requires_grad=True)
    adapters = nn.ModuleList(Conv1x1Connector(4, 8) for _ in student)
    loss = multilevel_feature_loss(student, teacher, kind=kind, adapters=adapters)
    loss.backward()
    assert all(level.grad is not None and torch.isfinite(level.grad).all() for level in student)
    assert all(p.grad is not None for p in adapters.parameters())
    assert all(level.grad is None for level in teacher)


def test_multilevel_loss_names_the_level_on_shape_mismatch():
    student = {"p3": torch.rand(1, 4, 8, 8), "p4": torch.rand(1, 4, 4, 4)}
    teacher = {"p3": torch.rand(1, 4, 8, 8), "p4": torch.rand(1, 8, 4, 4)}
    with pytest.raises(ValueError, match=r"'p4'.*\(1, 4, 4, 4\).*\(1, 8, 4, 4\)"):
        multilevel_feature_loss(student, teacher, kind="ssim")
    with pytest.raises(ValueError, match="levels differ"):
        multilevel_feature_loss({"p3": student["p3"]}, {"p5": teacher["p3"]})
    with pytest.raises(ValueError, match="unknown feature loss kind .kl.; allowed values: ssim, l1, l2, pkd, cwd, mgd, fgd, none"):
        multilevel_feature_loss(student, teacher, kind="kl")
    with pytest.raises(ValueError, match="lcs, cs, s"):
        ssim_loss(student["p3"], teacher["p3"], components="l")


def test_half_precision_inputs_are_computed_in_float32():
    x = _rand(1, 2, 12, 12, seed=22).to(torch.bfloat16)
    y = _rand(1, 2, 12, 12, seed=23).to(torch.bfloat16)
    got = ssim_map(x, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, kornia.metrics.ssim(x.float(), y.float(), 11), rtol=0, atol=1e-5)
