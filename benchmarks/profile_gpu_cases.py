"""Where kdlab's extra time goes against the plain-PyTorch floor (issue #25, item 4): the cases of
``benchmarks/gpu_throughput.py`` (MixACM distill step and PGD-10 AT step in fp32/bf16, with or without
channels-last; PGD-20 evaluation) run once each under ``torch.profiler`` (CPU + CUDA activities). Every call of
kdlab's side (``kdlab_fit``; the evaluation's ``evaluate_robustness``) is wrapped in a ``record_function("kdlab")``
range, so the floor is what runs outside it. Written per case, as small CSVs under ``--out``:

* ``<case>-ops.csv``: the top ``--top`` operators by self CUDA time (by self CPU time without CUDA): name, calls,
  self CUDA / CPU microseconds, their share;
* ``<case>-sides.csv``: the ``kdlab`` range's total CPU and CUDA time beside the whole case's.

A GPU slice runs it for each case (one short run: ``--rounds 1``); on a CPU ``--smoke`` shows it works. It times
nothing of its own: the ratios stay those of gpu_throughput.py, measured without the profiler.

    python benchmarks/profile_gpu_cases.py --out $OUT/profile --channels-last
    OMP_NUM_THREADS=1 python benchmarks/profile_gpu_cases.py --smoke --out /tmp/profile
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_throughput as bench  # noqa: E402


def labelled(function):
    def wrapper(*args, **kwargs):
        with record_function("kdlab"):
            return function(*args, **kwargs)
    return wrapper


def self_time(event, cuda: bool) -> float:
    if cuda:
        return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))
    return float(event.self_cpu_time_total)


def write_case(prof, out: Path, case: str, cuda: bool, top: int) -> None:
    events = prof.key_averages()
    total = sum(self_time(event, cuda) for event in events) or 1.0
    ranked = sorted(events, key=lambda event: -self_time(event, cuda))[:top]
    with (out / f"{case}-ops.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["op", "calls", "self_cuda_us", "self_cpu_us", "share_of_self_time"])
        for event in ranked:
            writer.writerow([event.key, event.count, f"{self_time(event, True):.1f}", f"{event.self_cpu_time_total:.1f}",
                             f"{self_time(event, cuda) / total:.4f}"])
    kdlab = [event for event in events if event.key == "kdlab"]
    with (out / f"{case}-sides.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["range", "cpu_total_us", "cuda_total_us"])
        for event in kdlab:
            writer.writerow(["kdlab", f"{event.cpu_time_total:.1f}",
                             f"{float(getattr(event, 'device_time_total', 0.0)):.1f}"])
        writer.writerow(["whole case (self times summed)", f"{sum(e.self_cpu_time_total for e in events):.1f}",
                         f"{sum(self_time(e, True) for e in events):.1f}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--cases", default="distill,pgd-at,pgd-eval")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    sizes = replace(bench.SMOKE if not cuda else bench.GPU, rounds=1, nhwc=args.channels_last)
    args.out.mkdir(parents=True, exist_ok=True)
    bench.kdlab_fit = labelled(bench.kdlab_fit)
    bench.evaluate_robustness = labelled(bench.evaluate_robustness)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for precision in args.precisions.split(","):
        for case in args.cases.split(","):
            if case == "pgd-eval" and precision != args.precisions.split(",")[0]:
                continue  # evaluated in fp32 only, as gpu_throughput.py does
            with profile(activities=activities) as prof:
                bench.run(sizes, device, [precision], [case])
            name = f"{case}-{precision}" + ("-nhwc" if args.channels_last else "")
            write_case(prof, args.out, name, cuda, args.top)
            print(f"wrote {args.out}/{name}-ops.csv and -sides.csv", file=sys.stderr)


if __name__ == "__main__":
    main()
