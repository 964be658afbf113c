"""Mixup CE, soft-target KD, activated channel maps and connectors: hand-computed values and invariants."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses import (
    acm_loss,
    activated_channel_map,
    kd_loss,
    mix_batch,
    mixup_cross_entropy,
    sample_beta,
)
from kdlab.models.connectors import Conv1x1Connector, build_connector

# --------------------------------------------------------------------------- KD


def test_kd_loss_matches_hand_computed_example():
    student = torch.tensor([[2.0, 0.0, -2.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    # softmax(logits / 2), written out:
    e = math.e
    p_s = [
        [e / (e + 1 + 1 / e), 1 / (e + 1 + 1 / e), (1 / e) / (e + 1 + 1 / e)],  # [1, 0, -1]
        [1 / (2 + e**0.5), e**0.5 / (2 + e**0.5), 1 / (2 + e**0.5)],  # [0, 0.5, 0]
    ]
    p_t = [
        [e**2 / (e**2 + 2), 1 / (e**2 + 2), 1 / (e**2 + 2)],  # [2, 0, 0]
        [1 / (2 + e), 1 / (2 + e), e / (2 + e)],  # [0, 0, 1]
    ]
    assert p_s[0] == pytest.approx([0.665241, 0.244728, 0.090031], abs=1e-6)
    assert p_t[1] == pytest.approx([0.211942, 0.211942, 0.576117], abs=1e-6)
    kl_per_sample = [sum(q * math.log(q / p) for p, q in zip(ps, pt)) for ps, pt in zip(p_s, p_t)]
    expected = 2.0**2 * sum(kl_per_sample) / 2
    assert expected == pytest.approx(0.5492647614923474, abs=1e-12)
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, abs=1e-12)


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    assert kd_loss(logits, logits.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-7)
    assert kd_loss(logits, logits.flip(1), temperature=4.0).item() > 0


def test_kd_loss_stays_finite_for_extreme_logits():
    student = torch.tensor([[1000.0, -1000.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-1000.0, 1000.0, 0.0]])
    loss = kd_loss(student, teacher, temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_kd_loss_rejects_bad_temperature_and_shapes():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(1, 3), torch.zeros(1, 3), temperature=0.0)
    with pytest.raises(ValueError, match="shape"):
        kd_loss(torch.zeros(1, 3), torch.zeros(1, 4), temperature=1.0)


# --------------------------------------------------------------------------- mixup


def test_mixup_cross_entropy_matches_hand_computed_mixture():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], dtype=torch.float64)
    targets_a = torch.tensor([1, 2])
    targets_b = torch.tensor([0, 0])
    lam = 0.3

    def cross_entropy(row, label):
        return -(row[label] - math.log(sum(math.exp(v) for v in row)))

    rows = logits.tolist()
    ce_a = (cross_entropy(rows[0], 1) + cross_entropy(rows[1], 2)) / 2
    ce_b = (cross_entropy(rows[0], 0) + cross_entropy(rows[1], 0)) / 2
    expected = lam * ce_a + (1 - lam) * ce_b
    got = mixup_cross_entropy(logits, targets_a, targets_b, lam)
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_mix_batch_is_deterministic_given_the_generator_seed():
    images = torch.rand(8, 3, 4, 4)
    targets = torch.arange(8)
    first = mix_batch(images, targets, alpha=0.4, generator=torch.Generator().manual_seed(7))
    second = mix_batch(images, targets, alpha=0.4, generator=torch.Generator().manual_seed(7))
    other = mix_batch(images, targets, alpha=0.4, generator=torch.Generator().manual_seed(8))
    assert first.lam == second.lam
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.targets_b, second.targets_b)
    assert (first.lam, first.targets_b.tolist()) != (other.lam, other.targets_b.tolist())


def test_mix_batch_uses_one_permutation_for_images_and_labels():
    images = torch.rand(6, 2, 3, 3, dtype=torch.float64)
    targets = torch.arange(6)  # so targets_b is the permutation itself
    mixed = mix_batch(images, targets, alpha=1.0, generator=torch.Generator().manual_seed(3))
    perm = mixed.targets_b
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.equal(mixed.targets_a, targets)
    assert 0.0 < mixed.lam < 1.0
    expected = mixed.lam * images + (1 - mixed.lam) * images[perm]
    torch.testing.assert_close(mixed.images, expected, rtol=0, atol=1e-12)


def test_mix_batch_with_nonpositive_alpha_leaves_images_unmixed():
    images = torch.rand(4, 3, 2, 2)
    mixed = mix_batch(images, torch.arange(4), alpha=0.0, generator=torch.Generator().manual_seed(0))
    assert mixed.lam == 1.0
    assert torch.equal(mixed.images, images)


def test_mix_batch_leaves_the_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    mix_batch(
        torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(1)),
        torch.arange(4),
        0.2,
        torch.Generator().manual_seed(5),
    )
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_sample_beta_has_the_beta_mean_and_variance(alpha):
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_beta(alpha, alpha, generator) for _ in range(3000)], dtype=torch.float64)
    assert ((draws >= 0) & (draws <= 1)).all()
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); 3000 draws give standard errors below 0.01.
    assert draws.mean().item() == pytest.approx(0.5, abs=0.03)
    assert draws.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), abs=0.015)


# --------------------------------------------------------------------------- ACM


def _hand_features() -> torch.Tensor:
    # 1 x 2 x 2 x 2 with negative entries, so the relu matters.
    return torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[-1.0, 2.0], [4.0, -4.0]]]], dtype=torch.float64)


def test_activated_channel_map_hand_computed_p1_and_p2():
    features = _hand_features()
    # p=1: relu maps [1, 0, 3, 0] and [0, 2, 4, 0] -> means 1.0 and 1.5
    raw_p1 = activated_channel_map(features, p=1.0, normalize="none")
    torch.testing.assert_close(raw_p1, torch.tensor([[1.0, 1.5]], dtype=torch.float64))
    norm = math.sqrt(1.0**2 + 1.5**2)
    unit_p1 = activated_channel_map(features, p=1.0, normalize="l2")
    torch.testing.assert_close(unit_p1, torch.tensor([[1.0 / norm, 1.5 / norm]], dtype=torch.float64))
    # p=2: means of squares (1 + 9) / 4 = 2.5 and (4 + 16) / 4 = 5.0
    raw_p2 = activated_channel_map(features, p=2.0, normalize="none")
    torch.testing.assert_close(raw_p2, torch.tensor([[2.5, 5.0]], dtype=torch.float64))
    norm = math.sqrt(2.5**2 + 5.0**2)
    unit_p2 = activated_channel_map(features, p=2.0, normalize="l2")
    torch.testing.assert_close(unit_p2, torch.tensor([[2.5 / norm, 5.0 / norm]], dtype=torch.float64))


def test_acm_distances_hand_computed():
    student = _hand_features()  # unit ACM (p=1): [1, 1.5] / sqrt(3.25)
    teacher = torch.tensor([[[[2.0]], [[-3.0]]]], dtype=torch.float64)  # ACM [2, 0] -> unit [1, 0]
    a, b = 1.0 / math.sqrt(3.25), 1.5 / math.sqrt(3.25)
    assert acm_loss(student, teacher, distance="squared_l2").item() == pytest.approx((a - 1) ** 2 + b**2)
    assert acm_loss(student, teacher, distance="l1").item() == pytest.approx(abs(a - 1) + b)
    assert acm_loss(student, teacher, distance="cosine").item() == pytest.approx(1 - a)
    # without normalisation, raw maps [1, 1.5] vs [2, 0]
    raw = acm_loss(student, teacher, normalize="none", distance="squared_l2").item()
    assert raw == pytest.approx((1 - 2) ** 2 + 1.5**2)


def test_acm_cosine_matches_torch_cosine_similarity():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 7, 3, 3, generator=generator, dtype=torch.float64)
    teacher = torch.randn(5, 7, 4, 4, generator=generator, dtype=torch.float64)
    a_s = student.clamp(min=0).mean(dim=(2, 3))  # the activated channel maps, written out
    a_t = teacher.clamp(min=0).mean(dim=(2, 3))
    expected = (1 - F.cosine_similarity(a_s, a_t, dim=1)).mean()
    got = acm_loss(student, teacher, normalize="none", distance="cosine")
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("distance", ["squared_l2", "l1", "cosine"])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_acm_loss_is_exactly_zero_for_identical_features(distance, p):
    features = torch.randn(3, 6, 5, 5, generator=torch.Generator().manual_seed(1))
    assert acm_loss(features, features.clone(), p=p, distance=distance).item() == 0.0


@pytest.mark.parametrize("distance", ["squared_l2", "l1", "cosine"])
def test_acm_loss_is_invariant_to_per_sample_positive_scaling(distance):
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(3, 8, 4, 4, generator=generator, dtype=torch.float64)
    teacher = torch.randn(3, 8, 4, 4, generator=generator, dtype=torch.float64)
    scale_s = torch.tensor([0.5, 3.0, 10.0], dtype=torch.float64).view(3, 1, 1, 1)
    scale_t = torch.tensor([7.0, 0.1, 2.0], dtype=torch.float64).view(3, 1, 1, 1)
    reference = acm_loss(student, teacher, distance=distance)
    torch.testing.assert_close(acm_loss(student * scale_s, teacher, distance=distance), reference)
    torch.testing.assert_close(acm_loss(student, teacher * scale_t, distance=distance), reference)


def test_acm_loss_gradient_reaches_the_student_features():
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(2, 4, 3, 3, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 4, 3, 3, generator=generator)
    acm_loss(student, teacher).backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@pytest.mark.parametrize("distance", ["squared_l2", "l1", "cosine"])
def test_acm_loss_of_all_negative_features_is_finite(distance):
    student = (-torch.rand(2, 4, 3, 3) - 0.1).requires_grad_(True)  # relu -> all zero ACM
    teacher = torch.rand(2, 4, 3, 3)
    loss = acm_loss(student, teacher, distance=distance)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_acm_loss_rejects_channel_mismatch_and_unknown_options():
    with pytest.raises(ValueError, match="connector"):
        acm_loss(torch.rand(1, 3, 2, 2), torch.rand(1, 4, 2, 2))
    with pytest.raises(ValueError, match="squared_l2, l1, cosine"):
        acm_loss(torch.rand(1, 3, 2, 2), torch.rand(1, 3, 2, 2), distance="kl")
    with pytest.raises(ValueError, match="l2, none"):
        acm_loss(torch.rand(1, 3, 2, 2), torch.rand(1, 3, 2, 2), normalize="l1")


# --------------------------------------------------------------------------- connectors


def test_conv1x1_connector_maps_channels_and_trains():
    connector = Conv1x1Connector(4, 8)
    features = torch.randn(2, 4, 5, 5, requires_grad=True)
    out = connector(features)
    assert out.shape == (2, 8, 5, 5)
    assert isinstance(connector.bn, nn.BatchNorm2d) and connector.conv.kernel_size == (1, 1)
    out.square().mean().backward()
    assert connector.conv.weight.grad is not None and features.grad is not None


def test_build_connector_kinds():
    plain = build_connector(4, 8, "conv1x1")
    assert isinstance(plain, Conv1x1Connector) and isinstance(plain.bn, nn.Identity)
    assert plain.conv.bias is not None  # without BatchNorm the conv carries the shift
    with_bn = build_connector(4, 8, "conv1x1-bn")
    assert isinstance(with_bn.bn, nn.BatchNorm2d) and with_bn.conv.bias is None
    assert build_connector(4, 8, "conv1x1")(torch.randn(2, 4, 3, 3)).shape == (2, 8, 3, 3)
    assert isinstance(build_connector(8, 8, "identity"), nn.Identity)
    with pytest.raises(ValueError, match="identity"):
        build_connector(4, 8, "identity")
    with pytest.raises(ValueError, match="conv1x1, conv1x1-bn, identity"):
        build_connector(4, 8, "linear")
