"""MixACM: mixup-based robustness transfer by distilling activated channel maps.

Awais et al., "MixACM: Mixup-Based Robustness Transfer via Distillation of Activated Channel Maps",
NeurIPS 2021 (no official code was found, so this is kdlab's reading of the paper). Each step draws
ONE mixup batch (lambda ~ Beta(alpha, alpha), one permutation) and feeds the same mixed images to the
frozen teacher (eval mode, no grad) and to the student:

    L = w_mix * mixupCE(s(x~), y_a, y_b, lambda) + w_kd * KD(s(x~), t(x~); T) + sum_j beta_j * ACM_j

ACM_j compares student block ``acm.blocks[j]`` with teacher block ``acm.teacher_blocks[j]`` (default: the same
index), so a 4-stage student can pair its last stage with a 3-stage teacher's last stage. The pairing is a
recipe choice (kdlab's reconstruction), not something the paper prescribes.

Mixup is batch-level by nature (one lambda and one permutation per step, as the paper) and stays so with
``train.rng: sample``: it draws from the epoch generator's stream. Under torchrun every rank's generator is in
step, so all ranks share the step's lambda while the permutation pairs samples within each rank's shard (as
common DDP mixup implementations do, e.g. timm's ``Mixup``); N processes therefore mix other pairs than one.

With mixup off the batch is clean and the label loss is plain CE. Every ablation row of the
paper is a setting of this one step:

    ACM only      mixup.enabled=false  kd.weight=0   acm.weight>0
    ACM + KD      mixup.enabled=false  kd.weight>0   acm.weight>0
    ACM + mixup   mixup.enabled=true   kd.weight=0   acm.weight>0
    MixACM        mixup.enabled=true   kd.weight>0   acm.weight>0
    KD only       mixup.enabled=false  kd.weight>0   acm.weight=0
    student (CE)  mixup.enabled=false  kd.weight=0   acm.weight=0   (no teacher forward at all)

Reading chosen where the paper is silent: the label loss is always present (``label_weight``);
"ACM only" therefore means CE + ACM, and "KD only" means CE + KD: the supplement's component ablation
adds soft labels and mixup to the ACM-only setting one at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.methods.mixacm import MixACMSettings
from kdlab.losses import acm_loss, kd_loss, mix_batch, mixup_cross_entropy
from kdlab.methods.base import DistillationMethod, block_channels, connector_for
from kdlab.models.taps import FeatureTaps, block_name
from kdlab.train.engine import StepResult

__all__ = ["MixACM", "block_channels"]


class MixACM(DistillationMethod):
    """Registered submodules (saved, trained): ``student`` and ``connectors``; the teacher is frozen and held aside
    (``kdlab.methods.base``). With ``kd.weight`` and ``acm.weight`` both 0 no teacher is held or run."""

    settings_class = MixACMSettings

    def __init__(self, student: nn.Module, teacher: nn.Module | None, spec: MixACMSettings,
                 image_shape: tuple[int, ...] = (3, 32, 32)):
        super().__init__(student, teacher, spec, image_shape)
        self.spec = spec
        self.uses_acm = spec.acm.weight > 0
        self.uses_kd = spec.kd.weight > 0
        self.connectors = nn.ModuleList()
        pairs = spec.acm.block_pairs if self.uses_acm else []
        self.blocks = [student_block for student_block, _ in pairs]
        self.teacher_blocks = [teacher_block for _, teacher_block in pairs]
        self.block_weights = list(spec.acm.block_weights or [1.0] * len(self.blocks))
        # loss-term names (acm3, ...) by block index, resolved once rather than on every step
        self.term_names = [f"acm{block_name(student, block)}" for block in self.blocks]
        if self.uses_acm:
            student_channels = block_channels(student, self.blocks, image_shape)
            teacher_channels = block_channels(self.teacher, self.teacher_blocks, image_shape)
            for s_channels, t_channels in zip(student_channels, teacher_channels):
                self.connectors.append(connector_for(s_channels, t_channels, spec.acm.connector))

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        spec = self.spec
        if spec.mixup.enabled:
            mixed = mix_batch(images, labels, spec.mixup.alpha, generator)
            inputs = mixed.images
        else:
            inputs = images

        teacher_logits = None
        teacher_taps = None
        if self.distills:
            teacher_logits, teacher_taps = self.teacher_outputs(inputs, self.teacher_blocks)
        with FeatureTaps(self.student, self.blocks) as student_taps:
            logits = self.student(inputs)
        terms: dict[str, torch.Tensor] = {}
        if spec.mixup.enabled:
            label_loss = mixup_cross_entropy(logits, mixed.targets_a, mixed.targets_b, mixed.lam)
            terms["mixup_ce"] = spec.label_weight * label_loss
        else:
            terms["ce"] = spec.label_weight * F.cross_entropy(logits, labels)
        if self.uses_kd:
            terms["kd"] = spec.kd.weight * kd_loss(logits, teacher_logits, spec.kd.temperature)
        pairs = zip(self.blocks, self.teacher_blocks, self.block_weights, self.connectors, self.term_names)
        for block, teacher_block, beta, connector, term in pairs:
            student_map = connector(student_taps[block])
            distance = acm_loss(
                student_map, teacher_taps[teacher_block],
                p=spec.acm.p, normalize=spec.acm.normalize, distance=spec.acm.distance,
            )
            terms[term] = spec.acm.weight * beta * distance

        if spec.mixup.enabled:
            # Accuracy on a mixed batch: credit the dominant label.
            dominant = mixed.targets_a if mixed.lam >= 0.5 else mixed.targets_b
        else:
            dominant = labels
        correct = (logits.argmax(1) == dominant).sum()  # on the device: no host read
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
