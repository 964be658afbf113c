"""FGD: focal and global knowledge distillation (Yang, Li, Jiang, Shu, Yuan, Liu & Zhou, "Focal and Global
Knowledge Distillation for Detectors", CVPR 2022).

On one FPN level (N x C x H x W, student already mapped to the teacher's width by the adapter), with
|F| the absolute features and T the temperature:

    A^S(F) = H W  softmax_{h,w}(mean_c |F| / T)          spatial attention,  N x H x W
    A^C(F) = C    softmax_c(mean_{h,w} |F| / T)           channel attention,  N x C
    M_fg[n, h, w] = max over the boxes r of image n that cover (h, w) of 1 / (H_r W_r),   else 0
    M_bg[n, h, w] = [M_fg = 0] / sum_{h,w} [M_fg = 0]      (0 everywhere when the boxes cover the map)

    L_fg  = sum_{n,c,h,w} M_fg A^S(F_t) A^C(F_t) (F_s - F_t)^2 / N
    L_bg  = sum_{n,c,h,w} M_bg A^S(F_t) A^C(F_t) (F_s - F_t)^2 / N
    L_at  = (sum_{n,c} |A^C(F_s) - A^C(F_t)| + sum_{n,h,w} |A^S(F_s) - A^S(F_t)|) / N
    L_gl  = sum_{n,c,h,w} (G_s(F_s) - G_t(F_t))^2 / N
    L     = alpha L_fg + beta L_bg + gamma L_at + lambda L_gl

G is a GcBlock (Cao et al., "GCNet", 2019): a 1x1 conv to one channel, softmax over the positions, the
attention-pooled context vector (N x C x 1 x 1) through 1x1 conv (C -> C/2), LayerNorm, ReLU, 1x1 conv
(C/2 -> C), added to every position: G(F) = F + transform(context(F)). The student and the teacher side have
one G each (both trained with the student; the teacher's features are detached, so only G_t learns from them).

Boxes to the level (the mask): a box (x1, y1, x2, y2) in the pixels of the image batch the backbone sees is
scaled by (W / W_img, H / H_img); it covers rows floor(y1') .. ceil(y2') and columns floor(x1') .. ceil(x2'),
both ends included, and H_r W_r counts those rows and columns (ceil(y2') + 1 - floor(y1')) (ceil(x2') + 1 -
floor(x1')) even where they run past the map (the references' arithmetic). So a box always marks at least one
cell: on a 1 x 1 level every image with a box is all foreground (M_fg = 1/4 there with the +1) and L_bg is 0.

Source: the authors' code ``yzd-v/FGD`` ``mmdet/distillation/losses/fgd.py`` (``FeatureLoss``; read at
commit f1da292c, the version that indexes the mask as [rows, columns]; an earlier one, 04900add, swapped
them) and MMRazor ``mmrazor/models/losses/fgd_loss.py`` (``FGDLoss``, the same arithmetic). Defaults
(``FGD_DEFAULTS``): ``temp`` 0.5 and the weights of the authors' RetinaNet configs
``configs/distillers/fgd/fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py`` (and
``fgd_retina_r101_fpn_2x_distill_retina_r50_fpn_2x_coco.py``): ``alpha_fgd=0.001``, ``beta_fgd=0.0005``,
``gamma_fgd=0.0005``, ``lambda_fgd=0.000005``, every FPN level, summed. (``FeatureLoss``'s own default
``gamma_fgd`` is 0.001; their Faster R-CNN config ``fgd_faster_rcnn_r101_fpn_2x_distill_faster_rcnn_r50_fpn_2x
_coco.py`` uses 0.00005 / 0.000025 / 0.00005 / 0.0000005.) Initialisation as the references: the context
convs Kaiming-normal (fan_in, ReLU gain) with zero bias, the last conv of each transform zero (so G is the
identity at the start), the rest PyTorch's default.

Readings that differ from the references (neither changes the formula above):

* the box scale uses the size of the padded batch tensor the backbone sees (torchvision pads to a multiple
  of 32), which is what the feature map covers; the references divide by the unpadded resized image size
  (mmdet ``img_shape``), which stretches boxes by up to 31 px / side when an image is padded. Identical
  without padding;
* mask indices below 0 start at 0 (the references' slice would wrap around); the mask is built with
  comparisons rather than a Python loop of slices, the same cells;
* the weighted squared error is written as ``w (F_s - F_t)^2`` instead of ``(sqrt(w) F_s - sqrt(w) F_t)^2``
  (equal for w >= 0, and the same gradient).

Scale: L_fg, L_bg and L_gl are sums over channels (and L_gl over positions), so they grow with C (and H W);
that is why the weights are 1e-3 .. 5e-6. In Structural KD ``method.feature.weight`` multiplies the sum over
levels of L, so ``weight: 1`` reproduces the references.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# temp, alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd of the authors' RetinaNet configs (module doc)
FGD_DEFAULTS = {"temp": 0.5, "alpha_fgd": 0.001, "beta_fgd": 0.0005, "gamma_fgd": 0.0005, "lambda_fgd": 0.000005}
FGD_TERMS = ("fg", "bg", "attention", "global")


class GlobalContext(nn.Module):
    """FGD's GcBlock on one level: G(F) = F + transform(softmax-attention-pooled context of F)."""

    def __init__(self, channels: int):
        super().__init__()
        if channels < 2:
            raise ValueError(f"FGD's context block halves the channels and needs at least 2, got {channels}")
        self.mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.mask.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        weights = F.softmax(self.mask(x).flatten(2), dim=-1)  # N x 1 x HW
        context = (x.flatten(2) * weights).sum(dim=-1).view(n, c, 1, 1)
        return x + self.transform(context)


class FGDContexts(nn.Module):
    """The two context blocks of one level: ``student`` (G_s) and ``teacher`` (G_t), both trained."""

    def __init__(self, channels: int):
        super().__init__()
        self.student = GlobalContext(channels)
        self.teacher = GlobalContext(channels)


def fgd_attention(x: Tensor, temperature: float = FGD_DEFAULTS["temp"]) -> tuple[Tensor, Tensor]:
    """(A^S: N x H x W, summing to H W per image; A^C: N x C, summing to C per image)."""
    if temperature <= 0:
        raise ValueError(f"FGD temperature must be positive, got {temperature}")
    n, c, h, w = x.shape
    value = x.abs()
    spatial = h * w * F.softmax(value.mean(dim=1).flatten(1) / temperature, dim=1)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial.view(n, h, w), channel


def fgd_masks(boxes: Sequence[Tensor], image_size: tuple[int, int], level_size: tuple[int, int],
              device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(M_fg, M_bg), each N x H x W: ``boxes[n]`` is a K x 4 (x1, y1, x2, y2) tensor in the pixels of an
    ``image_size`` = (H_img, W_img) image; ``level_size`` = (H, W) of the feature map (module doc)."""
    height, width = level_size
    image_height, image_width = image_size
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    foreground = []
    for image_boxes in boxes:
        image_boxes = image_boxes.to(device=device, dtype=torch.float64).reshape(-1, 4)
        if image_boxes.shape[0] == 0:
            foreground.append(torch.zeros(height, width, device=device, dtype=dtype))
            continue
        x1, y1, x2, y2 = image_boxes.unbind(dim=1)
        wmin, wmax = torch.floor(x1 * width / image_width), torch.ceil(x2 * width / image_width)
        hmin, hmax = torch.floor(y1 * height / image_height), torch.ceil(y2 * height / image_height)
        area = 1.0 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))
        view = (-1, 1, 1)
        inside = ((rows >= hmin.view(view)) & (rows <= hmax.view(view))
                  & (cols >= wmin.view(view)) & (cols <= wmax.view(view)))
        foreground.append((inside * area.view(view)).amax(dim=0).to(dtype))
    fg = torch.stack(foreground)
    background = (fg == 0).to(dtype)
    bg = background / background.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    return fg, bg


def fgd_terms(student: Tensor, teacher: Tensor, fg: Tensor, bg: Tensor, contexts: FGDContexts,
              temperature: float = FGD_DEFAULTS["temp"]) -> dict[str, Tensor]:
    """The four unweighted terms on one level (``FGD_TERMS``); the teacher is detached."""
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(f"FGD needs N x C x H x W student and teacher features of one shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    if fg.shape != (student.shape[0], *student.shape[2:]) or bg.shape != fg.shape:
        raise ValueError(f"FGD masks must be N x H x W = {(student.shape[0], *student.shape[2:])}, got "
                         f"{tuple(fg.shape)} and {tuple(bg.shape)}")
    teacher = teacher.detach()
    n = student.shape[0]
    spatial_t, channel_t = fgd_attention(teacher, temperature)
    spatial_s, channel_s = fgd_attention(student, temperature)
    weighted = (student - teacher).pow(2) * spatial_t.unsqueeze(1) * channel_t[:, :, None, None]
    attention = (channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()
    return {
        "fg": (weighted * fg.unsqueeze(1)).sum() / n,
        "bg": (weighted * bg.unsqueeze(1)).sum() / n,
        "attention": attention / n,
        "global": (contexts.student(student) - contexts.teacher(teacher)).pow(2).sum() / n,
    }


def fgd_loss(student: Tensor, teacher: Tensor, boxes: Sequence[Tensor], image_size: tuple[int, int],
             contexts: FGDContexts, temp: float = FGD_DEFAULTS["temp"], alpha_fgd: float = FGD_DEFAULTS["alpha_fgd"],
             beta_fgd: float = FGD_DEFAULTS["beta_fgd"], gamma_fgd: float = FGD_DEFAULTS["gamma_fgd"],
             lambda_fgd: float = FGD_DEFAULTS["lambda_fgd"]) -> Tensor:
    """alpha L_fg + beta L_bg + gamma L_at + lambda L_gl on one level (the references' ``FeatureLoss``)."""
    if len(boxes) != student.shape[0]:
        raise ValueError(f"FGD needs the boxes of every image: {len(boxes)} box lists for {student.shape[0]} images")
    fg, bg = fgd_masks(boxes, image_size, tuple(student.shape[-2:]), student.device, student.dtype)
    terms = fgd_terms(student, teacher, fg, bg, contexts, temp)
    return (alpha_fgd * terms["fg"] + beta_fgd * terms["bg"] + gamma_fgd * terms["attention"]
            + lambda_fgd * terms["global"])
