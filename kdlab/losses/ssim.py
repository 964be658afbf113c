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
per-level loss is ``mean over batch, channels and positions of (1 - SSIM) / 2``, which lies in [0, 1].

Choices and why:

* Filtering: a separable depthwise convolution (one 1 x k and one k x 1 conv, ``groups`` = channels) with
  reflect padding to keep the map size (``padding="same"``). This is kornia's default (``kornia.metrics.ssim``,
  ``padding="same"``, reflect border), so the full SSIM matches ``kornia.losses.ssim_loss`` to float rounding;
  ``padding="valid"`` (no padding, the MATLAB reference's choice) is available. For speed, x and y are padded
  once, the five moment inputs (x, x^2, xy, y, y^2) are stacked into one 5C-channel tensor and filtered by ONE
  depthwise conv per direction, and a hand-written backward back-filters only the maps the student needs. On
  CPU the channels are processed in blocks of a few MB (see ``_BLOCK_BYTES``); on GPU in one block.
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

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.losses.feature import GRANULARITIES, feature_distance, minmax_normalize

COMPONENTS = ("lcs", "cs", "s")
PADDINGS = ("same", "valid")
FEATURE_LOSS_KINDS = ("ssim", "l1", "l2", "none")

# Floor for the variances under the square root of the structure term: finite d sqrt / d var at var = 0.
_VARIANCE_EPS = 1e-12
_HALF_DTYPES = (torch.float16, torch.bfloat16)

Levels = Sequence[Tensor] | Mapping[str, Tensor]
Adapters = nn.ModuleList | nn.ModuleDict | Sequence[nn.Module] | Mapping[str, nn.Module] | None


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


# On CPU, work is split into channel blocks whose stacked moment tensor stays under this many bytes, so each
# block's pipeline (pad, two convs, SSIM arithmetic) runs on cache- and allocator-friendly tensors: glibc serves
# allocations of tens of MB with fresh mmap'd pages, whose page faults made one 5C conv over a 2 x 256 x 100 x 100
# level ~5x slower than the same work in 8-channel blocks (measured on the dev VM). Small levels are one block:
# one depthwise conv per direction over all 5C maps. GPUs get one block (a loop would only add kernel launches).
_BLOCK_BYTES = 4 * 2**20
_BLOCK_CHANNEL_MULTIPLE = 8


def _separable_blur(maps: Tensor, window: Tensor) -> Tensor:
    """'Valid' depthwise Gaussian filtering of every channel: a 1 x k then a k x 1 conv (groups = channels)."""
    groups, taps = maps.shape[1], window.numel()
    # One filter per group, i.e. per map.
    along_w = window.view(1, 1, 1, taps).repeat(groups, 1, 1, 1)
    along_h = window.view(1, 1, taps, 1).repeat(groups, 1, 1, 1)
    maps = F.conv2d(maps, along_w, groups=groups)
    return F.conv2d(maps, along_h, groups=groups)


class _GaussianMoments(torch.autograd.Function):
    """Local moments of two padded maps with ONE depthwise conv per direction over the 5C stacked maps.

    Output channels, in blocks of C: mu_x, E[x^2], E[xy], mu_y, E[y^2] (valid positions only). A hand-written
    backward because autograd would (1) back-filter all 5C maps even when y (the detached teacher) needs no
    gradient, 2/5 of the backward conv work wasted, and (2) keep the stacked products and a cat for backward.
    The order puts x's three moments first and y's last, so the maps each input needs are one channel slice.
    Backward: the filter is linear and the Gaussian symmetric, so its adjoint is the same filter as a full
    (zero-padded) convolution; then the chain rule through the products,
    dL/dx = G[mu_x] + 2 x G[E x^2] + y G[E xy]  (and symmetrically for y).
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, window: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        stacked = x.new_empty(batch, 5, channels, height, width)
        stacked[:, 0] = x
        torch.mul(x, x, out=stacked[:, 1])
        torch.mul(x, y, out=stacked[:, 2])
        stacked[:, 3] = y
        torch.mul(y, y, out=stacked[:, 4])
        ctx.save_for_backward(x, y, window)
        return _separable_blur(stacked.view(batch, 5 * channels, height, width), window)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, y, window = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        channels, radius = x.shape[1], window.numel() // 2
        first = 0 if need_x else 2  # x needs blocks 0..2, y needs blocks 2..4
        last = 5 if need_y else 3
        # Explicit zero padding: oneDNN's depthwise conv was ~4x slower with the conv's own padding (measured).
        padded = F.pad(grad[:, first * channels : last * channels], (2 * radius,) * 4)
        back = _separable_blur(padded, window)
        back = back.view(x.shape[0], last - first, channels, x.shape[2], x.shape[3])
        grad_x = grad_y = None
        if need_x:
            grad_x = torch.addcmul(back[:, 0], x, back[:, 1], value=2.0).addcmul_(y, back[:, 2])
        if need_y:
            grad_y = torch.addcmul(back[:, 3 - first], y, back[:, 4 - first], value=2.0)
            grad_y.addcmul_(x, back[:, 2 - first])
        return grad_x, grad_y, None


def _local_moments(
    x: Tensor, y: Tensor, taps: int, sigma: float, padding: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gaussian-weighted local mu_x, mu_y, E[x^2], E[y^2], E[xy] of two B x C x H x W maps."""
    radius = taps // 2
    if padding == "same" and radius > 0:
        # Pad x and y, not the 5 stacked maps: products of reflected maps are the reflected products, so the
        # pad (and its backward) touches 2C maps instead of 5C. One 2-D pad up front equals kornia's
        # pad-filter-pad-filter, because reflecting rows commutes with filtering along the rows.
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
        y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    window = gaussian_window_1d(taps, sigma, x.dtype, x.device)
    mu_x, mean_xx, mean_xy, mu_y, mean_yy = _GaussianMoments.apply(x, y, window).chunk(5, dim=1)
    return mu_x, mu_y, mean_xx, mean_yy, mean_xy


def _similarity(
    x: Tensor, y: Tensor, taps: int, sigma: float, components: str, c1: float, c2: float, padding: str
) -> Tensor:
    """The SSIM map (or its cs / s part) of one channel block, outside autocast (SSIM needs float32 or more)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _similarity_from_moments(*_local_moments(x, y, taps, sigma, padding), components, c1, c2)


def _similarity_from_moments(
    mu_x: Tensor,
    mu_y: Tensor,
    mean_xx: Tensor,
    mean_yy: Tensor,
    mean_xy: Tensor,
    components: str,
    c1: float,
    c2: float,
) -> Tensor:
    """SSIM ("lcs"), cs or s from the local moments (formulas in the module docstring)."""
    mu_xy = mu_x * mu_y
    if components == "s":
        c3 = c2 / 2
        std_x = (mean_xx - mu_x * mu_x).clamp_min(_VARIANCE_EPS).sqrt()
        std_y = (mean_yy - mu_y * mu_y).clamp_min(_VARIANCE_EPS).sqrt()
        return (mean_xy - mu_xy + c3) / (std_x * std_y + c3)
    # The in-place steps only touch fresh temporaries that no backward formula saves: fewer full-size
    # allocations for the same arithmetic.
    mu_sq = (mu_x * mu_x).addcmul_(mu_y, mu_y)  # mu_x^2 + mu_y^2
    cs_num = (mean_xy - mu_xy).mul_(2.0).add_(c2)  # 2 sigma_xy + C2
    cs_den = (mean_xx + mean_yy).sub_(mu_sq).add_(c2)  # sigma_x^2 + sigma_y^2 + C2
    if components == "cs":
        return cs_num / cs_den
    l_num = (mu_xy * 2.0).add_(c1)  # 2 mu_x mu_y + C1
    l_den = mu_sq.add_(c1)  # mu_x^2 + mu_y^2 + C1
    # One division for l * cs, as in the standard (and kornia's) form.
    return (l_num * cs_num) / (l_den * cs_den)


def _similarity_blocks(
    x: Tensor,
    y: Tensor,
    window_size: int,
    sigma: float,
    components: str,
    data_range: float,
    padding: str,
) -> Iterator[Tensor]:
    """Validate, then yield the similarity map of each channel block (see ``_BLOCK_BYTES``)."""
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
    batch, channels, height, width = x.shape
    taps, sigma = effective_window(height, width, window_size, sigma)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    if x.dtype in _HALF_DTYPES or y.dtype in _HALF_DTYPES:
        x, y = x.float(), y.float()
    block_channels = channels
    if x.device.type == "cpu":
        pad = 2 * (taps // 2) if padding == "same" else 0
        bytes_per_channel = 5 * batch * (height + pad) * (width + pad) * x.element_size()
        # Whole multiples of 8 channels: oneDNN's depthwise kernels work on groups of 8 or 16 channels.
        multiple = _BLOCK_CHANNEL_MULTIPLE
        block_channels = max(multiple, int(_BLOCK_BYTES // bytes_per_channel) // multiple * multiple)
    # split, not slicing in a loop: its backward assembles the input gradient once instead of adding up one
    # zero-filled full-size tensor per block.
    for x_block, y_block in zip(x.split(block_channels, dim=1), y.split(block_channels, dim=1)):
        yield _similarity(x_block, y_block, taps, sigma, components, c1, c2, padding)


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
    maps = list(_similarity_blocks(x, y, window_size, sigma, components, data_range, padding))
    return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)


def _map_positions(shape: torch.Size, window_size: int, padding: str) -> int:
    """Positions per channel of the SSIM map: H * W for "same", the valid positions of the effective window else."""
    height, width = shape[-2], shape[-1]
    if padding == "same":
        return height * width
    taps, _ = effective_window(height, width, window_size, 1.0)
    return (height - taps + 1) * (width - taps + 1)


def ssim_loss(
    student: Tensor,
    teacher: Tensor,
    components: str = "lcs",
    normalize: str = "sample_channel",
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    padding: str = "same",
) -> Tensor:
    """One level's structural KD loss: ``mean (1 - SSIM(psi(student), psi(teacher))) / 2`` over b, c, h, w.

    The teacher is detached. Student and teacher must have the same B x C x H x W shape.
    """
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
    blocks = _similarity_blocks(
        minmax_normalize(student, normalize),
        minmax_normalize(teacher, normalize),
        window_size,
        sigma,
        components,
        data_range,
        padding,
    )
    # mean((1 - m) / 2) == (1 - mean(m)) / 2: sum block by block, never building the full map.
    total = sum(block.sum() for block in blocks)
    count = student.shape[0] * student.shape[1] * _map_positions(student.shape, window_size, padding)
    return (1.0 - total / count) * 0.5


def _as_named_levels(levels: Levels, what: str) -> list[tuple[str, Tensor]]:
    if isinstance(levels, Mapping):
        return [(str(name), level) for name, level in levels.items()]
    if isinstance(levels, (list, tuple)):
        return [(str(index), level) for index, level in enumerate(levels)]
    raise ValueError(f"{what} levels must be a list/tuple or a dict of tensors, got {type(levels).__name__}")


def _adapter_for(adapters: Adapters, name: str, index: int) -> nn.Module | None:
    if adapters is None:
        return None
    if isinstance(adapters, (Mapping, nn.ModuleDict)):
        if name not in adapters:
            raise ValueError(
                f"no adapter for feature level {name!r}; adapters exist for {sorted(adapters.keys())}"
            )
        return adapters[name]
    if index >= len(adapters):
        raise ValueError(f"no adapter for feature level {index}: only {len(adapters)} adapters were given")
    return adapters[index]


def multilevel_feature_loss(
    student_levels: Levels,
    teacher_levels: Levels,
    kind: str = "ssim",
    weight: float = 1.0,
    components: str = "lcs",
    normalize: str = "sample_channel",
    adapters: Adapters = None,
    window_size: int = 11,
    sigma: float = 1.5,
) -> Tensor:
    """``weight * sum over levels`` of the per-level feature loss (``"ssim"``, ``"l1"``, ``"l2"`` or ``"none"``).

    Levels are matched by position (lists) or by key (dicts; the two must have the same keys). ``adapters`` maps
    each student level before the loss (e.g. a connector per FPN level), indexed like the levels. The teacher
    levels are detached. ``"none"`` returns a zero scalar on the student's device (a no-distillation baseline).
    ``"l1"``/``"l2"`` use the same psi as ``"ssim"`` (pass ``normalize="none"`` for the raw-feature baseline).
    """
    if kind not in FEATURE_LOSS_KINDS:
        raise ValueError(
            f"unknown feature loss kind {kind!r}; allowed values: {', '.join(FEATURE_LOSS_KINDS)}"
        )
    if isinstance(student_levels, Mapping) != isinstance(teacher_levels, Mapping):
        raise ValueError("student and teacher feature levels must both be lists or both be dicts")
    student_named = _as_named_levels(student_levels, "student")
    teacher_named = _as_named_levels(teacher_levels, "teacher")
    if [name for name, _ in student_named] != [name for name, _ in teacher_named]:
        if isinstance(student_levels, Mapping) and isinstance(teacher_levels, Mapping):
            if set(student_levels) == set(teacher_levels):
                teacher_named = [(name, teacher_levels[name]) for name, _ in student_named]
            else:
                raise ValueError(
                    f"student and teacher feature levels differ: {sorted(student_levels)} vs {sorted(teacher_levels)}"
                )
        else:
            raise ValueError(
                f"student has {len(student_named)} feature levels but teacher has {len(teacher_named)}"
            )
    if not student_named:
        raise ValueError("no feature levels given")

    first_student = student_named[0][1]
    total = torch.zeros((), dtype=first_student.dtype, device=first_student.device)
    if kind == "none":
        return total
    for index, ((name, student), (_, teacher)) in enumerate(zip(student_named, teacher_named)):
        adapter = _adapter_for(adapters, name, index)
        if adapter is not None:
            student = adapter(student)
        teacher = teacher.detach()
        if student.shape != teacher.shape:
            raise ValueError(
                f"feature level {name!r}: student shape {tuple(student.shape)} (after the adapter) does not match "
                f"teacher shape {tuple(teacher.shape)}"
            )
        if kind == "ssim":
            total = total + ssim_loss(
                student,
                teacher,
                components=components,
                normalize=normalize,
                window_size=window_size,
                sigma=sigma,
            )
        else:
            total = total + feature_distance(student, teacher, kind=kind, normalize=normalize)
    return weight * total


__all__ = [
    "COMPONENTS",
    "FEATURE_LOSS_KINDS",
    "PADDINGS",
    "effective_window",
    "gaussian_window_1d",
    "minmax_normalize",
    "multilevel_feature_loss",
    "ssim_loss",
    "ssim_map",
]
