"""A method is a plug-in: a toy method registered from this file alone trains through ``kdlab distill``."""

import csv
import json
from pathlib import Path
from typing import Literal

import pytest
import torch.nn.functional as F
import yaml
from pydantic import Field
from typer.testing import CliRunner

from kdlab.ablation.grid import AblationPlan, Cell, plan_ablation
from kdlab.ablation.table import _row
from kdlab.cli.main import app
from kdlab.config.methods import SETTINGS, methods_for
from kdlab.config.methods.base import MethodSettings
from kdlab.errors import KdlabError
from kdlab.methods.base import DistillationMethod
from kdlab.methods.registry import METHODS, register_method, unregister_method
from kdlab.models.files import save_model
from kdlab.models.registry import build_classifier
from kdlab.train.engine import StepResult

CALLS: list[int] = []


class ToySettings(MethodSettings):
    name: Literal["toy"] = "toy"
    weight: float = Field(0.5, ge=0)

    @property
    def student_passes(self) -> float:
        return 3.0  # a declared cost the runs table must carry


class ToyMethod(DistillationMethod):
    """CE + weight * mean squared difference of student and teacher logits."""

    settings_class = ToySettings

    def forward(self, batch, generator):
        images, labels = batch
        teacher_logits, _ = self.teacher_outputs(images)
        logits = self.student(images)
        CALLS.append(len(labels))
        terms = {"ce": F.cross_entropy(logits, labels),
                 "logit_mse": self.settings.weight * (logits - teacher_logits).pow(2).mean()}
        return StepResult(loss=sum(terms.values()), terms=terms, correct=0, count=len(labels))


@pytest.fixture
def toy():
    register_method(ToyMethod)
    CALLS.clear()
    yield
    unregister_method("toy")


def toy_recipe(tmp_path: Path, method: dict) -> Path:
    teacher = build_classifier("resnet_small", 10, width=8)
    save_model(tmp_path / "teacher.pt", teacher, task="classification", arch="resnet_small",
               options={"width": 8}, num_classes=10)
    recipe = {
        "name": "toy", "device": "cpu",
        "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 16, "augment": False},
        "student": {"arch": "resnet_small", "width": 4},
        "teacher": {"checkpoint": str(tmp_path / "teacher.pt")},
        "method": method,
        "train": {"epochs": 1, "max_batches_per_epoch": 2},
        "eval": {"n": 20, "attacks": ["clean"]},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_toy_method_registered_here_trains_through_kdlab_distill(toy, tmp_path):
    recipe = toy_recipe(tmp_path, {"name": "toy", "weight": 0.25})
    result = CliRunner().invoke(app, ["distill", str(recipe), "--threads", "1"])
    assert result.exit_code == 0, result.output
    # the plan check's dry step on 2 random images, then the engine's max_batches_per_epoch batches
    assert CALLS == [2, 16, 16]

    run_dir = next(path for path in (tmp_path / "runs").iterdir() if path.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["passes_per_image"] == 3.0 and summary["teacher_forwards_per_image"] == 1.0
    assert summary["train_seconds"] > 0 and summary["wall_seconds"] >= summary["train_seconds"]
    assert summary["images_per_s"] > 0
    metrics = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert {"ce", "logit_mse"} <= set(metrics[0])
    row = list(csv.DictReader((tmp_path / "runs.csv").open()))[-1]
    assert row["passes_per_image"] == "3.0" and row["teacher_forwards_per_image"] == "1.0"
    assert float(row["images_per_s"]) > 0 and float(row["wall_seconds"]) > 0

    plan = AblationPlan(name="toy", kind="grid", base_raw={}, cells=[Cell("w")], seeds=[0], attacks=[],
                        recipe_path=str(recipe))
    ablation_row = _row(plan, Cell("w"), 0, summary)
    assert {key: ablation_row[key] for key in ("passes_per_image", "teacher_forwards_per_image")} == {
        "passes_per_image": 3.0, "teacher_forwards_per_image": 1.0}
    assert ablation_row["wall_seconds"] > 0 and ablation_row["images_per_s"] > 0


def test_a_setting_the_toy_does_not_have_is_one_line_exit_2(toy, tmp_path):
    recipe = toy_recipe(tmp_path, {"name": "toy", "acm": {"weight": 1}})
    result = CliRunner().invoke(app, ["distill", str(recipe)])
    assert result.exit_code == 2
    message = result.output.strip()
    assert "'acm' is a setting of mixacm, not of toy" in message and "\n" not in message
    assert not CALLS


def test_settings_of_another_method_exit_2_through_the_cli(tmp_path):
    recipe = toy_recipe(tmp_path, {"name": "kd", "acm": {"weight": 1}})
    result = CliRunner().invoke(app, ["distill", str(recipe)])
    assert result.exit_code == 2
    assert "'acm' is a setting of mixacm, not of kd" in result.output and "\n" not in result.output.strip()


def test_unregistered_toy_is_an_unknown_method(tmp_path):
    recipe = toy_recipe(tmp_path, {"name": "toy"})
    result = CliRunner().invoke(app, ["distill", str(recipe)])
    assert result.exit_code == 2 and "unknown method.name 'toy'" in result.output


@pytest.mark.parametrize("name", ["kd", "fitnet", "at", "rrm"])
def test_built_in_methods_train_through_kdlab_distill(tmp_path, name):
    recipe = toy_recipe(tmp_path, {"name": name})
    result = CliRunner().invoke(app, ["distill", str(recipe), "--threads", "1"])
    assert result.exit_code == 0, result.output
    row = list(csv.DictReader((tmp_path / "runs.csv").open()))[-1]
    assert row["passes_per_image"] == "1.0" and row["teacher_forwards_per_image"] == "1.0"
    run_dir = next(path for path in (tmp_path / "runs").iterdir() if path.is_dir())
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["method"]["name"] == name


def test_every_built_in_method_has_its_settings_under_the_same_name():
    assert {name: cls.settings_class for name, cls in METHODS.items()} == {name: SETTINGS[name] for name in METHODS}
    assert methods_for("classification") == ["adaad", "ard", "at", "fitnet", "iad", "kd", "mixacm", "pgd-at",
                                             "rrm", "rslad"]
    assert methods_for("detection") == ["skd"]


def test_a_methods_settings_and_step_sit_in_modules_named_after_it():
    """kdlab/config/methods/<module>.py holds the settings, kdlab/methods/<module>.py the step (pgd-at: pgd_at)."""
    for name, cls in METHODS.items():
        module = name.replace("-", "_")
        assert (cls.__module__, SETTINGS[name].__module__) == (f"kdlab.methods.{module}",
                                                               f"kdlab.config.methods.{module}")


@pytest.mark.parametrize("flag", [{"components": True}, {"blocks": "2,3"}])
def test_mixacm_ablation_presets_refuse_other_methods(tmp_path, flag):
    recipe = toy_recipe(tmp_path, {"name": "kd"})
    kwargs = {"components": False, "blocks": None, "cumulative": False, "grid": [], "seeds": [0], "attacks": ["pgd"],
                  "overrides": [], "name": None}
    with pytest.raises(KdlabError, match="ablates MixACM's terms but .* uses method kd") as error:
        plan_ablation(str(recipe), **{**kwargs, **flag})
    assert "\n" not in str(error.value)
