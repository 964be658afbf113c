"""Forward + backward time of kdlab's multi-level SSIM feature loss vs ``kornia.losses.ssim_loss``.

FPN-shaped features: batch 2, 256 channels, levels 100x100, 50x50, 25x25, 13x13, 7x7 (student requires grad,
teacher does not). Both sides get the same inputs: min-max psi per (sample, channel) on student and teacher, then
SSIM with a Gaussian window of 11 taps and sigma 1.5, loss = mean (1 - SSIM) / 2 per level, summed over levels.
kornia runs level by level with kdlab's effective window size (kdlab shrinks the window to 7 taps on the 7x7 level;
kornia always uses sigma = 1.5, so that one level's values differ but its work is the same).

kdlab and kornia are timed alternately, after warm-up, and the medians of ``--repeats`` runs are reported, so a
slow period on a shared machine hits both. Wall time is the headline; the process's CPU time is printed too,
because it is less sensitive to other processes competing for the cores. Usage::

    python benchmarks/ssim_loss.py --repeats 7 --threads 2

Allocator note: kdlab filters all five moments of a level in one conv, so its temporaries on the 100 x 100 level
are ~100 MB, while kornia's are ~20 MB. glibc hands out allocations above 32 MB as fresh mmap'd pages and returns
them on free, so kdlab pays page faults that kornia does not; on a VM where faults are expensive this shows at one
thread. ``MALLOC_MMAP_THRESHOLD_=4294967296 python benchmarks/ssim_loss.py ...`` takes the allocator out of the
comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdlab.losses.feature import minmax_normalize
from kdlab.losses.multilevel import multilevel_feature_loss
from kdlab.losses.ssim import effective_window, ssim_loss

LEVEL_SIDES = (100, 50, 25, 13, 7)


def make_levels(batch: int, channels: int, dtype: torch.dtype, seed: int) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(seed)
    student, teacher = [], []
    for side in LEVEL_SIDES:
        # Signed, FPN-like activations: the psi normalisation is part of the measured work.
        teacher.append(torch.randn(batch, channels, side, side, generator=generator, dtype=dtype))
        noisy = teacher[-1] + 0.5 * torch.randn(batch, channels, side, side, generator=generator, dtype=dtype)
        student.append(noisy.requires_grad_(True))
    return student, teacher


def kdlab_step(student: list, teacher: list) -> torch.Tensor:
    loss = multilevel_feature_loss(
        student, teacher, kind="ssim", components="lcs", normalize="sample_channel"
    )
    loss.backward()
    return loss.detach()


def kornia_step(student: list, teacher: list) -> torch.Tensor:
    import kornia

    total = torch.zeros(())
    for s, t in zip(student, teacher):
        taps, _ = effective_window(s.shape[-2], s.shape[-1], 11, 1.5)
        s_n = minmax_normalize(s, "sample_channel")
        t_n = minmax_normalize(t.detach(), "sample_channel")
        total = total + kornia.losses.ssim_loss(s_n, t_n, taps, max_val=1.0)
    total.backward()
    return total.detach()


def timed(step, student: list, teacher: list) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one forward + backward."""
    for s in student:
        s.grad = None
    wall, cpu = time.perf_counter(), time.process_time()
    step(student, teacher)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed runs per implementation (median reported)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per implementation first")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    student, teacher = make_levels(args.batch, args.channels, dtype, args.seed)

    # Same value on the levels where both use the same window (all but the 7x7 one): a sanity check, not timed.
    for s, t in zip(student[:-1], teacher[:-1]):
        import kornia

        ours = ssim_loss(s, t).item()
        theirs = kornia.losses.ssim_loss(
            minmax_normalize(s, "sample_channel"), minmax_normalize(t, "sample_channel"), 11
        ).item()
        print(f"level {s.shape[-1]:>3}x{s.shape[-1]:<3} loss kdlab {ours:.6f}  kornia {theirs:.6f}")

    for _ in range(args.warmup):
        timed(kdlab_step, student, teacher)
        timed(kornia_step, student, teacher)
    ours_times, kornia_times = [], []
    for _ in range(args.repeats):
        ours_times.append(timed(kdlab_step, student, teacher))
        kornia_times.append(timed(kornia_step, student, teacher))
    ours_wall = statistics.median(t[0] for t in ours_times)
    kornia_wall = statistics.median(t[0] for t in kornia_times)
    ours_cpu = statistics.median(t[1] for t in ours_times)
    kornia_cpu = statistics.median(t[1] for t in kornia_times)
    shape = f"B={args.batch} C={args.channels} levels {'/'.join(map(str, LEVEL_SIDES))} {args.dtype}"
    print(f"{shape}, threads={args.threads}, repeats={args.repeats} (medians of forward+backward)")
    print(f"kdlab  multilevel_feature_loss : {ours_wall * 1000:8.1f} ms wall  {ours_cpu * 1000:8.1f} ms CPU")
    print(
        f"kornia ssim_loss per level     : {kornia_wall * 1000:8.1f} ms wall  {kornia_cpu * 1000:8.1f} ms CPU"
    )
    print(
        f"ratio kdlab / kornia           : {ours_wall / kornia_wall:8.3f} wall  {ours_cpu / kornia_cpu:8.3f} CPU"
    )
    print(f"wall ms, kdlab : {_fmt([t[0] for t in ours_times])}")
    print(f"wall ms, kornia: {_fmt([t[0] for t in kornia_times])}")


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t * 1000:.0f}" for t in times)


if __name__ == "__main__":
    main()
