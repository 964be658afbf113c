"""The single-GPU path, checked where a CUDA GPU is visible (skipped elsewhere, e.g. on the CPU CI machines).

Run on a GPU machine: ``pytest -q tests/gpu/test_gpu_speed.py``. The host-synchronisation test uses PyTorch's CUDA
sync debug mode (``torch.cuda.set_sync_debug_mode``), which warns at every operation that makes the host wait
for the GPU (``.item()``, a blocking copy, ``nonzero``...): a fit's count of them must not grow with its number of
steps.
"""

import math

import pytest
import torch

from tests.helpers.cuda_fit import cuda_fit, synchronisations

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("options", [{}, {"precision": "bf16"}, {"method_kind": "kd"}])
def test_host_synchronisations_do_not_grow_with_the_number_of_steps(tmp_path, options):
    cuda_fit(tmp_path / "warm", 2, **options)  # first-call allocations and cuDNN set-up out of the count
    few, many = synchronisations(tmp_path / "few", 4, **options), synchronisations(tmp_path / "many", 16, **options)
    assert many <= few + 2, f"{few} synchronisations with 4 steps an epoch, {many} with 16"


@pytest.mark.parametrize("options", [{"precision": "fp16"}, {"precision": "bf16", "channels_last": True},
                                     {"compile": True}])
def test_the_speed_options_train_on_cuda(tmp_path, options):
    result = cuda_fit(tmp_path, 6, **options)
    assert all(math.isfinite(row["loss"]) for row in result.history)
