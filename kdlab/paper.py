"""Reference numbers from the seed papers, placed beside kdlab's tables by ``kdlab table --paper``.

Each entry names where its numbers come from (``source``, printed under the table) and how its column is
headed (``label``). Only numbers a source prints are listed; a row the source reports without a number is
absent.

* ``mixacm-components`` was read from the MixACM supplementary material itself: its component ablation on
  CIFAR-10 states the robust accuracy of ACM only (48.38), + soft labels (49.53), + mixup (52.29) and + both
  (56.65); the passage does not name the attack, so the column says "attack unstated", not PGD.
* ``skd-retinanet-coco`` could NOT be read from the Structural KD paper itself here: the numbers are as a
  third-party summary of the paper quotes them (RetinaNet R-101 -> R-50 on COCO), with no table number, so the
  column is marked unverified.
"""

PAPER_NUMBERS: dict[str, dict] = {
    "mixacm-components": {
        "source": "Awais et al., MixACM, NeurIPS 2021, supplementary material, component ablation "
                  "(§A.4, CIFAR-10): robust accuracy %, attack not stated there",
        "label": "paper (robust, attack unstated)",
        "cells": {"acm": 48.38, "acm+kd": 49.53, "acm+mixup": 52.29, "mixacm": 56.65},
    },
    "skd-retinanet-coco": {
        "source": "de Rijk et al., Structural KD for Object Detection, NeurIPS 2022, COCO box AP, "
                  "RetinaNet R-101 -> R-50 — UNVERIFIED: not read from the paper itself but from a "
                  "third-party summary of it (table not identified)",
        "label": "paper (AP, unverified)",
        "cells": {"none": 36.4, "l1": 38.7, "l2": 39.0, "ssim": 40.1},
    },
}
