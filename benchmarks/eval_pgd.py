"""Throughput of kdlab's PGD evaluation vs a plain torchattacks.PGD loop, on the same model and images.

kdlab's number is the wall time of the whole ``evaluate_robustness(model, images, labels, [pgd])`` call -- the
code path the CLI uses: shared clean pass, eval-mode/grad/RNG handling, per-sample seeded random starts and
robust-mask bookkeeping included. The plain loop calls ``torchattacks.PGD`` (same eps, step, steps, random start)
batch by batch and counts correct predictions on the adversarial images. After a warm-up, the two are timed
alternately ``--repeats`` times; the medians, images/s and the ratio kdlab/plain (target >= 0.95) are printed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_pgd.py --n 256 --batch-size 128 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from kdlab.robustness.accuracy import evaluate_robustness
from kdlab.robustness.attacks import AttackSpec


class SmallConvNet(nn.Module):
    """CIFAR-shaped (3x32x32) conv net, normalisation inside: conv16-conv32(s2)-conv64(s2)-pool-linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.bn(self.conv3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def plain_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, eps: float,
               alpha: float, steps: int, device: torch.device) -> float:
    model.eval()
    attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        adv = attack(x, y)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    return 100.0 * correct / images.shape[0]


def kdlab_eval(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, eps: float,
               alpha: float, steps: int) -> float:
    spec = AttackSpec("pgd", eps=eps, alpha=alpha, steps=steps, seed=0)
    return evaluate_robustness(model, images, labels, [spec], batch_size=batch_size)[0].accuracy


def timed(fn) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, fn's value)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="number of images (default 256)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each (default 3)")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SmallConvNet().to(device).eval()
    images = torch.rand(args.n, 3, 32, 32)
    labels = torch.randint(0, 10, (args.n,))
    eps, alpha = 8 / 255, 2 / 255

    def ours() -> float:
        return kdlab_eval(model, images, labels, args.batch_size, eps, alpha, args.steps)

    def plain() -> float:
        return plain_loop(model, images, labels, args.batch_size, eps, alpha, args.steps, device)

    warm = images[: args.batch_size], labels[: args.batch_size]
    kdlab_eval(model, *warm, args.batch_size, eps, alpha, args.steps)
    plain_loop(model, *warm, args.batch_size, eps, alpha, args.steps, device)

    ours_wall, ours_cpu, plain_wall, plain_cpu = [], [], [], []
    for _ in range(args.repeats):  # alternate, so that drifting machine load hits both alike
        wall, cpu, acc_ours = timed(ours)
        ours_wall.append(wall)
        ours_cpu.append(cpu)
        wall, cpu, acc_plain = timed(plain)
        plain_wall.append(wall)
        plain_cpu.append(cpu)
    med = statistics.median
    print(f"device={device} threads={args.threads} n={args.n} batch={args.batch_size} PGD-{args.steps} "
          f"eps=8/255 alpha=2/255, median of {args.repeats} (wall; CPU time of this process in brackets)")
    for name, wall, cpu, acc in (("kdlab evaluate_robustness", ours_wall, ours_cpu, acc_ours),
                                 ("plain torchattacks.PGD   ", plain_wall, plain_cpu, acc_plain)):
        print(f"{name} : {args.n / med(wall):8.1f} images/s  [{args.n / med(cpu):8.1f} images/CPU-s]  "
              f"({med(wall):.2f} s; robust acc {acc:.1f}%)")
    print(f"ratio kdlab/plain          : {med(plain_wall) / med(ours_wall):.3f} wall  "
          f"[{med(plain_cpu) / med(ours_cpu):.3f} CPU]  (target >= 0.95)")


if __name__ == "__main__":
    main()
