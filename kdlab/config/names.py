"""Every name list kdlab accepts or reports, defined once (no torch import, so recipes validate fast).

The attack registry (:mod:`kdlab.robustness.attacks`) and the data loaders (:mod:`kdlab.data.loaders`) implement
exactly these names; tests check that they agree. The dataset names come from the facts table
(:mod:`kdlab.config.datasets`), where a dataset is added.
"""

from __future__ import annotations

from kdlab.config.datasets import dataset_names

# Evaluation attacks (``eval.attacks``, ``kdlab eval --attack``), in the order ``kdlab eval --help`` lists them.
ATTACKS = ("clean", "fgsm", "pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "autoattack", "aa-fast")

# Datasets (``data.dataset``, ``kdlab eval --data``): the rows of the facts table, kdlab.config.datasets, in its order.
CLASSIFICATION_DATASETS = dataset_names("classification")
DETECTION_DATASETS = dataset_names("detection")
DATASETS = CLASSIFICATION_DATASETS + DETECTION_DATASETS

# Where ``kdlab ablate`` runs its cells (``--executor``): a local process pool, a Slurm job array, or the same jobs as
# local processes through submitit (testing, debugging); kdlab.ablation.cluster. Settings of ``--slurm KEY=VALUE``:
EXECUTORS = ("local", "slurm", "submitit-local")
SLURM_SETTINGS = ("partition", "gpus", "cpus", "mem", "time", "parallel", "account", "qos", "requeues")

# Multiple-comparison corrections of a table's paired comparisons (``kdlab table --correction``; kdlab.report.stats).
CORRECTIONS = ("holm", "none")

# COCO box AP metrics (pycocotools' summary order), in percent.
DETECTION_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
WEAK_AP50 = 10.0  # %: a detector under it finds almost none of the objects (flagged "weak")
# The numbers a run is judged by, per task; a student's summary carries its teacher's beside its own.
HEADLINE_METRICS = ("clean_acc", "pgd_acc", "autoattack_acc", "AP", "AP50", "AP75")
# Column labels of the Markdown tables.
METRIC_LABELS = {"clean_acc": "clean", "pgd_acc": "PGD", "autoattack_acc": "AutoAttack", "cw_acc": "CW∞",
                 "fgsm_acc": "FGSM", "AP": "AP", "AP50": "AP50", "AP75": "AP75"}
