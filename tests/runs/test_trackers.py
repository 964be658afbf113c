"""output.trackers: what TensorBoard, MLflow and W&B hold after a run, read back with each tracker's own reader.

One tiny run logs to every tracker that is installed; each test reads its tracker's files (TensorBoard's
EventAccumulator on the event files, MlflowClient on the SQLite store, the offline W&B run directory) and
compares them with what the run wrote itself (metrics.csv, summary.json) and with the recipe's own values.
tensorboard and wandb are in the test extra; mlflow is not (its databricks-sdk needs requests>=2.28.1, torchattacks
pins requests~=2.25.1, so pip cannot resolve both at once), so its tests skip, saying so, where it is absent.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
from pathlib import Path

import pytest
import yaml

from kdlab.config.recipe import load_recipe
from kdlab.errors import KdlabError
from kdlab.runs.run import run_recipe

DATA = {"dataset": "embedded", "subset": 120, "val_size": 30, "test_subset": 40, "batch_size": 30}
INSTALLED = [name for name in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(name) is not None]
needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None,
    reason="mlflow is not installed (optional: pip install mlflow-skinny sqlalchemy alembic)")


def recipe_file(tmp_path: Path, trackers: list[str]) -> Path:
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tracked", "data": DATA, "model": {"arch": "resnet_small", "width": 4},
        "train": {"epochs": 2, "lr": 0.05}, "eval": {"n": 20, "steps": 2},
        "output": {"dir": str(tmp_path / "results" / "runs"), "table": str(tmp_path / "results" / "runs.csv"),
                   "trackers": trackers},
    }))
    return path


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tracked")
    outcome = run_recipe(load_recipe(recipe_file(tmp_path, INSTALLED)), overrides=["train.lr=0.05"])
    history = list(csv.DictReader((outcome.run_dir / "metrics.csv").read_text().splitlines()))
    return tmp_path, outcome.run_dir, history, outcome.summary


def test_tensorboard_event_files_hold_epochs_final_numbers_and_recipe(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, history, summary = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    loss = events.Scalars("loss")
    assert [event.step for event in loss] == [1, 2]
    assert [event.value for event in loss] == pytest.approx([float(row["loss"]) for row in history], rel=1e-6)
    assert events.Scalars("val_clean")[-1].value == pytest.approx(float(history[-1]["val_clean"]), rel=1e-6)
    assert events.Scalars("final/clean_acc")[0].value == pytest.approx(summary["clean_acc"], rel=1e-6)
    assert events.Scalars("final/pgd_acc")[0].value == pytest.approx(summary["pgd_acc"], rel=1e-6)
    text = events.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.05" in text and "arch: resnet_small" in text


@needs_mlflow
def test_mlflow_store_holds_params_epochs_final_numbers_and_artifacts(tracked_run):
    from mlflow.tracking import MlflowClient

    tmp_path, run_dir, history, summary = tracked_run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")  # a single run: the recipe's name
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    params = run.data.params
    assert params["train.lr"] == "0.05" and params["train.epochs"] == "2" and params["model.width"] == "4"
    assert params["set.train.lr"] == "0.05" and params["run_key"] == run_dir.name.rsplit("-", 1)[-1]
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2]
    assert [m.value for m in losses] == pytest.approx([float(row["loss"]) for row in history], rel=1e-6)
    assert run.data.metrics["final/clean_acc"] == pytest.approx(summary["clean_acc"])
    assert run.data.metrics["final/pgd_acc"] == pytest.approx(summary["pgd_acc"])
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"recipe.yaml", "summary.json", "metrics.csv", "run.json"} <= artifacts
    assert not any(name.endswith(".pt") for name in artifacts)
    stored = Path(experiment.artifact_location.removeprefix("file://")) / run.info.run_id / "artifacts"
    assert json.loads((stored / "summary.json").read_text())["clean_acc"] == summary["clean_acc"]


def _wandb_records(path: Path):
    """The records of a .wandb file: a 7-byte W&B header, then LevelDB log blocks of 32 KiB whose chunks
    (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) carry the protobuf ``Record`` messages."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, position, pending = path.read_bytes(), 32 * 1024, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            yield record


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


def test_wandb_offline_run_holds_config_history_summary_and_files(tracked_run):
    _, run_dir, history, summary = tracked_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert (offline / "files" / "summary.json").is_file() and (offline / "files" / "recipe.yaml").is_file()
    assert not list((offline / "files").glob("*.pt"))
    (log,) = offline.glob("run-*.wandb")
    config, final, steps = {}, {}, {}
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":  # the run's start: project, group, name and the config
            config.update({_key(item): json.loads(item.value_json) for item in record.run.config.update})
            assert record.run.display_name == "tracked" and record.run.project == "tracked"
        elif kind == "summary":
            final.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "history":
            items = {_key(item): json.loads(item.value_json) for item in record.history.item}
            assert record.history.step.num == items["epoch"]  # the epoch is W&B's step
            steps[items["epoch"]] = items
    assert config["train.lr"] == 0.05 and config["model.arch"] == "resnet_small" and config["train.epochs"] == 2
    assert final["final/clean_acc"] == pytest.approx(summary["clean_acc"])
    assert sorted(steps) == [1, 2]
    assert [steps[i]["loss"] for i in (1, 2)] == pytest.approx([float(row["loss"]) for row in history], rel=1e-6)


@needs_mlflow
def test_an_ablation_is_one_mlflow_experiment_with_a_run_per_cell(tmp_path):
    from mlflow.tracking import MlflowClient

    from kdlab.ablation.execute import run_ablation
    from kdlab.ablation.grid import plan_ablation

    path = recipe_file(tmp_path, ["mlflow"])
    raw = yaml.safe_load(path.read_text())
    raw["train"]["epochs"] = 1
    path.write_text(yaml.safe_dump(raw))
    plan = plan_ablation(str(path), components=False, blocks=None, cumulative=False, grid=["train.lr=0.02,0.1"],
                         seeds=[0], attacks=["pgd"], overrides=[], name=None)
    table = run_ablation(plan, tmp_path / "results" / "ablations")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(table.stem)
    assert table.stem == "tracked-grid-train.lr"
    runs = client.search_runs([experiment.experiment_id])
    cells = {run.data.tags["cell"]: run for run in runs}
    assert sorted(cells) == ["lr=0.02", "lr=0.1"]
    assert cells["lr=0.02"].data.params["train.lr"] == "0.02" and cells["lr=0.1"].data.params["set.train.lr"] == "0.1"
    assert all(run.data.tags["ablation"] == table.stem for run in runs)
    rows = {row["cell"]: row for row in csv.DictReader(table.read_text().splitlines())}
    assert cells["lr=0.1"].data.metrics["final/pgd_acc"] == pytest.approx(float(rows["lr=0.1"]["pgd_acc"]))


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import kdlab.runs.trackers
    from kdlab.check.plan import check_recipe_plan

    install = kdlab.runs.trackers.TRACKERS["wandb"][1]
    monkeypatch.setitem(kdlab.runs.trackers.TRACKERS, "wandb", ("kdlab_no_such_module", install))
    with pytest.raises(KdlabError) as raised:
        check_recipe_plan(recipe_file(tmp_path, ["wandb"]), [])
    (line,) = [line for line in str(raised.value).splitlines() if "wandb" in line]
    assert 'pip install -e ".[wandb]"' in line
    assert not (tmp_path / "results" / "runs").exists()  # before any work


def test_unknown_tracker_is_refused_at_load(tmp_path):
    with pytest.raises(KdlabError, match="trackers"):
        load_recipe(recipe_file(tmp_path, ["comet"]))
