"""The CUDA side of per-sample randomness and torchrun, checked where a CUDA GPU is visible (skipped elsewhere).

Run on a GPU machine: ``pytest -q tests/gpu/test_distributed_gpu.py``. One GPU is enough: torchrun with one process
still joins the ``cpu:gloo,cuda:nccl`` process group and trains through DistributedDataParallel on
``cuda:LOCAL_RANK``. (Several processes on one GPU are not possible with NCCL; the multi-process logic is
checked on CPUs in tests/runtime/test_distributed.py.)
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kdlab.data.augment import sample_crop_flip
from kdlab.runtime.sample_random import SampleGenerator, key_of, mix64, uniform_table
from tests.helpers.cuda_fit import cuda_fit, synchronisations

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ROOT = Path(__file__).resolve().parents[2]


def test_per_sample_numbers_are_bit_identical_on_cuda():
    indices = torch.randint(0, 2**40, (512,), dtype=torch.int64, generator=torch.Generator().manual_seed(0))
    for key in (key_of("train", 0, 1), key_of("validation", 7), -5, 2**62):
        assert torch.equal(uniform_table(key, indices, 3072), uniform_table(key, indices.cuda(), 3072).cpu())
    bits = torch.randint(-2**63, 2**63 - 1, (1 << 16,), dtype=torch.int64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mix64(bits), mix64(bits.cuda()).cpu())  # int64 multiplication wraps alike on both
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    generator = SampleGenerator(key_of("train", 0, 1), 0)
    # The crops and flips are the same; the uint8 -> [0, 1] division may round differently in the last bit on the
    # GPU (seen on an H200), so the pixels are compared as the integers they came from.
    on_cpu = sample_crop_flip(images, generator, indices[:64])
    on_gpu = sample_crop_flip(images.cuda(), generator, indices[:64].cuda()).cpu()
    assert torch.equal((on_cpu * 255).round(), (on_gpu * 255).round())
    assert (on_cpu - on_gpu).abs().max() <= 1e-7


def test_per_sample_randomness_adds_no_host_synchronisation_per_step(tmp_path):
    cuda_fit(tmp_path / "warm", 2, rng="sample")
    few = synchronisations(tmp_path / "few", 4, rng="sample")
    many = synchronisations(tmp_path / "many", 16, rng="sample")
    assert many <= few + 2, f"{few} synchronisations with 4 steps an epoch, {many} with 16"


def test_torchrun_trains_and_evaluates_on_one_gpu(tmp_path):
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "gpu-ddp", "device": "cuda",
        "data": {"dataset": "embedded", "subset": 256, "val_size": 64, "test_subset": 100, "batch_size": 64},
        "model": {"arch": "resnet_small", "width": 8},
        "train": {"epochs": 2, "rng": "sample", "sync_bn": True, "max_batches_per_epoch": 3,
                  "adversarial": {"method": "pgd", "steps": 2}},
        "eval": {"n": 100, "steps": 3}, "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")},
    }))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "kdlab",
               "train", str(recipe)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "runs.csv", newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert float(row["clean_acc"]) >= float(row["pgd_acc"]) >= 0
