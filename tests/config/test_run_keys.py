"""Run keys name every cached run and teacher, and the committed tables name their runs by them: a refactoring
that changes one silently renames (and so retrains) them. Pinned for every shipped recipe, bare and with a teacher
identity, and for a few ablation-cell overrides. Change a value only on purpose (with ``SCHEMA_VERSION`` when a
meaning changed)."""

from pathlib import Path

import pytest

from kdlab.config.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

# recipe -> (key(), key("teacher-identity")), computed before the package layout moved (commit 71b16fc)
PINNED = {
    "methods_cifar10_cpu": ("2c5b5b2de9", "8e4e69e43e"),
    "mixacm_cifar10": ("f26675adf3", "f44e63bcb1"),
    "mixacm_cifar10_cpu": ("2c5b5b2de9", "8e4e69e43e"),
    "mixacm_cifar10_cpu_teacher": ("55429b0b25", "59fbbcd8c1"),
    "mixacm_cifar10_gpu": ("65907a0d57", "579e4083e4"),
    "mixacm_cifar10_gpu_teacher": ("55b904e9c2", "24ecf0a5f7"),
    "mixacm_cifar10_teacher": ("32dd2e56b2", "fb8c8c2797"),
    "quickstart": ("935584875c", "12bb98c1fe"),
    "quickstart_teacher": ("ca297f445f", "d74fd41008"),
    "quickstart_teacher_standard": ("f66fc32f3e", "e1f0b55662"),
    "skd_bccd_cpu": ("ed42f3d258", "46d30854db"),
    "skd_bccd_cpu_teacher": ("c201b2ca8b", "b9fcab0bbc"),
    "skd_bccd_retinanet_cpu": ("ac05faccf6", "1868e106fd"),
    "skd_bccd_retinanet_cpu_teacher": ("0f620290f2", "f6b294eb8f"),
    "skd_coco": ("97109f54e1", "93038b8b71"),
    "skd_coco_teacher": ("6d93a4899d", "9c6a9b9bef"),
    "skd_quickstart": ("155b8cf8c3", "3f5ae1c17d"),
    "skd_quickstart_teacher": ("7bc52453ea", "a4336d8dce"),
}

OVERRIDES = {
    ("quickstart", ("method.acm.blocks=[2]",)): "7407109f90",
    ("quickstart", ("method.kd.weight=0", "method.mixup.enabled=false")): "49b2e18daf",
    ("methods_cifar10_cpu", ("method={name: ard}",)): "f3eb4f2aab",
    ("skd_bccd_cpu", ("method.feature.kind=pkd",)): "7b7b5559bd",
}


def test_every_shipped_recipe_is_pinned():
    assert sorted(path.stem for path in RECIPES.glob("*.yaml")) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_run_keys_of_shipped_recipes_are_unchanged(name):
    recipe = load_recipe(str(RECIPES / f"{name}.yaml"))
    assert (recipe.key(), recipe.key("teacher-identity")) == PINNED[name]


@pytest.mark.parametrize("name,sets", sorted(OVERRIDES))
def test_run_keys_of_ablation_cells_are_unchanged(name, sets):
    assert load_recipe(str(RECIPES / f"{name}.yaml"), list(sets)).key("teacher-identity") == OVERRIDES[name, sets]
