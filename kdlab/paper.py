"""Reference numbers from the seed papers, placed beside kdlab's tables by ``kdlab table --paper``.

Only numbers the papers print are listed; a row the paper reports without a number is absent.
"""

PAPER_NUMBERS: dict[str, dict] = {
    "mixacm-components": {
        "source": "Muhammad et al., MixACM, NeurIPS 2021, supplement ablation (CIFAR-10, robust accuracy %)",
        "metric": "pgd_acc",
        "cells": {"acm": 48.38, "acm+kd": 49.53, "acm+mixup": 52.29, "mixacm": 56.65},
    },
    "skd-retinanet-coco": {
        "source": "de Rijk et al., Structural KD for Object Detection, NeurIPS 2022 (COCO box AP, RetinaNet R-101 -> R-50)",
        "metric": "AP",
        "cells": {"none": 36.4, "l1": 38.7, "l2": 39.0, "ssim": 40.1},
    },
}
