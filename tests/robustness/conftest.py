"""Fixtures of the robustness tests: the tiny trained model of tests/helpers/prototype_net.py and its images."""

import pytest
import torch

from tests.helpers.prototype_net import TinyNet, eval_data, trained_model


@pytest.fixture(scope="module")
def model() -> TinyNet:
    return trained_model()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return eval_data(100)
