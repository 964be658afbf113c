"""Structural knowledge distillation: an SSIM loss between student and teacher feature maps.

Source: de Rijk, Schneider, Cordts & Gavrila, "Structural Knowledge Distillation for Object Detection",
NeurIPS 2022. The paper replaces the pixel-wise l_p feature-imitation loss on the FPN levels by the structural
similarity index (SSIM, Wang et al., IEEE TIP 2004) computed channel by channel. There is no official code, so
this module is a documented reading; each open point is an option.

Local statistics use a Gaussian window w (11 taps, sigma = 1.5, normalised to sum 1), applied per channel:

    mu_x = w * x,   sigma_x^2 = w * x^2 - mu_x^2,   sigma_xy = w * (x y) - mu_x mu_y

    l  = (2 mu_s mu_t + C1) / (mu_s^2 + mu_t^2 + C1)                     luminance
    c  = (2 sigma_s sigma_t + C2) / (sigma_s^2 + sigma_t^2 + C2)         contrast
    s  = (sigma_st + C3) / (sigma_s sigma_t + C3)                        structure
    cs = (2 sigma_st + C2) / (sigma_s^2 + sigma_t^2 + C2)  (= c * s exactly when C3 = C2 / 2)

    C1 = (0.01 L)^2, C2 = (0.03 L)^2, C3 = C2 / 2, L = data_range = 1.

``components`` selects the similarity: ``"lcs"`` = l * cs (full SSIM, default), ``"cs"`` = cs, ``"s"`` = s. The
per-level loss is a mean over batch, channels and positions, in one of two forms (``form``):

    "halved"    (default):  L = mean (1 - SSIM) / 2,   in [0, 1]
    "one_minus":            L = mean (1 - SSIM),       in [0, 2]   (= 2 x "halved")

``"halved"`` is the paper's L_SSIM = (1 - SSIM) / 2 as third-party transcriptions of its equations give it
(the paper's text itself could not be read from here), and it is ``kornia.losses.ssim_loss``, which the same
summaries name as the paper's one-line implementation; ``"one_minus"`` is the unhalved form. The form only
rescales the loss, so lambda (``method.feature.weight``, which multiplies the sum of this loss over FPN levels
in ``kdlab.losses.multilevel``) must be read together with it: lambda * "one_minus" == (2 lambda) * "halved".

Choices and why:

* Filtering: a separable depthwise convolution (one 1 x k and one k x 1 conv, ``groups`` = channels) with
  reflect padding to keep the map size (``padding="same"``). This is kornia's default (``kornia.metrics.ssim``,
  ``padding="same"``, reflect border), so the full SSIM matches ``kornia.losses.ssim_loss`` to float rounding;
  ``padding="valid"`` (no padding, the MATLAB reference's choice) is available. For speed, x and y are padded
  once, the five moment inputs (x, x^2, xy, y, y^2) are stacked into one 5C-channel tensor and filtered by ONE
  depthwise conv per direction. The backward is hand-written (``_GaussianSimilarity``): closed-form
  derivatives of the similarity with respect to the moments, then one back-filtering conv per direction over
  only the maps the student needs; autograd's op-by-op chain was slower and back-filtered the teacher's maps
  too. Double backward (``create_graph=True``) is not supported.
  Half-precision inputs are computed in float32 (the moments' differences E[x^2] - mu^2 cancel badly in fp16).
* psi, min-max normalisation (``kdlab.losses.feature.minmax_normalize``), applied to student and teacher
  separately before SSIM, default per (sample, channel) map. FPN features are signed and unbounded, while SSIM's
  constants assume data in [0, L]. Worse, on signed data SSIM(x, -x) is close to +1: wherever the local mean and
  contrast dominate C1 and C2, the luminance term and the contrast-structure term are both close to -1, and their
  product is close to +1 (measured: mean SSIM(x, -x) ~ 0.9-1.0 for N(0, 1) or N(2, 1) maps), so a student could
  learn the negated teacher for free. After min-max scaling, psi(-x) = 1 - psi(x): both inputs are non-negative,
  the luminance term stays positive, and SSIM(x, -x) is strongly negative (~ -0.94 on the same maps). Scaling per
  (sample, channel) matches SSIM's per-channel statistics: a channel with a small activation range is not
  squashed to a near-constant by a large range elsewhere in the level (which is what ``"level"`` does).
* Small maps: when the window is larger than the map, it is shrunk to the largest odd size <= min(H, W) and
  sigma is scaled by the same factor (k' / k), so the window covers the same fraction of its (shrunk) support
  rather than reflecting the map into itself. A 1 x 1 map thus gets a 1-tap window: mu = x, all variances and
  the covariance are 0, so cs = s = 1 and the full SSIM reduces to the luminance term
  l = (2 x y + C1) / (x^2 + y^2 + C1). The ``"cs"`` and ``"s"`` losses of a 1 x 1 map are therefore 0 (there is
  no structure to compare), with finite gradients.
* ``"s"`` needs sigma_s sigma_t = sqrt(var_s) sqrt(var_t): variances are clamped at 1e-12 before the square root
  (``E[x^2] - mu^2`` can round slightly below 0, and sqrt has an infinite slope at 0), so values change by at most
  ~1e-6 * sigma and gradients stay finite. ``"lcs"`` and ``"cs"`` use the standard unclamped form, like kornia.
* The loss is not clamped to [0, 1] (kornia clamps): in exact arithmetic it already lies there, and a clamp would
  only zero the gradient where rounding pushes SSIM past 1.
* The teacher is detached inside the losses: the teacher never receives gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.feature import GRANULARITIES, minmax_normalize

COMPONENTS = ("lcs", "cs", "s")
PADDINGS = ("same", "valid")
# "halved": (1 - SSIM) / 2 in [0, 1] (the paper's, kornia.losses.ssim_loss); "one_minus": 1 - SSIM in [0, 2].
SSIM_FORMS = ("halved", "one_minus")

# Floor for the variances under the square root of the structure term: finite d sqrt / d var at var = 0.
_VARIANCE_EPS = 1e-12
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def effective_window(height: int, width: int, window_size: int = 11, sigma: float = 1.5) -> tuple[int, float]:
    """The (taps, sigma) actually used on an H x W map: the window shrinks to the largest odd size <= min(H, W).

    sigma scales with the window (``sigma * k' / k``) so the shrunk window has the same shape relative to its
    width. A map at least as large as the window keeps ``(window_size, sigma)``.
    """
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    smallest_side = min(height, width)
    if smallest_side < 1:
        raise ValueError(f"feature maps must be at least 1 x 1, got {height} x {width}")
    if smallest_side >= window_size:
        return window_size, sigma
    taps = smallest_side if smallest_side % 2 == 1 else smallest_side - 1
    return taps, sigma * taps / window_size


def gaussian_window_1d(taps: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Sampled Gaussian ``exp(-n^2 / 2 sigma^2)`` at integer offsets n from the centre, normalised to sum 1.

    Built in float64 and rounded once, so float32 callers get correctly rounded taps.
    """
    offsets = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    window = torch.exp(-(offsets**2) / (2.0 * sigma * sigma))
    return (window / window.sum()).to(dtype=dtype, device=device)


def _separable_blur(maps: Tensor, window: Tensor) -> Tensor:
    """'Valid' depthwise Gaussian filtering of every channel: a 1 x k then a k x 1 conv (groups = channels)."""
    groups, taps = maps.shape[1], window.numel()
    # One filter per group, i.e. per map.
    along_w = window.view(1, 1, 1, taps).repeat(groups, 1, 1, 1)
    along_h = window.view(1, 1, taps, 1).repeat(groups, 1, 1, 1)
    maps = F.conv2d(maps, along_w, groups=groups)
    return F.conv2d(maps, along_h, groups=groups)


def _stacked_moments(x: Tensor, y: Tensor, window: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Local mu_x, E[x^2], E[xy], mu_y, E[y^2] of two padded maps: ONE conv per direction over 5C maps."""
    batch, channels, height, width = x.shape
    stacked = x.new_empty(batch, 5, channels, height, width)
    stacked[:, 0] = x
    torch.mul(x, x, out=stacked[:, 1])
    torch.mul(x, y, out=stacked[:, 2])
    stacked[:, 3] = y
    torch.mul(y, y, out=stacked[:, 4])
    filtered = _separable_blur(stacked.view(batch, 5 * channels, height, width), window)
    return filtered.view(batch, 5, channels, *filtered.shape[-2:]).unbind(dim=1)


class _GaussianSimilarity(torch.autograd.Function):
    """SSIM ("lcs"), cs or s map of two padded maps, with a hand-written backward.

    Forward: the five local moments come from ONE depthwise conv per direction over the stacked
    (x, x^2, xy, y, y^2) maps, then the closed-form similarity (module docstring).

    Backward, instead of autograd's op-by-op chain: (1) the closed-form derivatives of the similarity with
    respect to the moments, only for the moments of the inputs that need a gradient (the detached teacher
    needs none, which saves 2/5 of the back-filtering); (2) the adjoint of the Gaussian filter, which for a
    symmetric window is the same separable filter run as a full (zero-padded) convolution, again ONE conv per
    direction; (3) the chain rule through the products, dL/dx = G[mu_x] + 2 x G[E x^2] + y G[E xy].

    Moment derivatives, with A1 = 2 mu_x mu_y + C1, B1 = mu_x^2 + mu_y^2 + C1, A2 = 2 sigma_xy + C2,
    B2 = sigma_x^2 + sigma_y^2 + C2 (sigma_x^2 = E[x^2] - mu_x^2, sigma_xy = E[xy] - mu_x mu_y):

        lcs, S = A1 A2 / (B1 B2):  dS/dE[xy] = 2 A1 / (B1 B2),  dS/dE[x^2] = -S / B2,
                                   dS/dmu_x = 2 mu_y (A2 - A1) / (B1 B2) + 2 mu_x S (1/B2 - 1/B1)
        cs,  S = A2 / B2:          dS/dE[xy] = 2 / B2,  dS/dE[x^2] = -S / B2,  dS/dmu_x = 2 (mu_x S - mu_y) / B2
        s,   S = (sigma_xy + C3) / D, D = sigma_x sigma_y + C3:
                                   dS/dE[xy] = 1 / D,  dS/dE[x^2] = -S sigma_y / (2 sigma_x D)  (0 where the
                                   variance was clamped),  dS/dmu_x = -mu_y / D - 2 mu_x dS/dE[x^2]

    and the same with x and y swapped. Each is checked against autograd by ``torch.autograd.gradcheck`` in the
    tests.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, window: Tensor, components: str, c1: float, c2: float) -> Tensor:
        mu_x, mean_xx, mean_xy, mu_y, mean_yy = _stacked_moments(x, y, window)
        ctx.components = components
        # No autograd inside forward: every temporary can be updated in place.
        mu_xy = mu_x * mu_y
        if components == "s":
            var_x = mean_xx.sub_(mu_x * mu_x)
            var_y = mean_yy.sub_(mu_y * mu_y)
            std_x = var_x.clamp_min(_VARIANCE_EPS).sqrt_()
            std_y = var_y.clamp_min(_VARIANCE_EPS).sqrt_()
            den = (std_x * std_y).add_(c2 / 2)
            similarity = mean_xy.sub_(mu_xy).add_(c2 / 2).div_(den)
            ctx.save_for_backward(x, y, window, mu_x, mu_y, var_x, var_y, std_x, std_y, den, similarity)
            return similarity
        mu_sq = (mu_x * mu_x).addcmul_(mu_y, mu_y)
        a2 = mean_xy.sub_(mu_xy).mul_(2.0).add_(c2)
        b2 = mean_xx.add_(mean_yy).sub_(mu_sq).add_(c2)
        if components == "cs":
            similarity = a2 / b2
            ctx.save_for_backward(x, y, window, mu_x, mu_y, b2, similarity)
            return similarity
        a1 = mu_xy.mul_(2.0).add_(c1)
        b1 = mu_sq.add_(c1)
        # One division for l * cs, as in the standard (and kornia's) form.
        similarity = (a1 * a2).div_(b1 * b2)
        ctx.save_for_backward(x, y, window, mu_x, mu_y, a1, a2, b1, b2, similarity)
        return similarity

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y, window, mu_x, mu_y, *rest = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_y):
            return None, None, None, None, None, None
        # Moment gradients in the stacked order mu_x, E[x^2], E[xy], mu_y, E[y^2]; x needs 0..2, y needs 2..4.
        # They are written straight into the interior of the zero-padded buffer that the adjoint filter reads
        # (a full convolution pads by k - 1): no separate pad copy, and only the maps that are needed.
        first, last = (0 if need_x else 2), (5 if need_y else 3)
        batch, channels, height, width = grad.shape
        full = window.numel() - 1
        padded = grad.new_zeros(batch, last - first, channels, height + 2 * full, width + 2 * full)
        interior = padded[..., full : full + height, full : full + width]

        def slot(moment: int) -> Tensor:
            return interior[:, moment - first]

        if ctx.components == "lcs":
            a1, a2, b1, b2, similarity = rest
            grad_over_den = grad / (b1 * b2)
            grad_s = grad * similarity
            weight_mu_other = (a2 - a1).mul_(grad_over_den).mul_(2.0)
            weight_mu_self = (b2.reciprocal() - b1.reciprocal()).mul_(grad_s).mul_(2.0)
            torch.mul(a1, grad_over_den, out=slot(2)).mul_(2.0)
            grad_var = torch.div(grad_s, b2).neg_()
            if need_x:
                torch.mul(mu_y, weight_mu_other, out=slot(0)).addcmul_(mu_x, weight_mu_self)
                slot(1).copy_(grad_var)
            if need_y:
                torch.mul(mu_x, weight_mu_other, out=slot(3)).addcmul_(mu_y, weight_mu_self)
                slot(4).copy_(grad_var)
        elif ctx.components == "cs":
            b2, similarity = rest
            grad_over_den = grad / b2
            torch.mul(grad_over_den, 2.0, out=slot(2))
            grad_var = torch.mul(similarity, grad_over_den).neg_()
            if need_x:
                torch.mul(mu_x, similarity, out=slot(0)).sub_(mu_y).mul_(slot(2))
                slot(1).copy_(grad_var)
            if need_y:
                torch.mul(mu_y, similarity, out=slot(3)).sub_(mu_x).mul_(slot(2))
                slot(4).copy_(grad_var)
        else:
            var_x, var_y, std_x, std_y, den, similarity = rest
            torch.div(grad, den, out=slot(2))
            half_grad_s = torch.mul(similarity, slot(2)).mul_(-0.5)
            # Zero where clamp_min cut the variance, as autograd's clamp would.
            if need_x:
                grad_var_x = (std_y / std_x).mul_(half_grad_s).mul_(var_x >= _VARIANCE_EPS)
                slot(1).copy_(grad_var_x)
                torch.mul(mu_y, slot(2), out=slot(0)).neg_().addcmul_(mu_x, grad_var_x, value=-2.0)
            if need_y:
                grad_var_y = (std_x / std_y).mul_(half_grad_s).mul_(var_y >= _VARIANCE_EPS)
                slot(4).copy_(grad_var_y)
                torch.mul(mu_x, slot(2), out=slot(3)).neg_().addcmul_(mu_y, grad_var_y, value=-2.0)

        # Explicit zero padding, not the conv's own: oneDNN's depthwise conv was ~4x slower with it (measured).
        back = _separable_blur(padded.view(batch, (last - first) * channels, *padded.shape[-2:]), window)
        back = back.view(batch, last - first, channels, *back.shape[-2:])
        grad_x = grad_y = None
        if need_x:
            grad_x = torch.addcmul(back[:, 0], x, back[:, 1], value=2.0).addcmul_(y, back[:, 2])
        if need_y:
            grad_y = torch.addcmul(back[:, 3 - first], y, back[:, 4 - first], value=2.0)
            grad_y.addcmul_(x, back[:, 2 - first])
        return grad_x, grad_y, None, None, None, None


def _similarity(
    x: Tensor, y: Tensor, taps: int, sigma: float, components: str, c1: float, c2: float, padding: str
) -> Tensor:
    """The SSIM map (or its cs / s part), computed outside autocast (SSIM needs float32 or more)."""
    radius = taps // 2
    with torch.autocast(device_type=x.device.type, enabled=False):
        if padding == "same" and radius > 0:
            # Pad x and y, not the 5 stacked maps: products of reflected maps are the reflected products, so
            # the pad (and its backward) touches 2C maps instead of 5C. One 2-D pad up front equals kornia's
            # pad-filter-pad-filter, because reflecting rows commutes with filtering along the rows.
            x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
            y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
        window = gaussian_window_1d(taps, sigma, x.dtype, x.device)
        return _GaussianSimilarity.apply(x, y, window, components, c1, c2)


def _checked_similarity(
    x: Tensor,
    y: Tensor,
    window_size: int,
    sigma: float,
    components: str,
    data_range: float,
    padding: str,
) -> Tensor:
    """Validate the options and shapes, then compute the similarity map."""
    if components not in COMPONENTS:
        raise ValueError(f"unknown SSIM components {components!r}; allowed values: {', '.join(COMPONENTS)}")
    if padding not in PADDINGS:
        raise ValueError(f"unknown SSIM padding {padding!r}; allowed values: {', '.join(PADDINGS)}")
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(
            f"SSIM needs two B x C x H x W tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    taps, sigma = effective_window(x.shape[-2], x.shape[-1], window_size, sigma)
    if x.dtype in _HALF_DTYPES or y.dtype in _HALF_DTYPES:
        x, y = x.float(), y.float()
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    return _similarity(x, y, taps, sigma, components, c1, c2, padding)


def ssim_map(
    x: Tensor,
    y: Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    components: str = "lcs",
    data_range: float = 1.0,
    padding: str = "same",
) -> Tensor:
    """Per-position, per-channel SSIM (or its ``"cs"`` / ``"s"`` part) of two B x C x H x W tensors.

    Symmetric in x and y; no normalisation and no detaching happen here. Returns B x C x H x W for
    ``padding="same"``, B x C x (H - k + 1) x (W - k + 1) for ``"valid"`` with k the effective window.
    """
    return _checked_similarity(x, y, window_size, sigma, components, data_range, padding)


def ssim_loss(
    student: Tensor,
    teacher: Tensor,
    components: str = "lcs",
    normalize: str = "sample_channel",
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    padding: str = "same",
    form: str = "halved",
) -> Tensor:
    """One level's structural KD loss, a mean over b, c, h, w of S = SSIM(psi(student), psi(teacher)):

        form="halved"    (default):  mean (1 - S) / 2   in [0, 1]   (= kornia.losses.ssim_loss)
        form="one_minus":            mean (1 - S)       in [0, 2]

    Source: de Rijk et al., NeurIPS 2022, L_SSIM (module docstring). A weight lambda on this loss means
    lambda / 2 per unit of (1 - SSIM) for ``"halved"`` and lambda for ``"one_minus"``. The teacher is
    detached. Student and teacher must have the same B x C x H x W shape.
    """
    if form not in SSIM_FORMS:
        raise ValueError(f"unknown SSIM loss form {form!r}; allowed values: {', '.join(SSIM_FORMS)}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher features must have the same shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    if normalize not in GRANULARITIES:
        raise ValueError(f"unknown normalize {normalize!r}; allowed values: {', '.join(GRANULARITIES)}")
    teacher = teacher.detach()
    if student.dtype in _HALF_DTYPES or teacher.dtype in _HALF_DTYPES:
        # psi's division and SSIM's cancellations need float32 precision.
        student, teacher = student.float(), teacher.float()
    similarity = _checked_similarity(
        minmax_normalize(student, normalize),
        minmax_normalize(teacher, normalize),
        window_size,
        sigma,
        components,
        data_range,
        padding,
    )
    # mean((1 - m) / 2) == (1 - mean(m)) / 2, without another full-size temporary.
    dissimilarity = 1.0 - similarity.mean()
    return dissimilarity * 0.5 if form == "halved" else dissimilarity


__all__ = [
    "COMPONENTS",
    "PADDINGS",
    "SSIM_FORMS",
    "effective_window",
    "gaussian_window_1d",
    "minmax_normalize",
    "ssim_loss",
    "ssim_map",
]
