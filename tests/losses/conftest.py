"""Fixtures of the loss tests."""

import pytest

from kdlab.data.detection import iterate_detection_batches, make_synthetic_shapes
from tests.helpers.detection import SIZE


@pytest.fixture(scope="module")
def batch():
    """One batch of two 64 px synthetic-shapes images and their targets (the detection losses' tests)."""
    shapes = make_synthetic_shapes(2, image_size=SIZE, seed=0)
    return next(iter(iterate_detection_batches(shapes, 2)))
