"""Experiment trackers: TensorBoard, MLflow and Weights & Biases receive what a run records, offline by default.

``output.trackers: [tensorboard, mlflow, wandb]`` (optional: ``pip install -e ".[tensorboard]"``, ``".[wandb]"``;
MLflow installed after kdlab, see docs/trackers.md) sends every tracker, for each run that trains (a reused finished
run logs nothing again):

* the resolved recipe as parameters (flattened: ``train.lr``, ``method.acm.weight``), the ``--set`` values as
  ``set.KEY``, the run key, and for an ablation cell its ablation and cell label;
* every epoch's metrics and loss terms (the engine's ``epoch_done`` row: ``loss``, ``kd``, ``val_pgd_acc``...),
  with the epoch as step;
* the final numbers of ``summary.json`` as ``final/<metric>`` (``final/clean_acc``, ``final/pgd_acc``,
  ``final/AP``, the teacher's beside them);
* the run directory's files (recipe, summary, metrics, provenance; not the ``.pt`` checkpoints, which stay in
  the run directory) as artifacts, where the tracker keeps artifacts (MLflow, W&B).

Where they write, with no network: TensorBoard event files in ``<run dir>/tensorboard``; MLflow a SQLite store
``<results>/mlflow.db`` with artifacts in ``<results>/mlartifacts`` (``<results>`` is the folder above
``output.dir``; ``MLFLOW_TRACKING_URI`` overrides it); W&B an offline run under ``<run dir>/wandb`` (``WANDB_MODE``
overrides the mode, e.g. ``online`` to upload, or ``wandb sync`` it later). An ablation is one MLflow experiment
and one W&B project group named by its table, one run per cell and seed.

The engine knows nothing of trackers: :meth:`Trackers.reporter` wraps the run's progress reporter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from kdlab.config.names import DETECTION_METRICS
from kdlab.errors import KdlabError
from kdlab.train.reporter import Reporter

# tracker -> (the module it needs, how to install it: the extra; MLflow after kdlab, see docs/trackers.md)
TRACKERS = {
    "tensorboard": ("tensorboard", 'pip install -e ".[tensorboard]" (outside a checkout: "kdlab[tensorboard]")'),
    "mlflow": ("mlflow", "pip install mlflow-skinny sqlalchemy alembic (after kdlab: torchattacks pins requests)"),
    "wandb": ("wandb", 'pip install -e ".[wandb]" (outside a checkout: "kdlab[wandb]")'),
}
SKIPPED_SUFFIXES = (".pt", ".lock")  # checkpoints stay in the run directory; locks are not results
OWN_FOLDERS = ("tensorboard", "wandb")  # what the trackers write into the run directory themselves


def tracker_problems(names: list[str] | tuple[str, ...]) -> list[str]:
    """One line per tracker that is not installed, naming the extra that installs it (checked before work)."""
    problems = []
    for name in names:
        module, install = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            problems.append(f"output.trackers: {name} is not installed: {install}, or remove {name}")
    return problems


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested recipe sections as ``section.key`` parameters; lists as JSON, ``None`` as ``null``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers a finished run is judged by (accuracies, box AP, the teacher's beside them), as ``final/``."""
    chosen = {}
    for key, value in summary.items():
        wanted = key.endswith("_acc") or key.removeprefix("teacher_") in DETECTION_METRICS
        wanted |= key in ("best_epoch", "val_score", "train_seconds")
        if wanted and isinstance(value, (int, float)) and not isinstance(value, bool):
            chosen[f"final/{key}"] = float(value)
    return chosen


def _artifacts(run_dir: Path) -> list[Path]:
    return sorted(path for path in run_dir.rglob("*") if path.is_file() and not path.name.endswith(SKIPPED_SUFFIXES)
                  and path.relative_to(run_dir).parts[0] not in OWN_FOLDERS)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)}


# --------------------------------------------------------------------------- one backend each
class _TensorBoard:
    def __init__(self, run_dir: Path, params: dict, recipe_yaml: str, title: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.params = params
        self.writer.add_text("recipe", "    " + recipe_yaml.replace("\n", "\n    "))  # a Markdown code block
        self.writer.add_text("run", title)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, epoch)

    def finish(self, final: dict[str, float], run_dir: Path, step: int) -> None:
        for key, value in final.items():
            self.writer.add_scalar(key, value, step)
        # the HParams dashboard: the parameters beside the final numbers (written into the same folder)
        self.writer.add_hparams(self.params, final, run_name=".", global_step=step)
        self.writer.close()

    def fail(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_dir: Path, params: dict, tags: dict[str, str], experiment: str, run_name: str,
                 results: Path):
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(results / 'mlflow.db').absolute()}"
        results.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(
                    experiment, artifact_location=(results / "mlartifacts").absolute().as_uri())
            except MlflowException:  # another ablation worker created it first
                experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, stamp, epoch) for key, value in metrics.items()])

    def finish(self, final: dict[str, float], run_dir: Path, step: int) -> None:
        self.epoch(step, final)
        for path in _artifacts(run_dir):
            parent = path.relative_to(run_dir).parent
            self.client.log_artifact(self.run_id, str(path), None if str(parent) == "." else str(parent))
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")


class _WandB:
    def __init__(self, run_dir: Path, params: dict, tags: dict[str, str], project: str, group: str, run_name: str):
        import wandb

        self.run = wandb.init(project=project, group=group or None, name=run_name, dir=str(run_dir),
                              mode=os.environ.get("WANDB_MODE", "offline"), config=params,
                              tags=[value for value in tags.values() if value][:64], reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({"epoch": epoch, **metrics}, step=epoch)

    def finish(self, final: dict[str, float], run_dir: Path, step: int) -> None:
        self.run.summary.update(final)
        for path in _artifacts(run_dir):  # files in the W&B run's folder are its files (synced with the run)
            target = Path(self.run.dir) / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        self.run.finish(exit_code=0)

    def fail(self) -> None:
        self.run.finish(exit_code=1)


# --------------------------------------------------------------------------- the run's trackers
class Trackers:
    """The trackers of one run: :meth:`start` once the run directory is claimed, :meth:`finish` with the
    summary; used as a context manager, a run that raises is ended as failed in every tracker."""

    def __init__(self, names: list[str] | tuple[str, ...]):
        self.names = list(names)
        self.backends: list[Any] = []
        self.last_epoch = 0

    def start(self, recipe: Any, run_dir: Path, *, overrides: list[str] | tuple[str, ...] = (), group: str = "",
              cell: str = "", command: str = "") -> None:
        if not self.names:
            return
        problems = tracker_problems(self.names)
        if problems:
            raise KdlabError(problems[0])
        params = flatten(recipe.to_dict())
        params.update({f"set.{text.partition('=')[0]}": text.partition("=")[2] for text in overrides})
        params["run_key"] = run_dir.name.rsplit("-", 1)[-1]
        tags = {"ablation": group, "cell": cell, "kdlab.command": command[:500]}
        tags = {key: value for key, value in tags.items() if value}
        experiment = group or recipe.name  # one experiment per ablation; a single run: its recipe's name
        results = Path(recipe.output.dir).parent
        for name in self.names:
            if name == "tensorboard":
                self.backends.append(_TensorBoard(run_dir, params, recipe.to_yaml(), f"{group} {recipe.name}".strip()))
            elif name == "mlflow":
                self.backends.append(_MLflow(run_dir, params, tags, experiment, recipe.name, results))
            else:
                self.backends.append(_WandB(run_dir, params, tags, experiment, group, recipe.name))

    def reporter(self, inner: Reporter | None) -> Reporter | None:
        """``inner`` (the console's progress, or None) with every epoch's row also sent to the trackers."""
        return _TrackingReporter(inner or Reporter(), self) if self.backends else inner

    def epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.last_epoch = epoch
        numbers = _numbers(metrics)
        for backend in self.backends:
            backend.epoch(epoch, numbers)

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        final = final_metrics(summary)
        step = int(summary.get("epochs") or self.last_epoch)
        backends, self.backends = self.backends, []
        for backend in backends:
            backend.finish(final, run_dir, step)

    def __enter__(self) -> Trackers:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, kind, error, trace) -> None:
        backends, self.backends = self.backends, []
        for backend in backends:  # not finished: the run raised
            try:
                backend.fail()
            except Exception:  # noqa: BLE001, S110 - the run's own error is the one to report
                pass


class _TrackingReporter(Reporter):
    """Forwards every callback to the console's reporter and each epoch's row to the trackers."""

    def __init__(self, inner: Reporter, trackers: Trackers):
        self.inner, self.trackers = inner, trackers

    def fit_started(self, epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.inner.fit_started(epochs, batches_per_epoch, start_epoch)

    def step_done(self, epoch: int, step: int, terms: dict[str, float], images: int) -> None:
        self.inner.step_done(epoch, step, terms, images)

    def epoch_done(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.inner.epoch_done(epoch, metrics)
        self.trackers.epoch(epoch, metrics)

    def fit_finished(self) -> None:
        self.inner.fit_finished()

    def __getattr__(self, name: str) -> Any:  # evaluation_progress and anything else the console offers
        return getattr(self.inner, name)
