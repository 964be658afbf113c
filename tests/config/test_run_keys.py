"""Run keys name every cached run and teacher, and the committed tables name their runs by them: a refactoring
that changes one silently renames (and so retrains) them. Pinned for every shipped recipe, bare and with a teacher
identity, and for a few ablation-cell overrides. Change a value only on purpose (with ``SCHEMA_VERSION`` when a
meaning changed)."""

from pathlib import Path

import pytest

from kdlab.config.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

# recipe -> (key(), key("teacher-identity")), computed before the package layout moved (commit 71b16fc); the
# classification training recipes (teachers) re-pinned on 2026-12-06 when their unused method section left the key
# and mixacm_cifar10_cpu_teacher moved to the whole training split (issue #24); every classification recipe that
# does not write train.rng re-pinned when train.rng default became sample, issue #24 (their keys before that change,
# which train.rng: batch written out keeps: BATCH_KEYS). Detection keys do not see train.rng (no effect there).
PINNED = {
    "methods_cifar10_cpu": ("474984682f", "096d0a6245"),
    "mixacm_cifar10": ("17b7cb2748", "1c123f70ac"),
    # re-pinned when acm.weight became methods_cpu's tuned 1000 (issue #24; 10 gave methods_cifar10_cpu's keys)
    "mixacm_cifar10_cpu": ("694fbaa587", "b88450b101"),
    "mixacm_cifar10_cpu_teacher": ("156bcb3ede", "0c20123610"),
    "mixacm_cifar10_gpu": ("ca6dc420fd", "f2dad99191"),
    "mixacm_cifar10_gpu_teacher": ("9ee783472d", "3b5232133d"),
    "mixacm_cifar10_teacher": ("481df069d5", "7e34f5a7b5"),
    "quickstart": ("7742eb9459", "76e3cb67e7"),
    "quickstart_teacher": ("f131c9ac92", "72fcf3d621"),
    "quickstart_teacher_standard": ("fb8cdc3ff3", "7c3a3de7ad"),
    # new recipe (issue #25): Wong et al.'s fast FGSM-RS teacher with the cyclic schedule
    "cifar10_fast_at_teacher": ("55b0a340db", "9f0d786d7b"),
    "skd_bccd_cpu": ("ed42f3d258", "46d30854db"),
    "skd_bccd_cpu_teacher": ("c201b2ca8b", "b9fcab0bbc"),
    "skd_bccd_retinanet_cpu": ("ac05faccf6", "1868e106fd"),
    "skd_bccd_retinanet_cpu_teacher": ("0f620290f2", "f6b294eb8f"),
    "skd_coco": ("97109f54e1", "93038b8b71"),
    "skd_coco_teacher": ("6d93a4899d", "9c6a9b9bef"),
    "skd_quickstart": ("155b8cf8c3", "3f5ae1c17d"),
    "skd_quickstart_teacher": ("7bc52453ea", "a4336d8dce"),
}

# The keys these classification recipes had while train.rng defaulted to batch (pinned above until issue #24):
# --set train.rng=batch must give them back, so runs made before the change stay reachable.
BATCH_KEYS = {
    "methods_cifar10_cpu": ("2c5b5b2de9", "8e4e69e43e"),
    "mixacm_cifar10": ("f26675adf3", "f44e63bcb1"),
    "mixacm_cifar10_cpu": ("2e8f7fd60b", "93e5a404b8"),  # acm.weight 1000 (10: methods_cifar10_cpu's keys)
    "mixacm_cifar10_gpu": ("65907a0d57", "579e4083e4"),
    "mixacm_cifar10_gpu_teacher": ("35664f5489", "9f8f52a134"),
    "mixacm_cifar10_teacher": ("efa18f4928", "56b1ac6c20"),
    "quickstart": ("935584875c", "12bb98c1fe"),
    "quickstart_teacher": ("38f95b8701", "352655473f"),
    "quickstart_teacher_standard": ("f0898cd320", "affb9e08ba"),
}

# ablation cells (train.rng default became sample, issue #24: re-pinned; the cells' keys before it in BATCH_OVERRIDES)
OVERRIDES = {
    ("quickstart", ("method.acm.blocks=[2]",)): "f016c4a240",
    ("quickstart", ("method.kd.weight=0", "method.mixup.enabled=false")): "65fbab56b8",
    ("methods_cifar10_cpu", ("method={name: ard}",)): "51a62f6a15",
    # re-pinned (was 7b7b5559bd) when the detection peers took their reference configs' choices as defaults (issue
    # #24): PKD on Faster R-CNN now distils P2-P5, not pool; ssim/l1/l2/cwd cells and every teacher keep their keys
    ("skd_bccd_cpu", ("method.feature.kind=pkd",)): "3673863f2a",
}
BATCH_OVERRIDES = {
    ("quickstart", ("method.acm.blocks=[2]",)): "7407109f90",
    ("quickstart", ("method.kd.weight=0", "method.mixup.enabled=false")): "49b2e18daf",
    ("methods_cifar10_cpu", ("method={name: ard}",)): "f3eb4f2aab",
}


# The detection peers' reference defaults (issue #24) renamed the pkd, mgd and fgd cells; kdlab's earlier behaviour,
# set by these options on every cell (docs/detection.md, "Reference configs"), names exactly the runs the committed
# BCCD tables were made from (keys computed on main before the change, commit 66a1360).
EARLIER_DETECTION = ["method.feature.levels=all", "method.feature.init_from_teacher=false",
                     "method.feature.mgd.mask_ratio=0.65",
                     "method.feature.fgd={alpha_fgd: 0.001, beta_fgd: 0.0005, gamma_fgd: 0.0005, lambda_fgd: 5.0e-6}",
                     "train.grad_clip=null"]
EARLIER_KEYS = {
    "skd_bccd_cpu": {"none": "2b33d01d76", "l1": "73b8b2bc1f", "l2": "b00b08f1fc", "ssim": "46d30854db",
                     "pkd": "7b7b5559bd", "cwd": "51d6831b40", "mgd": "792c15ee33", "fgd": "fcc5b959c4"},
    "skd_bccd_retinanet_cpu": {"none": "79efe752ef", "l1": "5092e52757", "l2": "b75db85278", "ssim": "1868e106fd",
                               "pkd": "a1d746d449", "cwd": "c74b1bd67e", "mgd": "79fe932db4", "fgd": "7185a8dc11"},
}


@pytest.mark.parametrize("name", sorted(EARLIER_KEYS))
def test_the_earlier_detection_behaviour_keeps_the_keys_of_the_committed_runs(name):
    path = str(RECIPES / f"{name}.yaml")
    for kind, key in EARLIER_KEYS[name].items():
        assert load_recipe(path, [f"method.feature.kind={kind}", *EARLIER_DETECTION]).key("teacher-identity") == key
        if kind not in ("pkd", "mgd", "fgd"):  # no reference default changed what these cells do
            assert load_recipe(path, [f"method.feature.kind={kind}"]).key("teacher-identity") == key, kind


def test_every_shipped_recipe_is_pinned():
    assert sorted(path.stem for path in RECIPES.glob("*.yaml")) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_run_keys_of_shipped_recipes_are_unchanged(name):
    recipe = load_recipe(str(RECIPES / f"{name}.yaml"))
    assert (recipe.key(), recipe.key("teacher-identity")) == PINNED[name]


@pytest.mark.parametrize("name,sets", sorted(OVERRIDES))
def test_run_keys_of_ablation_cells_are_unchanged(name, sets):
    assert load_recipe(str(RECIPES / f"{name}.yaml"), list(sets)).key("teacher-identity") == OVERRIDES[name, sets]


def test_a_training_recipe_key_ignores_the_unused_method_section():
    """A teacher does not use the default method's settings: changing a distillation default must not rename it."""
    path = str(RECIPES / "mixacm_cifar10_cpu_teacher.yaml")
    assert load_recipe(path).key() == load_recipe(path, ["method.kd.temperature=2"]).key()
    student = str(RECIPES / "mixacm_cifar10_cpu.yaml")
    assert load_recipe(student).key("t") != load_recipe(student, ["method.kd.temperature=2"]).key("t")


@pytest.mark.parametrize("name", sorted(BATCH_KEYS))
def test_train_rng_batch_written_out_keeps_the_keys_from_before_sample_became_the_default(name):
    recipe = load_recipe(str(RECIPES / f"{name}.yaml"), ["train.rng=batch"])
    assert (recipe.key(), recipe.key("teacher-identity")) == BATCH_KEYS[name]


@pytest.mark.parametrize("name,sets", sorted(BATCH_OVERRIDES))
def test_ablation_cells_with_train_rng_batch_keep_their_earlier_keys(name, sets):
    recipe = load_recipe(str(RECIPES / f"{name}.yaml"), [*sets, "train.rng=batch"])
    assert recipe.key("teacher-identity") == BATCH_OVERRIDES[name, sets]


def test_the_cpu_teacher_in_training_keeps_its_run_directory_key():
    """recipes/mixacm_cifar10_cpu_teacher.yaml writes train.rng: sample; its run (results/runs/
    mixacm-cpu-teacher-bd95895d9d, named by key("") as kdlab.runs.run.run_directory does) must keep its key
    across the change of the train.rng default (issue #24)."""
    path = str(RECIPES / "mixacm_cifar10_cpu_teacher.yaml")
    assert load_recipe(path).key("") == "bd95895d9d"
    assert load_recipe(path).key() == "156bcb3ede"
    assert load_recipe(path, ["train.rng=sample"]).key("") == "bd95895d9d"


def test_train_rng_does_not_enter_a_detection_key():
    path = str(RECIPES / "skd_bccd_cpu_teacher.yaml")
    keys = {load_recipe(path, sets).key() for sets in ([], ["train.rng=batch"], ["train.rng=sample"])}
    assert keys == {PINNED["skd_bccd_cpu_teacher"][0]}
