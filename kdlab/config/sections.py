"""The sections of a recipe other than ``method``: data, models, teacher, training, evaluation, output.

Torch-free pydantic models (frozen, unknown keys refused); :mod:`kdlab.config.recipe` assembles them into a
:class:`~kdlab.config.recipe.Recipe` and loads recipe files. Every field's description is what ``kdlab schema``
prints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kdlab.config.names import ATTACKS, DATASETS
from kdlab.config.schema import Perturbation, Section
from kdlab.errors import did_you_mean


# --------------------------------------------------------------------------- data, models
class DataSpec(Section):
    dataset: Literal[DATASETS] = "embedded"
    root: str | None = Field(
        None, description="dataset folder (relative: read from the recipe's folder); cifar: where "
        "torchvision's batches are (default ./data)")
    download: bool = Field(False, description="cifar10/cifar100: download into data.root when missing")
    subset: int | None = Field(None, gt=0, description="train images kept (stratified, seeded)")
    val_size: int = Field(0, ge=0, description="held-out train images used to pick the best checkpoint")
    test_subset: int | None = Field(
        None, gt=0, description="test images kept (stratified, seeded); null: all")
    split_seed: int = Field(0, ge=0, description="seed of the subset/val/test selection; fixed across run seeds")
    batch_size: int = Field(
        128, gt=0, description="training images per step (the last incomplete batch is dropped)")
    augment: bool = Field(
        True, description="random crop + flip (classification), horizontal flip (detection)")
    # detection only
    image_size: int | None = Field(None, gt=0, description="longest image side after resizing (detection)")
    train_split: str = Field(
        "train", description="voc: ImageSets split file; coco: image folder under data.root")
    test_split: str = Field(
        "test", description="voc: ImageSets split file; coco: image folder under data.root")
    annotations: str | None = Field(None, description="COCO json for the train split (detection)")
    test_annotations: str | None = Field(
        None, description="COCO json for the test split (relative to data.root)")
    num_images: int = Field(96, gt=0, description="synthetic detection images")
    num_test_images: int | None = Field(
        None, gt=0, description="synthetic detection test images (default max(16, num_images // 4))"
    )
    in_memory: bool = Field(
        True, description="decode every image once and keep it (false: voc/coco images are read when used)"
    )
    workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes that read streaming (in_memory: false) detection "
        "images when training on cuda; null: min(8, CPU cores); 0: read in the training process; not in the "
        "run key")

    @model_validator(mode="after")
    def _lazy_loading_is_for_files(self) -> DataSpec:
        if not self.in_memory and self.dataset not in ("voc", "coco"):
            raise ValueError(f"in_memory: false reads voc or coco images from disk; dataset '{self.dataset}' "
                             "is always held in memory: remove in_memory")
        if self.workers is not None and self.in_memory:
            raise ValueError("data.workers sets the reader processes of streaming detection data (voc/coco with "
                             "in_memory: false); in-memory data needs none: remove workers")
        return self


class ModelSpec(Section):
    arch: str = Field(description="architecture: resnet_small, preact_resnet18, wrn-D-K (see kdlab inspect); "
                                  "detection: fasterrcnn, retinanet")
    width: int | None = Field(None, gt=0, description="base width (resnet_small)")
    blocks_per_stage: int | None = Field(None, gt=0, description="residual blocks per stage (resnet_small)")
    stages: int | None = Field(None, gt=0, description="number of stages (resnet_small)")
    # detection only
    backbone: str | None = Field(None, description="detector backbone, e.g. resnet18, resnet50 (detection)")
    min_size: int | None = Field(None, gt=0, description="detector resize: shorter side (detection)")
    max_size: int | None = Field(None, gt=0, description="detector resize: longer side (detection)")
    mean: list[float] | None = Field(
        None, description="per-channel input mean, e.g. [0.5071, 0.4865, 0.4409] "
        "(default: the dataset's; classification)")
    std: list[float] | None = Field(None, description="per-channel input std (default: the dataset's)")
    options: dict[str, int | float | str | bool] = Field(default_factory=dict)

    @field_validator("mean", "std")
    @classmethod
    def _statistics_fit(cls, values: list[float] | None, info) -> list[float] | None:
        if values is not None and len(values) != 3:
            raise ValueError("needs 3 values, one per RGB channel, e.g. [0.5, 0.5, 0.5]")
        if values is not None and info.field_name == "std" and min(values) <= 0:
            raise ValueError("standard deviations must be positive, e.g. [0.25, 0.25, 0.25]")
        return values

    def build_options(self) -> dict[str, Any]:
        """The keyword options this spec passes to the model builder (unset fields omitted)."""
        fields = ("width", "blocks_per_stage", "stages", "backbone", "min_size", "max_size", "mean", "std")
        built = {name: getattr(self, name) for name in fields if getattr(self, name) is not None}
        built.update(self.options)
        return built


class TeacherSpec(Section):
    checkpoint: str | None = Field(
        None, description="a kdlab model .pt (relative: read from the recipe's folder)")
    recipe: str | None = Field(
        None, description="a training recipe, trained once and cached (relative: read from "
        "the recipe's folder)")
    robustbench: str | None = Field(
        None, description="a RobustBench model-zoo name, e.g. Wong2020Fast (kdlab/config/zoo.py lists those read)")
    dataset: Literal["cifar10"] = Field("cifar10", description="robustbench: the zoo's dataset")
    threat_model: Literal["Linf"] = Field("Linf", description="robustbench: the zoo's threat model")
    model_dir: str = Field(
        "models", description="robustbench: folder holding <dataset>/<threat_model>/<name>.pt (relative: "
        "read from the recipe's folder)")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> TeacherSpec:
        if sum(value is not None for value in (self.checkpoint, self.recipe, self.robustbench)) != 1:
            raise ValueError("give exactly one of teacher.checkpoint (a .pt file), teacher.recipe (a training "
                             "recipe) or teacher.robustbench (a RobustBench model name)")
        return self


# --------------------------------------------------------------------------- train, eval, output
class AdversarialSpec(Section):
    method: Literal["none", "pgd", "fgsm-rs", "trades"] = Field(
        "none", description="adversarial training; none: standard")
    eps: Perturbation = Field(8 / 255, description="Linf budget, e.g. 8/255 or 0.031 (<= 1)")
    alpha: Perturbation | None = Field(
        None, description="step size, e.g. 2/255; default 2/255 (pgd, trades), 10/255 (fgsm-rs)")
    steps: int = Field(10, gt=0, description="inner steps for pgd and trades")
    trades_beta: float = Field(6.0, ge=0, description="TRADES weight of the KL robustness term")

    @property
    def step_size(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 10 / 255 if self.method == "fgsm-rs" else 2 / 255


CYCLIC_BASE_MOMENTUM = 0.8
"""torch.optim.lr_scheduler.CyclicLR's default base_momentum, which Wong et al.'s train_fgsm.py leaves as it is
(cycle_momentum defaults to True): momentum 0.9 at lr 0, 0.8 at the lr peak."""


class TrainSpec(Section):
    """Optimisation and model selection.

    Defaults follow the reference recipes of adversarial training (TRADES trades.py / train_trades_cifar10.py,
    Rice et al. robust_overfitting/train_cifar.py, Wong et al. fast_adversarial/CIFAR10/train_fgsm.py):
    SGD with plain momentum 0.9 and weight decay 5e-4 on every parameter. Model selection (``select``): this
    section names the rules it allows; what they mean (the default per task and method, after Rice et al., how
    epochs compare) is :mod:`kdlab.train.selection`.
    """

    epochs: int = Field(30, gt=0, description="training epochs")
    lr: float = Field(0.1, gt=0, description="peak SGD learning rate")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (the TRADES, Rice et al. and Wong et al. "
                                              "recipes use plain momentum)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay (see decay_scope)")
    decay_scope: Literal["all", "weights"] = Field(
        "all", description="all: weight decay on every parameter (the reference recipes); weights: "
                           "exempt biases and normalisation parameters")
    schedule: Literal["cosine", "multistep", "constant", "cyclic"] = Field(
        "cosine", description="learning-rate schedule per step; cyclic: one triangle from 0 up to lr at half of "
        "the steps and back to 0 at the last, with momentum cycled the other way (Wong et al.'s train_fgsm.py: "
        "torch CyclicLR, base_lr 0, step_size_up = step_size_down = half the steps)")
    milestones: list[int] = Field(default_factory=list, description="epochs where multistep multiplies lr by gamma")
    gamma: float = Field(0.1, gt=0, description="multistep lr factor")
    warmup_epochs: float = Field(0.0, ge=0, description="linear lr warm-up, in epochs")
    cyclic_base_momentum: float | None = Field(
        None, ge=0, description="schedule cyclic: the momentum at the lr peak, rising linearly back to "
        "train.momentum as lr falls (torch CyclicLR's cycle_momentum; null: the reference's 0.8, CyclicLR's "
        "default; set it to train.momentum for constant momentum); other schedules: must stay null")
    adversarial: AdversarialSpec = AdversarialSpec()
    select: Literal["auto", "pgd", "clean", "last"] = Field(
        "auto", description="metric on the validation split that chooses best.pt; auto: pgd for adversarial "
                            "training and robust distillation, clean for standard training, AP50 for detection")
    select_steps: int = Field(10, gt=0, description="PGD steps of the validation attack (eps, step: eval.eps, eval.alpha)")
    max_batches_per_epoch: int | None = Field(None, gt=0, description="cap for smoke tests")
    grad_clip: float | Literal["reference"] | None = Field(
        "reference", description="clip the gradient's global L2 norm to this before each step (mmcv's grad_clip "
        "max_norm); null: no clipping; reference: the method's reference for the recipe's model, resolved when the "
        "recipe is loaded (detection: 35 for mgd and fgd students, their configs; otherwise null)")

    @field_validator("grad_clip")
    @classmethod
    def _positive_clip(cls, value):
        if isinstance(value, float) and value <= 0:
            raise ValueError("must be positive (the largest gradient norm kept), or null for no clipping")
        return value
    # speed (kdlab.train.engine, kdlab.runtime.acceleration); at their defaults these leave the run key as it was
    log_every: int | None = Field(
        None, gt=0, description="steps between reads of the loss terms, accuracy and NaN check back from the "
        "device (progress; a non-finite loss stops the run within this many steps, last.pt kept); null: 1 on "
        "cpu, where a read costs nothing, 20 on cuda; not in the run key")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="arithmetic of the training step: bf16 or fp16 autocast around it (teacher and inner "
        "attack included; fp16 adds a gradient scaler); bf16 needs compute capability >= 8.0 on cuda")
    channels_last: bool = Field(
        False, description="channels-last (NHWC) memory for the trained network, the teacher and (classification) "
        "the input batches: faster convolutions on tensor-core GPUs; off by default because it changes the "
        "summation order, hence the last bits of the results")
    compile: bool = Field(
        False, description="compile the trained network and the teacher with torch.compile (in place: "
        "checkpoints unchanged); the first steps are slow while it compiles; a compile failure stops the run at its "
        "first step")
    rng: Literal["batch", "sample"] = Field(
        "sample", description="sample: augmentation and attack starts drawn per sample from (seed, epoch, sample "
                              "index), the same whatever the batch size or number of processes (torchrun needs "
                              "it); batch: drawn batch by batch from the epoch's generator (kdlab's original "
                              "stream and default until issue #24; results depend on the batch split; written "
                              "out, it keeps the run keys of runs made before). No effect on detection")
    sync_bn: bool = Field(False, description="multi-process training: BatchNorm statistics over the global "
                                             "batch (SyncBatchNorm, CUDA only); ignored in one process")

    @model_validator(mode="before")
    @classmethod
    def _cyclic_momentum(cls, data: Any) -> Any:
        """Resolve ``cyclic_base_momentum`` for ``schedule: cyclic`` (null: the reference's 0.8, written out so an
        explicit 0.8 names the same run); refuse it, and a warm-up, where they would be ignored."""
        if not isinstance(data, dict):
            return data
        cyclic = data.get("schedule") == "cyclic"
        if not cyclic and data.get("cyclic_base_momentum") is not None:
            raise ValueError("train.cyclic_base_momentum applies only to schedule: cyclic: remove it, or set "
                             "train.schedule: cyclic")
        if cyclic and data.get("warmup_epochs"):
            raise ValueError("train.schedule: cyclic rises from 0 by itself: remove train.warmup_epochs")
        if cyclic and data.get("cyclic_base_momentum") is None:
            data = {**data, "cyclic_base_momentum": CYCLIC_BASE_MOMENTUM}
        return data


class EvalSpec(Section):
    n: int = Field(
        1000, gt=0, description="test images evaluated (fixed, seeded order); the default 1000 takes the "
        "whole split when it is smaller, a larger explicit value is an error")
    attacks: list[str] = Field(
        default_factory=lambda: ["clean", "pgd"],
        description="evaluation columns, e.g. clean, pgd, cw, autoattack (kdlab eval --help)")
    eps: Perturbation = Field(8 / 255, description="Linf budget, e.g. 8/255 or 0.031 (<= 1)")
    alpha: Perturbation = Field(2 / 255, description="PGD step size, e.g. 2/255")
    steps: int = Field(20, gt=0, description="PGD iterations")
    batch_size: int = Field(256, gt=0, description="images per attack batch")
    seed: int = Field(0, description="seed of the image selection and the attacks' random starts")
    split: Literal["test", "val"] = Field("test", description="val: tune settings without touching the test set")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="arithmetic of the clean pass and the attacks: fp32 (the reference protocol) or "
        "bf16 autocast (faster on GPUs; fp16 is not offered: small input gradients underflow and weaken "
        "attacks)")

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, attacks: list[str]) -> list[str]:
        known = list(ATTACKS)
        for name in attacks:
            if name not in known:
                hint = did_you_mean(name, known)
                raise ValueError(f"unknown attack '{name}'{hint}: choose from {', '.join(known)}")
        return attacks


class OutputSpec(Section):
    dir: str = Field(
        "results/runs", description="folder of the run directories (relative: current directory)")
    table: str = Field("results/runs.csv", description="CSV every finished run appends a row to")
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="experiment trackers that also receive the run, offline (install: "
        "pip install -e \".[tensorboard]\" or \".[wandb]\"; MLflow has no extra: pip install mlflow-skinny "
        "sqlalchemy alembic, see docs/trackers.md)")

