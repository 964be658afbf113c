"""Robust representation matching (Vaishnavi, Eykholt & Rahmati, "Transferring Adversarial Robustness Through
Robust Representation Matching", USENIX Security 2022):

    L = ce_weight * CE(s(x), y) + weight * mean_b ( 1 - cos( c(r_s(x_b)), r_t(x_b) ) )

``r``: the penultimate representation, the input of the final linear layer (``method.layer: auto``; or the
input of any module named by path), of the student and of the adversarially trained (robust) teacher, both
on the same CLEAN images: no adversarial example is made during training. ``c``: the identity when the widths
match, else a learned linear map to the teacher's width (``method.connector``; the paper's pairs need none,
kdlab's choice when they differ). The loss is ``kdlab.losses.representation``.

Defaults follow the authors' CIFAR-10 l_inf command (Ethos-lab/robust-representation-matching
``l_inf/README.md``, ``l_inf/train_rrm.py --feat-loss cosine --xent-weight 0.005 --feat-weight -1``): CE
weight 0.005 and the cosine term with weight 1 (their script adds -1 x the mean cosine similarity; ``1 - cos``
has the same gradient). ``distance: l2`` is their ``--feat-loss l2`` (``l_2/train_rrm.py``):
mean_b ||r_s - r_t|| / ||r_t||, the distance relative to the teacher's representation's norm;
``distance: l2_absolute`` leaves out that division (kdlab's ``l2`` before issue #24, not the authors').
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.methods.rrm import RRMSettings
from kdlab.errors import KdlabError
from kdlab.losses import representation_loss
from kdlab.methods.base import DistillationMethod, tapped_shapes
from kdlab.models.taps import FeatureTaps
from kdlab.train.engine import StepResult


def final_linear_path(model: nn.Module) -> str:
    """The module path of the model's last ``nn.Linear`` (its input is the penultimate representation)."""
    paths = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not paths:
        raise KdlabError(f"{type(model).__name__} has no linear layer: set method.layer to the module whose input "
                         "is the representation to match")
    return paths[-1]


def representation_width(model: nn.Module, path: str, image_shape: tuple[int, ...]) -> int:
    """Features per image of the input of the module at ``path`` (the penultimate representation)."""
    (shape,) = tapped_shapes(model, [path], image_shape, inputs=True)
    return shape[1:].numel()


class RobustRepresentationMatching(DistillationMethod):
    """Registered submodules: ``student`` and ``connector`` (the identity when the widths match)."""

    settings_class = RRMSettings

    def __init__(self, student: nn.Module, teacher: nn.Module | None, settings: RRMSettings,
                 image_shape: tuple[int, ...] = (3, 32, 32)):
        super().__init__(student, teacher, settings, image_shape)
        auto = settings.layer == "auto"
        self.student_layer = final_linear_path(student) if auto else settings.layer
        self.teacher_layer = final_linear_path(self.teacher) if auto else settings.layer
        s_width = representation_width(student, self.student_layer, image_shape)
        t_width = representation_width(self.teacher, self.teacher_layer, image_shape)
        kind = settings.connector
        if kind == "auto":
            kind = "identity" if s_width == t_width else "linear"
        if kind == "identity" and s_width != t_width:
            raise KdlabError(f"method.connector: identity needs equal widths, but the student's representation has "
                             f"{s_width} and the teacher's {t_width}: use connector: linear (or auto)")
        self.connector = nn.Identity() if kind == "identity" else nn.Linear(s_width, t_width)

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: RRMSettings = self.settings  # type: ignore[assignment]
        _, teacher_taps = self.teacher_outputs(images, [self.teacher_layer], inputs_of=True)
        with FeatureTaps(self.student, [self.student_layer], inputs=True) as student_taps:
            logits = self.student(images)
        student_rep = self.connector(student_taps[self.student_layer].flatten(1))
        matching = representation_loss(student_rep, teacher_taps[self.teacher_layer].flatten(1), settings.distance)
        terms = {"ce": settings.ce_weight * F.cross_entropy(logits, labels), "rrm": settings.weight * matching}
        correct = (logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
