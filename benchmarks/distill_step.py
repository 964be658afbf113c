"""Benchmark: one MixACM training step against its floor, and the share of a step spent on data.

kdlab step = mixup + teacher forward (no grad, taps on blocks 2-4) + student forward with taps
+ mixup-CE + KD + 3 ACM terms (1x1 connectors) + backward + SGD step, through the engine's
``MixACM.forward``. Floor = the same teacher no-grad forward and student
forward/CE/backward/SGD step written in plain PyTorch on the same batch: the work any
implementation must do. The ratio kdlab/floor is the overhead of kdlab's losses, taps and
connectors (target <= 1.10).

    python benchmarks/distill_step.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kdlab.config.methods.mixacm import MixACMSettings
from kdlab.data.classification import ImageSet, iterate_batches
from kdlab.methods.mixacm import MixACM
from kdlab.models.registry import build_classifier


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--teacher-width", type=int, default=16)
    parser.add_argument("--student-width", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teacher = build_classifier("resnet_small", 10, width=args.teacher_width).eval()
    student = build_classifier("resnet_small", 10, width=args.student_width)
    method = MixACM(student, teacher, MixACMSettings())
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    floor_optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    data = ImageSet(torch.randint(0, 256, (args.batch_size * 4, 3, 32, 32), dtype=torch.uint8),
                    torch.randint(0, 10, (args.batch_size * 4,)))
    images, labels = next(iterate_batches(data, args.batch_size, torch.Generator().manual_seed(0), True, True))
    generator = torch.Generator().manual_seed(0)
    method.train()

    def kdlab_step() -> None:
        result = method((images, labels), generator)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()

    def floor_step() -> None:
        with torch.no_grad():
            teacher(images)
        loss = F.cross_entropy(student(images), labels)
        floor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        floor_optimizer.step()

    def data_step() -> None:
        next(iterate_batches(data, args.batch_size, generator, shuffle=True, augment=True))

    # Interleave the measurements so machine load affects both alike.
    kdlab_times, floor_times = [], []
    for _ in range(3):
        kdlab_times.append(median_seconds(kdlab_step, args.repeats))
        floor_times.append(median_seconds(floor_step, args.repeats))
    kdlab_s, floor_s = min(kdlab_times), min(floor_times)
    data_s = median_seconds(data_step, args.repeats)
    print(f"batch {args.batch_size}, teacher resnet_small w{args.teacher_width}, student w{args.student_width}, "
          f"{args.threads} threads")
    print(f"kdlab MixACM step : {kdlab_s * 1000:8.1f} ms  ({args.batch_size / kdlab_s:,.0f} img/s)")
    print(f"plain-PyTorch floor: {floor_s * 1000:8.1f} ms  ({args.batch_size / floor_s:,.0f} img/s)")
    print(f"ratio kdlab/floor : {kdlab_s / floor_s:8.3f}  (target <= 1.10)")
    print(f"data (shuffle + crop/flip of one batch): {data_s * 1000:.1f} ms = "
          f"{100 * data_s / (data_s + kdlab_s):.1f}% of a step")


if __name__ == "__main__":
    main()
