"""Normalisation follows the data: dataset statistics, set in the recipe, stored in the checkpoint, used by eval."""

import numpy as np
import pytest
import torch
import torchvision

from kdlab.config.recipe import validate_recipe
from kdlab.errors import KdlabError
from kdlab.methods.mixacm import MixACM
from kdlab.models.files import load_model, safe_load, save_model
from kdlab.models.normalization import measure, model_options
from kdlab.models.registry import build_classifier
from tests.helpers.failfast import assert_one_line_error, files_under, invoke, write_recipe

# Published per-channel statistics, written out here independently of kdlab's constants.
CIFAR100 = ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762])
CIFAR10 = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])


class FakeCIFAR100:
    """torchvision.datasets.CIFAR100 stand-in: 100 classes of random 32x32 images (train 2/class, test 1/class)."""

    def __init__(self, root, train=True, download=False):
        per_class = 2 if train else 1
        generator = np.random.default_rng(0 if train else 1)
        self.data = generator.integers(0, 256, size=(100 * per_class, 32, 32, 3), dtype=np.uint8)
        self.targets = [k for k in range(100) for _ in range(per_class)]
        self.classes = [f"class{k}" for k in range(100)]


def test_cifar100_runs_use_and_store_cifar100_statistics(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    (tmp_path / "cifar-100-python").mkdir()  # where kdlab looks for the extracted batches
    recipe = write_recipe(tmp_path, f"model: {{arch: resnet_small, width: 4}}\n"
                                    f"data: {{dataset: cifar100, root: {tmp_path}, batch_size: 100}}\n"
                                    "train: {epochs: 1, max_batches_per_epoch: 1}\neval: {n: 20, attacks: [clean]}")
    result = invoke("train", recipe)
    assert result.exit_code == 0, result.output
    (best,) = (tmp_path / "out" / "runs").glob("*/best.pt")
    stored = safe_load(best)["normalization"]
    assert stored["mean"] == pytest.approx(CIFAR100[0], abs=1e-6)
    assert stored["std"] == pytest.approx(CIFAR100[1], abs=1e-6)
    model, _ = load_model(best)  # what `kdlab eval` rebuilds
    assert model.mean.flatten().tolist() == pytest.approx(CIFAR100[0], abs=1e-6)
    assert model.std.flatten().tolist() == pytest.approx(CIFAR100[1], abs=1e-6)


def test_an_image_folder_is_measured_on_its_training_split():
    # half the images (255, 102, 0), half (0, 204, 255): mean (0.5, 0.6, 0.5), population std (0.5, 0.2, 0.5)
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:2, 0], images[:2, 1] = 255, 102
    images[2:, 1], images[2:, 2] = 204, 255
    mean, std = measure(images)
    assert mean == pytest.approx((0.5, 0.6, 0.5), abs=1e-6) and std == pytest.approx((0.5, 0.2, 0.5), abs=1e-6)
    spec = validate_recipe({"model": {"arch": "resnet_small"}}).model
    options = model_options(spec, "imagefolder", images)
    assert options["mean"] == pytest.approx([0.5, 0.6, 0.5], abs=1e-6)
    assert model_options(spec, "embedded", images)["std"] == pytest.approx(CIFAR10[1])


def test_statistics_written_in_the_recipe_win_and_are_checked(tmp_path):
    recipe = validate_recipe({"model": {"arch": "resnet_small", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})
    options = model_options(recipe.model, "cifar100", torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert options["mean"] == [0.5, 0.5, 0.5] and options["std"] == [0.25, 0.25, 0.25]
    bad = write_recipe(tmp_path, "model: {arch: resnet_small, mean: [0.5, 0.5]}")
    assert_one_line_error(invoke("train", bad), "model.mean", "3 values")
    zero = write_recipe(tmp_path, "model: {arch: resnet_small, std: [0.2, 0, 0.2]}", name="zero.yaml")
    assert_one_line_error(invoke("train", zero), "model.std", "positive")
    assert files_under(tmp_path / "out") == []


def test_old_checkpoints_without_statistics_load_with_the_cifar10_default(tmp_path):
    path = tmp_path / "old.pt"
    save_model(path, build_classifier("resnet_small", 10, width=4), task="classification", arch="resnet_small",
               options={"width": 4}, num_classes=10)
    payload = torch.load(path, weights_only=True)
    del payload["normalization"]
    torch.save(payload, path)
    model, _ = load_model(path)
    assert model.mean.flatten().tolist() == pytest.approx(CIFAR10[0], abs=1e-6)
    assert model.std.flatten().tolist() == pytest.approx(CIFAR10[1], abs=1e-6)


def test_teacher_and_student_with_different_statistics_see_the_same_unit_range_images():
    torch.manual_seed(0)
    student = build_classifier("resnet_small", 10, width=4, mean=CIFAR10[0], std=CIFAR10[1])
    teacher = build_classifier("resnet_small", 10, width=8, mean=CIFAR100[0], std=CIFAR100[1])
    seen = {}
    student.register_forward_pre_hook(lambda module, args: seen.__setitem__("student", args[0].clone()))
    teacher.register_forward_pre_hook(lambda module, args: seen.__setitem__("teacher", args[0].clone()))
    recipe = validate_recipe({"student": {"arch": "resnet_small"}, "teacher": {"checkpoint": "t.pt"}})
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.rand(6, 3, 32, 32, generator=generator), torch.randint(0, 10, (6,), generator=generator)
    MixACM(student, teacher, recipe.method).training_step((images, labels), torch.Generator().manual_seed(0))
    assert torch.equal(seen["student"], seen["teacher"])
    assert 0 <= float(seen["student"].min()) and float(seen["student"].max()) <= 1


def test_the_model_spec_rejects_statistics_for_the_wrong_channel_count():
    with pytest.raises(KdlabError, match="3 values"):
        validate_recipe({"model": {"arch": "resnet_small", "std": [0.2, 0.2, 0.2, 0.2]}})
