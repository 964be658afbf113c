"""Supervised training of a single network: standard, PGD-AT, FGSM-RS or TRADES (for teachers).

Loss per method (x clean images, x' adversarial examples from ``kdlab.adversarial``):

* ``none``:     CE(f(x), y)
* ``pgd``:      CE(f(x'), y)                                     (Madry et al. 2018)
* ``fgsm-rs``:  CE(f(x'), y)                                     (Wong et al. 2020)
* ``trades``:   CE(f(x), y) + beta * KL(f(x) || f(x'))           (Zhang et al. 2019, beta = 6)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.adversarial import fgsm_rs_examples, pgd_examples, trades_examples
from kdlab.engine import StepResult
from kdlab.recipe import AdversarialSpec


class SupervisedTraining(nn.Module):
    def __init__(self, model: nn.Module, adversarial: AdversarialSpec):
        super().__init__()
        self.model = model
        self.adversarial = adversarial

    def training_step(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        spec = self.adversarial
        if spec.method == "trades":
            adversarial = trades_examples(
                self.model, images, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, generator=generator
            )
            logits = self.model(images)
            natural = F.cross_entropy(logits, labels)
            robust = F.kl_div(
                F.log_softmax(self.model(adversarial), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
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
        correct = int((logits.argmax(1) == labels).sum())
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
