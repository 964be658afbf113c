"""Per-sample randomness (``train.rng: sample``): random numbers that are a pure function of
(seed, epoch, stream, sample index, element), so a sample's augmentation and attack start do not depend on the
batch it falls in, the batch size or the number of processes.

Counter-based, as in splittable and counter-based generators (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014 -- the splitmix64 finaliser of Vigna's ``splitmix64.c``; Salmon et
al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): every number is ``mix(key + counter * golden)``,
computed with int64 tensor operations (wrapping multiplication, logical shifts by masking), so it vectorises on
any device and gives bit-identical uniform numbers on the CPU and on a GPU. ``tests/runtime/test_sample_random.py``
checks the tensor code against a pure-Python splitmix64.

How the engine uses it (``train.rng: sample``): each epoch gets a :class:`SampleGenerator` -- a real
``torch.Generator`` (seeded like the ``batch`` mode's epoch generator: the shuffle permutation and batch-level
draws such as mixup's lambda and permutation come from it unchanged) that also carries the epoch's key.
:func:`kdlab.data.classification.iterate_batches` yields :class:`IndexedBatch` es (an ``(images, labels)``
tuple that also knows its training-set ``indices``) and draws crop/flip per sample from the ``augment``
stream; the engine binds each batch's indices to the generator before the step (:func:`bind_batch`), and
:func:`kdlab.robustness.training_attacks.pgd_maximise` (every method's inner maximisation) then draws its random start per
sample: the k-th per-sample draw of a step uses stream ``step:k``. Methods need no change.

What stays batch-level: the shuffle order (the same on every rank, which each takes its shard of) and draws
that pair or mask samples within a batch (mixup's lambda and permutation, MGD's masks): under torchrun they act
within each rank's shard, so those methods train differently on N processes than on one.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "IndexedBatch",
    "SampleGenerator",
    "bind_batch",
    "key_of",
    "mix64",
    "mix64_int",
    "per_sample",
    "sample_normal",
    "sample_uniform",
    "uniform_table",
]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, splitmix64's increment
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 with the same bits (what a tensor holds)."""
    value &= _MASK
    return value - (1 << 64) if value >> 63 else value


def mix64_int(z: int) -> int:
    """splitmix64's finaliser on a Python int (the reference the tensor code is tested against)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _srl(x: Tensor, shift: int) -> Tensor:
    """Logical right shift of int64 bit patterns (``>>`` on int64 tensors is arithmetic)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def mix64(x: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps modulo 2^64, as the unsigned original)."""
    x = (x ^ _srl(x, 30)) * _signed(_M1)
    x = (x ^ _srl(x, 27)) * _signed(_M2)
    return x ^ _srl(x, 31)


def _fold_int(key: int, value: int) -> int:
    return mix64_int(key + _GOLDEN * (value + 1))


def _part(value: int | str) -> int:
    return zlib.crc32(value.encode()) if isinstance(value, str) else int(value)


def key_of(*parts: int | str) -> int:
    """One 64-bit key (as an int64 value) from integers and names, e.g. ``key_of("train", seed, epoch)``."""
    key = 0
    for part in parts:
        key = _fold_int(key, _part(part))
    return _signed(key)


def _bits(key: int, indices: Tensor, count: int) -> Tensor:
    """``(len(indices), count)`` random int64 bit patterns: element j of sample i is mix(mix(key, index_i), j)."""
    golden = _signed(_GOLDEN)
    sample_keys = mix64(key + (indices.to(torch.int64) + 1) * golden)
    counters = torch.arange(1, count + 1, dtype=torch.int64, device=indices.device)
    return mix64(sample_keys.view(-1, 1) + counters.view(1, -1) * golden)


def uniform_table(key: int, indices: Tensor, count: int) -> Tensor:
    """``(len(indices), count)`` float32 uniforms in [0, 1) (24 random bits each) on ``indices``' device."""
    return _srl(_bits(key, indices, count), 40).to(torch.float32) * (2.0 ** -24)


class SampleGenerator(torch.Generator):
    """A ``torch.Generator`` for batch-level draws that also carries a key for per-sample draws.

    ``SampleGenerator(key, seed)``: the torch stream is seeded by ``seed`` (the engine uses the ``batch`` mode's
    epoch seed, so the shuffle order is the same in both modes); ``key`` (:func:`key_of`) keys the per-sample
    numbers. :meth:`bind` sets the sample indices of the batch about to be stepped and restarts its draw count.
    """

    def __new__(cls, key: int, seed: int, device: torch.device | str = "cpu"):
        return super().__new__(cls, device)

    def __init__(self, key: int, seed: int, device: torch.device | str = "cpu"):
        self.manual_seed(seed)
        self.key = int(key)
        self.indices: Tensor | None = None
        self.draws = 0

    def bind(self, indices: Tensor | None) -> SampleGenerator:
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        self.draws = 0
        return self

    def stream(self, name: int | str) -> int:
        """The key of a named stream of this generator (e.g. ``"augment"``)."""
        return key_of(self.key, name)

    def next_stream(self) -> int:
        """The key of the step's next per-sample draw (``step:0``, ``step:1``, ...)."""
        key = key_of(self.key, "step", self.draws)
        self.draws += 1
        return key


class IndexedBatch(tuple):
    """An ``(images, labels)`` batch that also knows the training-set index of each sample (``indices``)."""

    indices: Tensor

    def __new__(cls, images, labels, indices: Tensor):
        batch = super().__new__(cls, (images, labels))
        batch.indices = indices
        return batch


def per_sample(generator: torch.Generator | None) -> SampleGenerator | None:
    """The generator when it draws per sample (``train.rng: sample``), else None."""
    return generator if isinstance(generator, SampleGenerator) else None


def bind_batch(generator: torch.Generator, batch) -> torch.Generator:
    """Before a step: give a :class:`SampleGenerator` the batch's sample indices (``batch.indices``, if any)."""
    if isinstance(generator, SampleGenerator):
        generator.bind(getattr(batch, "indices", None))
    return generator


def _step_indices(generator: SampleGenerator, batch: int, device: torch.device) -> Tensor:
    indices = generator.indices
    if indices is None:
        return torch.arange(batch, device=device)
    if len(indices) != batch:
        raise ValueError(f"a per-sample draw for {batch} samples but the bound batch has {len(indices)}: draw one "
                         "row per sample of the batch the engine passed")
    return indices.to(device)


def sample_uniform(generator: SampleGenerator, shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Uniform [0, 1) float32 of ``shape`` (first dimension: the bound batch), one row per sample, on ``device``."""
    device = torch.device(device)
    batch, rest = int(shape[0]), [int(s) for s in shape[1:]]
    count = 1
    for size in rest:
        count *= size
    table = uniform_table(generator.next_stream(), _step_indices(generator, batch, device), count)
    return table.view(batch, *rest)


def sample_normal(generator: SampleGenerator, shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Standard normal float32 of ``shape``, one row per sample (Box-Muller on two per-sample uniforms; agrees
    across devices to float32 rounding of log and cos)."""
    device = torch.device(device)
    batch, rest = int(shape[0]), [int(s) for s in shape[1:]]
    count = 1
    for size in rest:
        count *= size
    table = uniform_table(generator.next_stream(), _step_indices(generator, batch, device), 2 * count)
    radius = torch.sqrt(-2.0 * torch.log(1.0 - table[:, :count]))  # 1 - u in (0, 1]
    return (radius * torch.cos((2 * torch.pi) * table[:, count:])).view(batch, *rest)
