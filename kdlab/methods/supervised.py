"""Supervised training of a single network: standard, PGD-AT, FGSM-RS or TRADES (for teachers).

Loss per method (x clean images, x' adversarial examples from ``kdlab.robustness.training_attacks``):

* ``none``:     CE(f(x), y)
* ``pgd``:      CE(f(x'), y)                                     (Madry et al. 2018)
* ``fgsm-rs``:  CE(f(x'), y)                                     (Wong et al. 2020)
* ``trades``:   CE(f(x), y) + beta * KL(f(x) || f(x'))           (Zhang et al. 2019, beta = 6)

TRADES follows ``trades_loss`` in yaodongyu/TRADES ``trades.py`` (beta 6 as in its ``train_cifar10``
script): x' is built with the model in eval mode (``kdlab.robustness.training_attacks.trades_examples``), then, back in
train mode, KL is summed over classes and averaged over the batch ("batchmean") and its target f(x) is a
second train-mode forward pass of the clean batch, not detached, as there. That pass gives the same
output and gradient as reusing the CE logits; it is kept because it is also a BatchNorm running-statistics
update, so the running statistics (and with them the eval-mode model) match the reference's.
PGD-AT and FGSM-RS build x' in train mode, as Rice et al.'s and Wong et al.'s scripts do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.sections import AdversarialSpec
from kdlab.robustness.training_attacks import fgsm_rs_examples, pgd_examples, trades_examples
from kdlab.train.engine import StepResult


class SupervisedTraining(nn.Module):
    def __init__(self, model: nn.Module, adversarial: AdversarialSpec):
        super().__init__()
        self.model = model
        self.adversarial = adversarial

    @property
    def passes(self) -> float:
        """Forward+backward passes per training image: 1 (standard), 1 + steps (PGD), 2 (FGSM-RS: one attack
        step), 3 + steps (TRADES: the inner steps, then clean, adversarial and the second clean pass)."""
        spec = self.adversarial
        return {"none": 1.0, "pgd": 1.0 + spec.steps, "fgsm-rs": 2.0, "trades": 3.0 + spec.steps}[spec.method]

    @property
    def teacher_forwards(self) -> float:
        return 0.0

    def training_step(self, batch, generator: torch.Generator) -> StepResult:
        """The step under its older name; goes through ``forward`` like the engine's call."""
        return self(batch, generator)

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        spec = self.adversarial
        if spec.method == "trades":
            adversarial = trades_examples(
                self.model, images, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, generator=generator
            )
            logits = self.model(images)
            natural = F.cross_entropy(logits, labels)
            # Forward order as in trades.py: clean, adversarial, clean again (the KL target; see above).
            adversarial_log_probabilities = F.log_softmax(self.model(adversarial), dim=1)
            robust = F.kl_div(
                adversarial_log_probabilities, F.softmax(self.model(images), dim=1), reduction="batchmean"
            )
            terms = {"ce": natural, "trades_kl": spec.trades_beta * robust}
        else:
            if spec.method == "pgd":
                images = pgd_examples(
                    self.model, images, labels, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                    generator=generator,
                )
            elif spec.method == "fgsm-rs":
                images = fgsm_rs_examples(
                    self.model, images, labels, eps=spec.eps, alpha=spec.step_size, generator=generator
                )
            logits = self.model(images)
            terms = {"ce": F.cross_entropy(logits, labels)}
        correct = (logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
