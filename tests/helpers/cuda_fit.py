"""A short fit of a tiny classifier on CUDA, and the number of host synchronisations it makes, for the GPU tests.

The count uses PyTorch's CUDA sync debug mode (``torch.cuda.set_sync_debug_mode``), which warns at every operation
that makes the host wait for the GPU (``.item()``, a blocking copy, ``nonzero``...).
"""

import warnings

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
from tests.helpers.tiny_training import tiny_net

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
