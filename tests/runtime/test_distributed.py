"""Multi-process training and evaluation under torchrun, on the CPU with the gloo backend.

Three launches of ``python -m torch.distributed.run --standalone --nproc_per_node=2`` are shared by the tests:
``two`` distils a student (its teacher trained first, also by two processes), ``failed`` is the same student
stopped by a failure injected on rank 1 in epoch 2, and ``resumed`` continues it with ``--resume``. One
process trains the same recipes in the test process (``one``).

The models are ``resnet_small`` without BatchNorm (``norm: none``): per-rank BatchNorm statistics differ from
the global batch's by design, and SyncBatchNorm (``train.sync_bn``) has no CPU kernel, so only a model whose
samples do not interact gives the one-process weights exactly on CPUs. Both runs use ``train.rng``'s default,
``sample`` (since issue #24; torchrun refuses ``batch``), so the recipes do not write it.
"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed
import yaml

from kdlab.config.recipe import load_recipe
from kdlab.config.sections import TrainSpec
from kdlab.models.files import load_model
from kdlab.runs.run import run_recipe
from kdlab.runtime import distributed

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this PyTorch build has no torch.distributed with gloo")

ROOT = Path(__file__).resolve().parents[2]
DATA = {"dataset": "embedded", "subset": 64, "val_size": 20, "test_subset": 40, "batch_size": 16}
TRAIN = {"epochs": 2, "lr": 0.05, "max_batches_per_epoch": 3}  # train.rng: the default (sample)
EVAL = {"n": 40, "steps": 3, "attacks": ["clean", "pgd"]}
MODEL = {"arch": "resnet_small", "width": 4, "options": {"norm": "none"}}


def _recipes(folder: Path, label: str) -> Path:
    output = {"dir": str(folder / label), "table": str(folder / f"{label}.csv")}
    teacher = folder / f"teacher_{label}.yaml"
    teacher.write_text(yaml.safe_dump({
        "name": "ddp-teacher", "data": DATA, "model": MODEL, "eval": EVAL, "output": output,
        "train": {**TRAIN, "adversarial": {"method": "pgd", "steps": 2}},
    }))
    student = folder / f"student_{label}.yaml"
    student.write_text(yaml.safe_dump({
        "name": "ddp-student", "data": DATA, "student": MODEL, "teacher": {"recipe": str(teacher)},
        "method": {"name": "ard", "alpha": 0.9, "inner": {"steps": 2}}, "train": TRAIN, "eval": EVAL,
        "output": output,
    }))
    return student


def _torchrun(folder: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **(env or {})}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=300,
                          check=False)
    done.seconds = time.perf_counter() - started
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    one = run_recipe(load_recipe(_recipes(folder, "one")))  # the one-process reference, in this process
    student = _recipes(folder, "two")
    two = _torchrun(folder, "-m", "kdlab", "distill", str(student))
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    elsewhere = ["--set", f"output.dir={folder / 'resumed'}", "--set", f"output.table={folder / 'resumed.csv'}"]
    failed = _torchrun(folder, str(ROOT / "tests" / "helpers" / "torchrun_driver.py"), "distill", str(student), *elsewhere,
                       env={"KDLAB_TEST_FAIL": "1:5"})  # rank 1, epoch 2 step 2 (3 steps per epoch)
    resumed = _torchrun(folder, "-m", "kdlab", "distill", str(student), *elsewhere, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return {"folder": folder, "one": one, "two": two, "failed": failed, "resumed": resumed}


def _run_dir(folder: Path, label: str, name: str) -> Path:
    (found,) = (folder / label).glob(f"{name}-*/")
    return found


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.pt", weights_only=False)


def test_two_processes_end_with_the_weights_of_one(runs):
    folder = runs["folder"]
    for name in ("ddp-teacher", "ddp-student"):
        one, two = _state(_run_dir(folder, "one", name)), _state(_run_dir(folder, "two", name))
        assert one["epoch"] == two["epoch"] == 2
        for key, value in one["method"].items():
            assert torch.allclose(value, two["method"][key], rtol=0, atol=1e-5), (name, key)
        # the same loss, summed over ranks' shards, as one process's whole batches
        for row_one, row_two in zip(one["history"], two["history"]):
            assert row_two["loss"] == pytest.approx(row_one["loss"], rel=1e-5)
    summary = json.loads((_run_dir(folder, "two", "ddp-student") / "summary.json").read_text())
    assert summary["processes"] == 2 and "processes" not in runs["one"].summary


def test_sharded_evaluation_equals_the_one_process_numbers(runs):
    """The run's final numbers (each rank attacked 20 of the 40 test images) and its last validation (10 of
    20) equal one process's evaluation of the same weights."""
    from kdlab.tasks.classification import ClassificationTask, accuracy, pgd_accuracy

    folder = runs["folder"]
    run_dir = _run_dir(folder, "two", "ddp-student")
    recipe = load_recipe(folder / "student_two.yaml")
    summary = json.loads((run_dir / "summary.json").read_text())
    task = ClassificationTask()
    data = task.load_data(recipe)
    best, _ = load_model(run_dir / "best.pt")
    single = task.evaluate(best, data, recipe)
    assert (single["clean_acc"], single["pgd_acc"]) == (summary["clean_acc"], summary["pgd_acc"])
    assert 0 < single["pgd_acc"] < single["clean_acc"]  # the attack moves some images, not all: a real check

    last, _ = load_model(run_dir / "best.pt")
    last.load_state_dict({k.removeprefix("student."): v for k, v in _state(run_dir)["method"].items()})
    with open(run_dir / "metrics.csv", newline="") as stream:
        final = list(csv.DictReader(stream))[-1]
    spec = recipe.eval
    assert accuracy(last, data.val.images, data.val.labels) == float(final["val_clean"])
    assert pgd_accuracy(last, data.val.images, data.val.labels, eps=spec.eps, alpha=spec.alpha,
                        steps=recipe.train.select_steps, seed=spec.seed, batch_size=spec.batch_size,
                        per_sample=True) == float(final["val_pgd"])


def test_only_rank_zero_writes_one_row_per_run(runs):
    folder = runs["folder"]
    with open(folder / "two.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(row["name"] for row in rows) == ["ddp-student", "ddp-teacher"]
    with open(folder / "resumed.csv", newline="") as stream:
        assert [row["name"] for row in csv.DictReader(stream)] == ["ddp-student"]  # the teacher was reused
    assert "ddp-student" in runs["two"].stdout and runs["two"].stdout.count("clean_acc") == 1  # rank 0 prints


def test_a_failure_on_one_rank_stops_both_with_one_message(runs):
    failed = runs["failed"]
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and failed.seconds < 120
    assert output.count("injected failure on rank 1 at step 5") == 1
    for noise in ("KdlabError", "DistBackendError", "RuntimeError", "Connection closed"):
        assert noise not in output  # the other rank stopped without a traceback of its own
    state = _state(_run_dir(runs["folder"], "resumed", "ddp-student"))
    assert state["epoch"] in (1, 2)  # epoch 1 was saved before rank 1 failed; the resumed run finished it


def test_resume_under_two_processes_equals_an_uninterrupted_run(runs):
    folder = runs["folder"]
    assert "interrupted" not in runs["resumed"].stdout
    uninterrupted = _state(_run_dir(folder, "two", "ddp-student"))
    resumed = _state(_run_dir(folder, "resumed", "ddp-student"))
    assert resumed["epoch"] == 2
    for key, value in uninterrupted["method"].items():
        assert torch.equal(value, resumed["method"][key]), key
    assert [row["loss"] for row in resumed["history"]] == [row["loss"] for row in uninterrupted["history"]]


def test_what_two_processes_cannot_train_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    problems = distributed.training_problems("batch", True, 15, "cpu", "detection")
    assert len(problems) == 4
    assert "pass --set train.rng=sample" in problems[1] and "multiple of 2" in problems[2]
    assert "sync_bn needs CUDA" in problems[3] and "classification only" in problems[0]
    assert "in the teacher recipe" in distributed.training_problems("batch", False, 16, "cpu", "classification",
                                                                    teacher=True)[0]
    # the default (sample, since issue #24) needs no --set: only an explicit batch is refused
    assert distributed.training_problems(TrainSpec().rng, False, 16, "cpu", "classification") == []
    monkeypatch.setattr(distributed, "world_size", lambda: 1)
    assert distributed.training_problems("batch", True, 15, "cpu", "detection") == []


def test_merged_shards_give_the_one_process_result_per_image(monkeypatch):
    """evaluate_sharded's merge, with two ranks played in turn in this process: every image's clean and PGD
    outcome equals one process's (per-sample starts at global positions), and so do the counts."""
    from kdlab.models.factory import build_model
    from kdlab.robustness.accuracy import evaluate_robustness
    from kdlab.robustness.attacks import AttackSpec
    from kdlab.robustness.sharded import evaluate_sharded

    torch.manual_seed(0)
    model = build_model("classification", "resnet_small", 10, {"width": 4}).eval()
    images = torch.rand(13, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[:3] = (labels[:3] + 1) % 10  # three images wrong when clean
    attacks = ["clean", AttackSpec("pgd", eps=16 / 255, alpha=4 / 255, steps=2, seed=3)]
    single = evaluate_robustness(model, images, labels, attacks, batch_size=4)

    class Gathered(Exception):
        pass

    def rank_one_share(value):
        shares.append(value)
        raise Gathered  # rank 1's share is recorded; its merge is rank 0's below

    shares: list = []
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "agree", lambda work: work())
    monkeypatch.setattr(distributed, "shard_range", lambda n: (n // 2, n))
    monkeypatch.setattr(distributed, "all_gather", rank_one_share)
    with pytest.raises(Gathered):
        evaluate_sharded(model, images, labels, attacks, batch_size=4)
    monkeypatch.setattr(distributed, "shard_range", lambda n: (0, n // 2))
    monkeypatch.setattr(distributed, "all_gather", lambda value: [value, shares[0]])
    merged = evaluate_sharded(model, images, labels, attacks, batch_size=4)
    for one, two in zip(single, merged):
        assert torch.equal(one.robust, two.robust) and one.n == two.n == 13
        assert (one.accuracy, one.clean_accuracy, one.top_class_share) == (two.accuracy, two.clean_accuracy,
                                                                           two.top_class_share)
    pgd = single[1].robust
    assert 0 < int(pgd.sum()) < 10  # some clean-correct images fall, some stand: the comparison can fail
