"""Benchmark: training images/s of one kdlab process with 1 and with 2 torch threads, alone and beside another
busy process on the same cores -- the measurement behind the default of ``--threads``.

The workload is the quickstart teacher's training step (``recipes/quickstart_teacher.yaml``: resnet_small width
16, FGSM-RS adversarial training, SGD with momentum) on random 32x32 images, at the recipe's batch (128) and at
the 16 images ``kdlab check`` times. Each measurement runs steps for at least ``--seconds`` after two warm-up
steps and reports images/s. The competing process is one of:

* ``none``: nothing of ours (other users' jobs may run: the load average beside every row says how busy);
* ``busy``: ``python -c "while True: pass"``, one core kept busy;
* ``copy``: a second copy of the same workload with 1 thread (what a second kdlab job does).

The cases are interleaved round by round (``--repeats`` rounds) so that a change of the machine's load
affects them alike. One CSV row per measurement (``--out``), with the machine's facts: ``nproc``, the CPU
model, the torch version and the 1-minute load average when the measurement started.

    python benchmarks/threads_under_load.py --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

OUT = Path("results/benchmarks/threads-under-load-cpu.csv")
COMPETITORS = ("none", "busy", "copy")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def workload(batch: int):
    """The quickstart teacher's training step (FGSM-RS, width 16) on one random batch: a callable."""
    from kdlab.config.sections import AdversarialSpec
    from kdlab.methods.supervised import SupervisedTraining
    from kdlab.models.factory import build_model

    torch.manual_seed(0)
    model = build_model("classification", "resnet_small", 10, {"width": 16})
    method = SupervisedTraining(model, AdversarialSpec(method="fgsm-rs", eps=8 / 255)).train()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(batch, 3, 32, 32, generator=generator), torch.randint(10, (batch,), generator=generator)

    def step() -> None:
        result = method((images, labels), generator)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()

    return step


def images_per_second(threads: int, batch: int, seconds: float) -> tuple[float, int]:
    """Images/s over at least ``seconds`` (and 3 steps) after two warm-up steps; and the steps timed."""
    torch.set_num_threads(threads)
    step = workload(batch)
    step()
    step()
    steps, started = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - started), steps


def start_competitor(kind: str) -> subprocess.Popen | None:
    if kind == "none":
        return None
    if kind == "busy":
        command = [sys.executable, "-c", "while True: pass"]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(3.0)  # imported and stepping before the measurement starts
    return process


def worker() -> None:
    """The ``copy`` competitor: the same workload with one thread, forever (until terminated)."""
    torch.set_num_threads(1)
    step = workload(128)
    while True:
        step()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts compared (comma-separated)")
    parser.add_argument("--batches", default="128,16", help="batch sizes (the recipe's; kdlab check's timed 16)")
    parser.add_argument("--competitors", default=",".join(COMPETITORS), help="none, busy, copy")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over every case")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per measurement, at least")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return []
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    competitors = args.competitors.split(",")
    facts = {"nproc": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__}
    print(f"{facts['nproc']} cores ({facts['cpu']}), torch {facts['torch']}, load average at start "
          f"{load_average()}")
    rows = []
    for repeat in range(args.repeats):
        for competitor in competitors:
            process = start_competitor(competitor)
            try:
                for batch in batches:
                    for count in threads:
                        load = load_average()
                        rate, steps = images_per_second(count, batch, args.seconds)
                        row = {"repeat": repeat, "competitor": competitor, "threads": count, "batch": batch,
                               "images_per_s": round(rate, 1), "steps": steps, "load_1min": load, **facts}
                        rows.append(row)
                        print(f"round {repeat}  beside {competitor:4}  batch {batch:3}  {count} threads: "
                              f"{rate:7.1f} img/s  (load {load})", flush=True)
            finally:
                if process is not None:
                    process.terminate()
                    process.wait()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n| beside | batch | threads | images/s (median of {args.repeats}) | runs | load 1-min |")
    print("|---|---|---|---|---|---|")
    for competitor in competitors:
        for batch in batches:
            for count in threads:
                case = [r for r in rows if (r["competitor"], r["batch"], r["threads"]) == (competitor, batch, count)]
                rates = sorted(r["images_per_s"] for r in case)
                loads = [r["load_1min"] for r in case]
                print(f"| {competitor} | {batch} | {count} | {statistics.median(rates):.1f} | "
                      f"{', '.join(f'{r:.0f}' for r in rates)} | {min(loads)}-{max(loads)} |")
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
