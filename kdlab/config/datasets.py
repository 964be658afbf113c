"""The facts of every dataset kdlab reads, in one table (no torch import: recipes validate and run keys compute fast).

One row per dataset (:data:`DATASETS`): its task, how messages name it, what the dataset itself fixes (class count,
image size, the published split sizes, the folder its download extracts), its published normalisation statistics
and what the run key records about them. ``None`` means "not fixed by the dataset": read from the data (class
folders, annotations, the packaged asset) or set by the recipe (``data.image_size``, ``data.num_images``).

Who reads it: :mod:`kdlab.config.names` (the dataset name lists, so ``data.dataset`` validates against this
table), the plan check (:mod:`kdlab.check.data`: sizes without loading), the loaders (:mod:`kdlab.data`; the
loader of each name is registered in :mod:`kdlab.data.registry`), normalisation
(:mod:`kdlab.models.normalization`) and the run key (:func:`key_marker`).

Normalisation statistics: per-channel population mean and std of the training images, in [0, 1] units (population
std, not the often-copied 0.2023/0.1994/0.2010 for CIFAR-10). A dataset without published statistics is measured
on its training split (classification); detectors normalise inside torchvision's transform, so detection rows
have none.
"""

from __future__ import annotations

from dataclasses import dataclass

Statistics = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), one value per channel

# Per-channel statistics of the training images (population std).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# The run-key marker of a dataset whose statistics are measured on its training split.
MEASURED = "training-split"
# Where a dataset with a ``folder`` is looked for when data.root is unset (torchvision's batches: ./data).
DEFAULT_ROOT = "data"


@dataclass(frozen=True)
class DatasetFacts:
    """What one dataset is, known without reading it.

    ``task``: ``classification`` or ``detection``. ``title``: the name messages give it. ``classes``: the class
    count (detection: foreground classes, without the background). ``image_size``: the side of its square
    images; ``channels``: their channels. ``train_images`` / ``test_images``: the published split sizes.
    ``folder``: the folder under ``data.root`` that holds the dataset (what its download extracts); the plan
    check looks for it. ``statistics``: the published ``(mean, std)``; ``None``: measured on the training split.
    ``key_marker``: what a classification run key records when the statistics come from the data (the model
    sets no mean/std): ``None`` where they are CIFAR-10's, the default every run had before statistics
    followed the data (so those keys stay), else the dataset's name (published) or :data:`MEASURED`.
    """

    task: str
    title: str
    key_marker: str | None
    classes: int | None = None
    image_size: int | None = None
    channels: int = 3
    train_images: int | None = None
    test_images: int | None = None
    folder: str | None = None
    statistics: Statistics | None = None

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """C, H, W of one image, where the dataset fixes it."""
        return None if self.image_size is None else (self.channels, self.image_size, self.image_size)

    @property
    def fixed_sizes(self) -> bool:
        """Whether the table alone gives the plan check every size (no reading of the data)."""
        return None not in (self.classes, self.image_size, self.train_images, self.test_images)


# Name -> facts, in the order names are listed (``data.dataset``, help texts). Add a dataset here and register its
# loader in kdlab.data.registry.
DATASETS: dict[str, DatasetFacts] = {
    "cifar10": DatasetFacts(
        "classification", "CIFAR-10", key_marker=None, classes=10, image_size=32, train_images=50_000,
        test_images=10_000, folder="cifar-10-batches-py", statistics=(CIFAR10_MEAN, CIFAR10_STD)),
    "cifar100": DatasetFacts(
        "classification", "CIFAR-100", key_marker="cifar100", classes=100, image_size=32, train_images=50_000,
        test_images=10_000, folder="cifar-100-python", statistics=(CIFAR100_MEAN, CIFAR100_STD)),
    # root/train/<class>/* and root/test/<class>/*: everything read from the folders
    "imagefolder": DatasetFacts("classification", "image folder", key_marker=MEASURED),
    # a stratified CIFAR-10 subset packaged with kdlab: its split sizes are read from the asset
    "embedded": DatasetFacts(
        "classification", "embedded CIFAR-10 subset", key_marker=None, classes=10, image_size=32,
        statistics=(CIFAR10_MEAN, CIFAR10_STD)),
    # detection: classes from the annotations, sizes from the split files or jsons, image size from data.image_size
    # (key_marker: read for classification runs only)
    "voc": DatasetFacts("detection", "Pascal VOC", key_marker=MEASURED),
    "coco": DatasetFacts("detection", "COCO", key_marker=MEASURED),
    # generated: data.num_images and data.num_test_images images of square / disc / triangle
    "synthetic": DatasetFacts("detection", "synthetic shapes", key_marker=MEASURED, classes=3),
}


def dataset_names(task: str | None = None) -> tuple[str, ...]:
    """The names of the datasets of ``task`` (every dataset with ``None``), in table order."""
    return tuple(name for name, facts in DATASETS.items() if task is None or facts.task == task)


def key_marker(dataset: str) -> str | None:
    """What enters a run key when the statistics come from the data and are not the old CIFAR-10 default."""
    facts = DATASETS.get(dataset)
    return facts.key_marker if facts is not None else MEASURED
