"""The single-GPU path, checked where a CUDA GPU is visible (skipped elsewhere, e.g. on the CPU CI machines).

Run on a GPU machine: ``pytest -q tests/gpu/test_gpu_speed.py``. The host-synchronisation test uses PyTorch's CUDA
sync debug mode (``torch.cuda.set_sync_debug_mode``), which warns at every operation that makes the host wait
for the GPU (``.item()``, a blocking copy, ``nonzero``...): a fit's count of them must not grow with its number of
steps.
"""

import math
import warnings

import pytest
import torch

from kdlab.config.methods.kd import KDSettings
from kdlab.config.recipe import validate_recipe
from kdlab.config.sections import AdversarialSpec, TrainSpec
from kdlab.data.classification import ImageSet
from kdlab.methods.kd import KD
from kdlab.methods.supervised import SupervisedTraining
from kdlab.runtime.acceleration import prepare_models
from kdlab.tasks.classification import training_batches
from kdlab.train.engine import fit
from tests.train.test_engine_sync import tiny_net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def cuda_fit(tmp_path, steps: int, method_kind: str = "fgsm-rs", **train_options):
    generator = torch.Generator().manual_seed(0)
    train = ImageSet((torch.rand(steps * 8, 3, 8, 8, generator=generator) * 255).to(torch.uint8),
                     torch.randint(0, 3, (steps * 8,), generator=generator))
    recipe = validate_recipe({"model": {"arch": "resnet_small"}, "device": "cuda",
                              "data": {"dataset": "embedded", "batch_size": 8},
                              "train": {"channels_last": train_options.get("channels_last", False)}})
    torch.manual_seed(0)
    student, teacher = tiny_net(4).to(CUDA), tiny_net(8).to(CUDA)
    if method_kind == "kd":
        method = KD(student, teacher, KDSettings(), image_shape=(3, 8, 8))
    else:
        method, teacher = SupervisedTraining(student, AdversarialSpec(method=method_kind, eps=4 / 255)), None
    spec = TrainSpec(epochs=2, lr=0.05, **train_options)
    prepare_models(method, [student, teacher], spec)  # channels_last, compile
    return fit(method, training_batches(train, recipe, CUDA), spec, seed=1, run_dir=tmp_path, validate=None,
               select="", export_best=lambda path: None)


def synchronisations(tmp_path, steps: int, **options) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            cuda_fit(tmp_path, steps, log_every=1000, **options)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(warning.message) for warning in caught)


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
