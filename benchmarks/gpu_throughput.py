"""GPU throughput of kdlab against plain-PyTorch floors, each pair measured in the same run.

Three cases, each timed through kdlab's own code path and through a hand-written plain-PyTorch floor on the
same device, models and batches; printed as images/s, peak GPU memory and the ratio of times kdlab/floor
(1.00 = no overhead; 1.10 = kdlab takes 10 % longer):

(a) **MixACM distillation step**, fp32 and bf16. kdlab: ``kdlab.train.engine.fit`` (the one training loop: its NaN
    guard, loss-term bookkeeping, ``train.precision`` autocast, optimizer and schedule steps) over the method ``build_method`` builds from
    ``MixACMSettings`` -- the step ``kdlab distill`` runs. Floor: the same arithmetic written inline: mixup
    (one lambda ~ Beta(1, 1), one permutation), teacher forward without grad with its blocks' outputs taken by
    forward hooks, student forward, mixup CE + KD (T = 4) + ACM on three blocks, backward, SGD step.
(b) **PGD-10 adversarial-training step** of the teacher (Madry et al.; Rice et al.'s ``train_cifar.py``:
    uniform start, 10 sign steps of 2/255 at eps 8/255 in train mode, then a CE step), fp32 and bf16. kdlab:
    ``fit`` over ``kdlab.methods.supervised.SupervisedTraining`` (``kdlab.robustness.training_attacks.pgd_examples``). Floor:
    the attack and the step written inline.
(c) **PGD-20 evaluation** (eps 8/255, step 2/255, random start), fp32 as kdlab evaluates. kdlab:
    ``kdlab.robustness.accuracy.evaluate_robustness`` (shared clean pass, per-sample seeded starts, deterministic cuDNN,
    bound checks: the CLI's path). Floor: a plain ``torchattacks.PGD`` loop over the same images.

Measurement: synthetic CIFAR-shaped batches already on the device (data loading is not part of either
side); warm-up runs first; then ``--rounds`` rounds alternate kdlab and floor and the medians count. A
``fit`` call has fixed costs (building the optimizer, the end-of-epoch checkpoint), so kdlab's steady-state
step time is the difference of two calls, ``fit(warm-up + N steps) - fit(warm-up steps)``; the floor runs
N steps directly. On a GPU every timing is bracketed by ``torch.cuda.synchronize()``, cuDNN autotuning
(``cudnn.benchmark``) is on for both sides, and peak memory is ``torch.cuda.max_memory_allocated`` over each
side's runs (the models and batches both sides share included). On a CPU peak memory reads n/a. "fp32"
means PyTorch's defaults, under which cuDNN convolutions may use TF32 on Ampere and later GPUs (recorded
in the CSV as ``tf32_convolutions``); "bf16" is autocast to bfloat16.

Sizes: with CUDA, PreAct ResNet-18 teacher and student (ACM on blocks 3-5, identity connectors: the pair of
``recipes/mixacm_cifar10_gpu.yaml``) at batch 512 and 2,048 evaluation images: a few minutes on one
data-centre GPU. Without CUDA, or with ``--smoke``: a small-ResNet teacher (width 16) and student (width 8,
1x1 connectors) at batch 16, a few steps: a smoke test of this script in well under a minute on 2 cores.
``--channels-last`` trains both sides in channels-last memory (kdlab: ``train.channels_last``, prepared by
``kdlab.runtime.acceleration.prepare_models``; the floor: the same memory format for its networks and batches).

    python benchmarks/gpu_throughput.py --out results/benchmarks/gpu_throughput.csv
    python benchmarks/gpu_throughput.py --channels-last --cases distill,pgd-at
    OMP_NUM_THREADS=1 python benchmarks/gpu_throughput.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import itertools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from kdlab.config.methods.mixacm import MixACMSettings
from kdlab.config.sections import AdversarialSpec, TrainSpec
from kdlab.methods.registry import build_method
from kdlab.methods.supervised import SupervisedTraining
from kdlab.models.registry import build_classifier
from kdlab.robustness.accuracy import evaluate_robustness
from kdlab.robustness.attacks import AttackSpec
from kdlab.train.engine import DataSource, fit

EPS, ALPHA = 8 / 255, 2 / 255
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Sizes:
    teacher: tuple[str, dict]
    student: tuple[str, dict]
    blocks: tuple[int, ...]  # ACM blocks, the same index on both models
    batch: int
    warmup: int  # steps before timing
    distill_steps: int  # timed steps per round
    at_steps: int
    rounds: int
    eval_n: int
    eval_batch: int
    nhwc: bool = False  # --channels-last: train.channels_last for kdlab, the same memory format for the floor


GPU = Sizes(teacher=("preact_resnet18", {}), student=("preact_resnet18", {}), blocks=(3, 4, 5), batch=512,
            warmup=3, distill_steps=20, at_steps=6, rounds=3, eval_n=2048, eval_batch=512)
SMOKE = Sizes(teacher=("resnet_small", {"width": 16}), student=("resnet_small", {"width": 8}), blocks=(2, 3, 4),
              batch=16, warmup=1, distill_steps=2, at_steps=1, rounds=1, eval_n=16, eval_batch=16)


@dataclass
class Row:
    case: str
    precision: str
    batch: int
    images: int  # images per timed measurement
    kdlab_s: float  # median seconds for ``images``
    floor_s: float
    kdlab_peak_mib: float | None
    floor_peak_mib: float | None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.kdlab_s / self.floor_s


# --------------------------------------------------------------------------------------------------- timing
class Clock:
    """Wall time and peak memory of calls on one device (synchronised on a GPU)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, function: Callable[[], object]) -> float:
        self.sync()
        started = time.perf_counter()
        function()
        self.sync()
        return time.perf_counter() - started

    @contextlib.contextmanager
    def peak(self, record: list[float]):
        """Appends the peak allocated MiB inside the block to ``record`` (nothing on a CPU)."""
        if self.device.type != "cuda":
            yield
            return
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        yield
        self.sync()
        record.append(torch.cuda.max_memory_allocated(self.device) / 2**20)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train_spec(steps: int, precision: str, nhwc: bool = False) -> TrainSpec:
    """One epoch of ``steps`` steps at a small constant lr (no divergence on random data over many calls),
    the reference SGD settings otherwise, in ``precision``."""
    return TrainSpec(epochs=1, lr=1e-3, schedule="constant", max_batches_per_epoch=steps, precision=precision,
                     channels_last=nhwc)


def kdlab_fit(method: nn.Module, batches: list, steps: int, precision: str, nhwc: bool, run_dir: Path) -> None:
    """``steps`` training steps through ``kdlab.train.engine.fit`` (one epoch, no validation)."""
    source = DataSource(batches=lambda generator: itertools.islice(itertools.cycle(batches), steps),
                        batches_per_epoch=steps, batch_size=lambda batch: len(batch[1]))
    fit(method, source, train_spec(steps, precision, nhwc), seed=0, run_dir=run_dir, validate=None,
        export_best=lambda path: None)


def nhwc_models(method: nn.Module, networks: list[nn.Module], floor: list[nn.Module], on: bool) -> None:
    """With ``--channels-last``: kdlab's own ``train.channels_last`` preparation (``kdlab.runtime.acceleration``) for
    its side, ``.to(memory_format=torch.channels_last)`` for the floor's networks."""
    if not on:
        return
    from kdlab.runtime.acceleration import prepare_models

    prepare_models(method, networks, train_spec(1, "fp32", nhwc=True))
    for network in floor:
        network.to(memory_format=torch.channels_last)


def sgd(parameters) -> torch.optim.Optimizer:
    """The optimizer ``kdlab.train.engine.build_optimizer`` builds by default (momentum 0.9, wd 5e-4 on all)."""
    return torch.optim.SGD([p for p in parameters if p.requires_grad], lr=1e-3, momentum=0.9, weight_decay=5e-4)


def compare_training(clock: Clock, sizes: Sizes, method: nn.Module, floor_step: Callable, floor_parameters,
                     batches: list, steps: int, precision: str) -> tuple[float, float, list, list]:
    """Median seconds of ``steps`` steady-state steps: (kdlab, floor), and each side's peak MiB readings."""
    kdlab_peaks: list[float] = []
    floor_peaks: list[float] = []

    def floor_run(n: int) -> None:
        optimizer = sgd(floor_parameters)  # a fresh optimizer per run, as fit builds one per call
        for batch in itertools.islice(itertools.cycle(batches), n):
            floor_step(batch, optimizer)

    kdlab_times, floor_times = [], []
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch)
        with clock.peak(kdlab_peaks):
            kdlab_fit(method, batches, sizes.warmup, precision, sizes.nhwc, run_dir)  # warm-up (autotuning)
        with clock.peak(floor_peaks):
            floor_run(sizes.warmup)
        for _ in range(sizes.rounds):
            with clock.peak(kdlab_peaks):
                longer = clock.seconds(lambda: kdlab_fit(method, batches, sizes.warmup + steps, precision,
                                                         sizes.nhwc, run_dir))
                shorter = clock.seconds(lambda: kdlab_fit(method, batches, sizes.warmup, precision, sizes.nhwc,
                                                          run_dir))
            kdlab_times.append(max(longer - shorter, 1e-9))
            with clock.peak(floor_peaks):
                floor_times.append(clock.seconds(lambda: floor_run(steps)))
    return statistics.median(kdlab_times), statistics.median(floor_times), kdlab_peaks, floor_peaks


def _peak(readings: list[float]) -> float | None:
    return max(readings) if readings else None


# --------------------------------------------------------------------------------------------------- cases
def describe(model: tuple[str, dict]) -> str:
    arch, options = model
    return arch + (f" w{options['width']}" if "width" in options else "")


def block_outputs(model: nn.Module, indices: tuple[int, ...], store: dict[int, torch.Tensor]) -> list:
    """Forward hooks that put each numbered block's output in ``store`` (the usual plain-PyTorch way)."""
    modules = {block.index: block.module for block in model.blocks()}
    return [modules[index].register_forward_hook(lambda module, args, output, index=index:
                                                 store.__setitem__(index, output))
            for index in indices]


def acm(features: torch.Tensor) -> torch.Tensor:
    """Activated channel map: mean of relu over positions, l2-normalised per sample."""
    return F.normalize(F.relu(features).mean(dim=(2, 3)), dim=1, eps=1e-12)


def distill_case(clock: Clock, sizes: Sizes, teacher: nn.Module, student: nn.Module, batches: list,
                 precision: str) -> Row:
    settings = MixACMSettings(mixup={"enabled": True, "alpha": 1.0}, kd={"weight": 1.0, "temperature": 4.0},
                              acm={"weight": 10.0, "blocks": list(sizes.blocks)})
    method = build_method(settings, copy.deepcopy(student), copy.deepcopy(teacher),
                          image_shape=tuple(batches[0][0].shape[1:]))
    floor_teacher, floor_student = copy.deepcopy(teacher).eval(), copy.deepcopy(student).train()
    for parameter in floor_teacher.parameters():
        parameter.requires_grad_(False)
    teacher_features: dict[int, torch.Tensor] = {}
    student_features: dict[int, torch.Tensor] = {}
    block_outputs(floor_teacher, sizes.blocks, teacher_features)
    block_outputs(floor_student, sizes.blocks, student_features)
    # The same connectors kdlab's "auto" picks: none for equal channel counts, else a 1x1 convolution.
    connectors = nn.ModuleList([
        nn.Identity() if isinstance(kdlab_connector, nn.Identity) else
        nn.Conv2d(kdlab_connector.in_channels, kdlab_connector.out_channels, 1)
        for kdlab_connector in method.connectors]).to(clock.device)
    beta = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))
    temperature = 4.0

    def floor_step(batch, optimizer: torch.optim.Optimizer) -> None:
        images, labels = batch
        lam = float(beta.sample())
        perm = torch.randperm(images.shape[0], device=images.device)
        mixed = lam * images + (1 - lam) * images[perm]
        with autocast(clock.device, precision):
            with torch.no_grad():
                teacher_logits = floor_teacher(mixed)
            logits = floor_student(mixed)
            loss = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels[perm])
            loss = loss + temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                                      F.log_softmax(teacher_logits / temperature, dim=1),
                                                      log_target=True, reduction="batchmean")
            for connector, index in zip(connectors, sizes.blocks):
                difference = acm(connector(student_features[index])) - acm(teacher_features[index])
                loss = loss + 10.0 * difference.pow(2).sum(dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    nhwc_models(method, [method.student, method.teacher], [floor_teacher, floor_student, connectors], sizes.nhwc)
    parameters = [*floor_student.parameters(), *connectors.parameters()]
    kdlab_s, floor_s, kdlab_peaks, floor_peaks = compare_training(
        clock, sizes, method, floor_step, parameters, batches, sizes.distill_steps, precision)
    return Row(f"MixACM distill step ({describe(sizes.teacher)} -> {describe(sizes.student)})", precision, sizes.batch,
               sizes.batch * sizes.distill_steps, kdlab_s, floor_s, _peak(kdlab_peaks), _peak(floor_peaks))


def pgd_at_case(clock: Clock, sizes: Sizes, model: nn.Module, batches: list, precision: str) -> Row:
    method = SupervisedTraining(copy.deepcopy(model).train(), AdversarialSpec(method="pgd", eps=EPS, alpha=ALPHA,
                                                                              steps=10))
    floor_model = copy.deepcopy(model).train()
    nhwc_models(method, [method.model], [floor_model], sizes.nhwc)

    def floor_step(batch, optimizer: torch.optim.Optimizer) -> None:
        images, labels = batch
        with autocast(clock.device, precision):
            delta = torch.empty_like(images).uniform_(-EPS, EPS)
            delta = (images + delta).clamp(0, 1) - images
            for _ in range(10):
                delta.requires_grad_(True)
                (gradient,) = torch.autograd.grad(F.cross_entropy(floor_model(images + delta), labels), delta)
                delta = (delta.detach() + ALPHA * gradient.sign()).clamp(-EPS, EPS)
                delta = (images + delta).clamp(0, 1) - images
            loss = F.cross_entropy(floor_model(images + delta), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    kdlab_s, floor_s, kdlab_peaks, floor_peaks = compare_training(
        clock, sizes, method, floor_step, list(floor_model.parameters()), batches, sizes.at_steps, precision)
    return Row(f"PGD-10 AT step ({describe(sizes.teacher)})", precision, sizes.batch, sizes.batch * sizes.at_steps,
               kdlab_s, floor_s, _peak(kdlab_peaks), _peak(floor_peaks))


def pgd_eval_case(clock: Clock, sizes: Sizes, model: nn.Module) -> Row:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (sizes.eval_n, 3, 32, 32), generator=generator).float().div(255)
    labels = torch.randint(0, 10, (sizes.eval_n,), generator=generator)
    model = copy.deepcopy(model).eval()
    spec = AttackSpec("pgd", eps=EPS, alpha=ALPHA, steps=20, seed=0)

    def kdlab_eval(n: int) -> None:
        evaluate_robustness(model, images[:n], labels[:n], [spec], batch_size=sizes.eval_batch)

    def floor_eval(n: int) -> None:
        attack = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=20, random_start=True)
        correct = 0
        for start in range(0, n, sizes.eval_batch):
            x = images[start:start + sizes.eval_batch].to(clock.device)
            y = labels[start:start + sizes.eval_batch].to(clock.device)
            adversarial = attack(x, y)
            with torch.no_grad():
                correct += int((model(adversarial).argmax(1) == y).sum())

    kdlab_peaks: list[float] = []
    floor_peaks: list[float] = []
    with clock.peak(kdlab_peaks):
        kdlab_eval(sizes.eval_batch)  # warm-up
    with clock.peak(floor_peaks):
        floor_eval(sizes.eval_batch)
    kdlab_times, floor_times = [], []
    for _ in range(sizes.rounds):
        with clock.peak(kdlab_peaks):
            kdlab_times.append(clock.seconds(lambda: kdlab_eval(sizes.eval_n)))
        with clock.peak(floor_peaks):
            floor_times.append(clock.seconds(lambda: floor_eval(sizes.eval_n)))
    return Row(f"PGD-20 evaluation ({describe(sizes.teacher)}, n={sizes.eval_n})", "fp32", sizes.eval_batch, sizes.eval_n,
               statistics.median(kdlab_times), statistics.median(floor_times), _peak(kdlab_peaks),
               _peak(floor_peaks), "floor: torchattacks.PGD")


# --------------------------------------------------------------------------------------------------- output
COLUMNS = ["case", "precision", "batch", "kdlab img/s", "floor img/s", "kdlab/floor time", "kdlab peak MiB",
           "floor peak MiB", "note"]


def _number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def table_cells(row: Row) -> list[str]:
    return [row.case, row.precision, str(row.batch), _number(row.images / row.kdlab_s), _number(row.images / row.floor_s),
            _number(row.ratio, 2), _number(row.kdlab_peak_mib), _number(row.floor_peak_mib), row.note]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def environment(device: torch.device, nhwc: bool) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    from kdlab.results import provenance

    # <sha>-dirty with the patch's digest when the tree differs from the commit (a copied working tree, e.g. the
    # device machine's, carries the session's starting commit plus everything since: dirty, never a bare sha)
    code = provenance()
    commit = code["git_commit"] + (f" (diff {code['git_diff_sha256']})" if code["git_diff_sha256"] else "")
    return {"device": name, "torch": torch.__version__, "kdlab_commit": commit or "unknown",
            "cudnn_benchmark": str(torch.backends.cudnn.benchmark),
            "tf32_convolutions": str(device.type == "cuda" and torch.backends.cudnn.allow_tf32),
            "channels_last": str(nhwc)}


def write_csv(path: Path, rows: list[Row], env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*env, "case", "precision", "batch", "images", "kdlab_seconds", "floor_seconds",
                         "kdlab_images_per_s", "floor_images_per_s", "ratio_kdlab_floor_time", "kdlab_peak_mib",
                         "floor_peak_mib", "note"])
        for row in rows:
            writer.writerow([*env.values(), row.case, row.precision, row.batch, row.images,
                             _raw(row.kdlab_s), _raw(row.floor_s), _raw(row.images / row.kdlab_s), _raw(row.images / row.floor_s),
                             _raw(row.ratio), _raw(row.kdlab_peak_mib), _raw(row.floor_peak_mib), row.note])


def _raw(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# --------------------------------------------------------------------------------------------------- main
def run(sizes: Sizes, device: torch.device, precisions: list[str], cases: list[str]) -> list[Row]:
    clock = Clock(device)
    torch.manual_seed(0)
    teacher = build_classifier(sizes.teacher[0], 10, **sizes.teacher[1]).to(device)
    student = build_classifier(sizes.student[0], 10, **sizes.student[1]).to(device)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (sizes.batch, 3, 32, 32), generator=generator).float().div(255).to(device),
                torch.randint(0, 10, (sizes.batch,), generator=generator).to(device)) for _ in range(4)]
    if sizes.nhwc:  # as kdlab's classification batches with train.channels_last
        batches = [(images.contiguous(memory_format=torch.channels_last), labels) for images, labels in batches]
    rows = []
    for precision in precisions:
        if "distill" in cases:
            rows.append(distill_case(clock, sizes, teacher, student, batches, precision))
            print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        if "pgd-at" in cases:
            rows.append(pgd_at_case(clock, sizes, teacher, batches, precision))
            print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if "pgd-eval" in cases:
        rows.append(pgd_eval_case(clock, sizes, teacher))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and a few steps (automatic without CUDA)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="training precisions (fp32,bf16)")
    parser.add_argument("--cases", default="distill,pgd-at,pgd-eval", help="which cases (distill,pgd-at,pgd-eval)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default 512; smoke 16)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating timed rounds (default 3; smoke 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--channels-last", action="store_true",
                        help="train in channels-last memory (kdlab: train.channels_last; the floor: the same)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows to this CSV")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is visible")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not set(precisions) <= set(PRECISIONS) or not set(cases) <= {"distill", "pgd-at", "pgd-eval"}:
        parser.error(f"--precisions from {PRECISIONS}; --cases from distill, pgd-at, pgd-eval")
    if args.threads:
        torch.set_num_threads(args.threads)
    smoke = args.smoke or device.type != "cuda"
    sizes = SMOKE if smoke else GPU
    if args.batch_size:
        sizes = replace(sizes, batch=args.batch_size, eval_batch=args.batch_size)
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    if args.channels_last:
        sizes = replace(sizes, nhwc=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both sides: fixed input sizes (kdlab's evaluation turns it off)
    env = environment(device, sizes.nhwc)
    started = time.perf_counter()
    rows = run(sizes, device, precisions, cases)
    print(f"device: {env['device']} · torch {env['torch']} · kdlab {env['kdlab_commit']} · "
          f"{'smoke sizes' if smoke else 'GPU sizes'}{', channels-last' if sizes.nhwc else ''} · "
          f"median of {sizes.rounds} alternating round(s) after warm-up · {time.perf_counter() - started:.0f} s")
    print()
    print(markdown(rows))
    if args.out is not None:
        write_csv(args.out, rows, env)
        print(f"\nwrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
