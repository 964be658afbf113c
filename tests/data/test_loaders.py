"""Every dataset of the facts table has code that reads it: a loader, and plan sizes where the table leaves them open."""

import pytest

from kdlab.config.datasets import DATASETS
from kdlab.config.names import CLASSIFICATION_DATASETS, DETECTION_DATASETS
from kdlab.config.names import DATASETS as DATASET_NAMES
from kdlab.config.sections import DataSpec
from kdlab.data.detection import load_detection_data
from kdlab.data.embedded import plan_sizes as embedded_sizes
from kdlab.data.loaders import LOADERS, PLAN_SIZES
from kdlab.errors import KdlabError


def test_every_classification_dataset_has_a_loader():
    assert list(LOADERS) == list(CLASSIFICATION_DATASETS)
    assert set(CLASSIFICATION_DATASETS) | set(DETECTION_DATASETS) == set(DATASET_NAMES)


@pytest.mark.parametrize("name", DETECTION_DATASETS)
def test_every_detection_dataset_is_loaded_by_name(name):
    try:  # voc and coco need files: refused for the missing root or json, never as an unknown dataset
        load_detection_data(name, num_images=1, test_split=None)
    except KdlabError as error:
        assert "unknown" not in str(error) and "data." in str(error)


def test_the_plan_sizes_cover_exactly_the_datasets_whose_sizes_the_table_leaves_open():
    assert set(PLAN_SIZES) == {name for name, facts in DATASETS.items() if not facts.fixed_sizes}


def test_the_packaged_subset_has_the_sizes_its_docstring_gives():
    """5000 train (500/class) and 1000 test images (100/class) of 32x32, CIFAR-10's 10 classes."""
    assert embedded_sizes(DataSpec(dataset="embedded")) == (5000, 1000, 10, (3, 32, 32))
