"""Reference numbers from the seed papers, placed beside kdlab's tables by ``kdlab table --paper``.

Each entry names where its numbers come from (``source``, printed under the table), how its column is
headed (``label``) and which kdlab tables its cells fit (``fits``: ``kdlab table --paper`` refuses a table that
shares no cell with the paper's). Only numbers a source prints are listed; a row the source reports without a number is
absent.

* ``mixacm-components`` was read from the MixACM supplementary material itself: its component ablation on
  CIFAR-10 states the robust accuracy of ACM only (48.38), + soft labels (49.53), + mixup (52.29) and + both
  (56.65); the passage does not name the attack, so the column says "attack unstated", not PGD.
* No Structural KD entry: the numbers of the paper's tables could not be read from the paper or its code here
  (only its abstract: +3.5 AP for a Faster R-CNN R-50 student over the vanilla model, quoted in docs/detection.md), and
  a number not read from its source is not shown.
"""

PAPER_NUMBERS: dict[str, dict] = {
    "mixacm-components": {
        "source": "Awais et al., MixACM, NeurIPS 2021, supplementary material, component ablation "
                  "(§A.4, CIFAR-10): robust accuracy %, attack not stated there",
        "label": "paper (robust, attack unstated)",
        # which kdlab tables these numbers fit, for the refusal of --paper on another table
        "fits": "the MixACM component ablation (kdlab ablate RECIPE --components: cells acm, acm+kd, acm+mixup, "
                "mixacm)",
        "cells": {"acm": 48.38, "acm+kd": 49.53, "acm+mixup": 52.29, "mixacm": 56.65},
    },
}
