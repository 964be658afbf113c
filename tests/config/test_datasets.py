"""The dataset facts table (kdlab.config.datasets) against values written out here independently, and the name lists
and run-key markers derived from it."""

import pytest

from kdlab.config import names
from kdlab.config.datasets import DATASETS, MEASURED, dataset_names, key_marker

# Published facts, from the datasets' own pages and the literature, not from kdlab's constants:
# (classes, image side, train images, test images, mean, std), statistics rounded to 4 decimals (population std).
PUBLISHED = {
    "cifar10": (10, 32, 50_000, 10_000, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (100, 32, 50_000, 10_000, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_cifar_rows_hold_the_published_facts(name):
    classes, side, train, test, mean, std = PUBLISHED[name]
    facts = DATASETS[name]
    assert (facts.task, facts.classes, facts.image_shape) == ("classification", classes, (3, side, side))
    assert (facts.train_images, facts.test_images) == (train, test) and facts.fixed_sizes
    assert facts.statistics[0] == pytest.approx(mean, abs=5e-5)
    assert facts.statistics[1] == pytest.approx(std, abs=5e-5)


def test_the_embedded_subset_is_cifar10_normalised_like_cifar10():
    facts = DATASETS["embedded"]
    assert (facts.classes, facts.image_shape) == (10, (3, 32, 32))
    assert facts.statistics == DATASETS["cifar10"].statistics
    assert not facts.fixed_sizes  # read from the packaged asset (checked in tests/data/test_loaders.py)


def test_the_name_lists_are_the_table_rows_by_task():
    assert names.DATASETS == tuple(DATASETS) == dataset_names()
    assert names.CLASSIFICATION_DATASETS == ("cifar10", "cifar100", "imagefolder", "embedded")
    assert names.DETECTION_DATASETS == ("voc", "coco", "synthetic")
    assert all(DATASETS[name].task == "classification" for name in names.CLASSIFICATION_DATASETS)
    assert all(DATASETS[name].task == "detection" for name in names.DETECTION_DATASETS)


def test_run_key_markers_follow_where_the_statistics_come_from():
    """None where the statistics are CIFAR-10's (every run's default before statistics followed the data: those
    keys stay), the dataset's name for other published statistics, MEASURED for measured ones."""
    cifar10 = DATASETS["cifar10"].statistics
    for name, facts in DATASETS.items():
        expected = MEASURED if facts.statistics is None else (None if facts.statistics == cifar10 else name)
        assert key_marker(name) == facts.key_marker == expected, name
    assert (key_marker("cifar10"), key_marker("embedded"), key_marker("cifar100"), key_marker("imagefolder")) == (
        None, None, "cifar100", "training-split")
