"""PGD adversarial training of the student alone (Madry et al., ICLR 2018): the reference row of a comparison.

    x' = PGD_k maximising CE( s(x'), y ),    L = CE( s(x'), y )

No teacher is held or run (``teacher_forwards`` 0), even in a distillation recipe, so it sits under the same
registry and ablation preset as the distillation methods. The step is :class:`kdlab.methods.supervised.
SupervisedTraining` with ``train.adversarial.method: pgd`` (Rice et al.'s ``train_cifar.py``: uniform start,
the student in train mode while x' is made), with eps, step and steps from ``method.inner``, so a ``pgd-at``
cell trains exactly what ``kdlab train`` trains with ``adversarial: {method: pgd}``.

Cost: k + 1 student passes, no teacher forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.methods.pgd_at import PGDATSettings
from kdlab.config.sections import AdversarialSpec
from kdlab.methods.adversarial_step import AdversarialDistillation
from kdlab.methods.supervised import SupervisedTraining
from kdlab.train.engine import StepResult


class PGDAT(AdversarialDistillation):
    settings_class = PGDATSettings
    generation_mode = "train"

    def __init__(self, student: nn.Module, teacher: nn.Module | None, settings: PGDATSettings,
                 image_shape: tuple[int, ...] = (3, 32, 32)):
        super().__init__(student, teacher, settings, image_shape)
        inner = settings.inner
        spec = AdversarialSpec(method="pgd", eps=inner.eps, alpha=inner.step, steps=inner.steps)
        # held outside the module tree: its ``model`` is ``self.student``, registered once
        self._supervised = [SupervisedTraining(student, spec)]

    def objective(self, images, labels, teacher_logits=None):
        """CE(s(x'), y), averaged over the batch, as ``kdlab.robustness.training_attacks.pgd_examples``."""
        return lambda adversarial: F.cross_entropy(self.student(adversarial), labels)

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        return self._supervised[0](batch, generator)
