"""Per-sample randomness (train.rng: sample): a sample's augmentation and attack start depend on (seed, epoch,
sample index) only -- not on the batch size, the batch it falls in, or the number of processes."""

import torch

from kdlab.config.recipe import load_recipe, validate_recipe
from kdlab.data.classification import ImageSet, iterate_batches
from kdlab.robustness.training_attacks import pgd_maximise
from kdlab.runtime.sample_random import SampleGenerator, key_of, mix64
from kdlab.train.engine import epoch_generator

EPS = 8 / 255


def _images(n: int, seed: int = 0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.randint(0, 10, (n,), generator=generator))


def _augmented_by_index(data: ImageSet, batch_size: int, rng: str, epoch: int = 3) -> dict[int, torch.Tensor]:
    out = {}
    for batch in iterate_batches(data, batch_size, epoch_generator(11, epoch, rng), shuffle=True, augment=True):
        images, _ = batch
        for index, image in zip(batch.indices.tolist(), images):
            out[index] = image
    return out


def test_splitmix64_matches_the_reference_sequence():
    """Vigna's splitmix64.c from seed 1234567: output k is mix(seed + k * golden). Reference values are those
    of the C implementation (also the test vectors of Java's SplittableRandom-compatible ports)."""
    golden, seed = 0x9E3779B97F4A7C15, 1234567
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                16408922859458223821]
    states = [(seed + k * golden) % 2**64 for k in range(1, 6)]
    signed = torch.tensor([s - 2**64 if s >= 2**63 else s for s in states], dtype=torch.int64)
    assert [value % 2**64 for value in mix64(signed).tolist()] == expected


def test_same_epoch_same_augmented_image_whatever_the_batch_size():
    data = _images(40)
    small, large = _augmented_by_index(data, 7, "sample"), _augmented_by_index(data, 32, "sample")
    assert small.keys() == large.keys() == set(range(40))
    assert all(torch.equal(small[i], large[i]) for i in range(40))
    # ... which the batch-by-batch stream does not give (so the comparison above can fail)
    batch_small, batch_large = _augmented_by_index(data, 7, "batch"), _augmented_by_index(data, 32, "batch")
    assert not all(torch.equal(batch_small[i], batch_large[i]) for i in range(40))
    # another epoch draws other crops; the shuffle order of sample mode is batch mode's
    other = _augmented_by_index(data, 7, "sample", epoch=4)
    assert not all(torch.equal(small[i], other[i]) for i in range(40))
    order = [b.indices for b in iterate_batches(data, 8, epoch_generator(11, 3, "sample"), True, False)]
    assert torch.equal(torch.cat(order), torch.randperm(40, generator=torch.Generator().manual_seed(11 * 1_000_003 + 3)))


def test_sharded_batches_are_the_global_batch_split_in_rank_order():
    data = _images(40)
    whole = list(iterate_batches(data, 8, epoch_generator(5, 1, "sample"), True, True, drop_last=True))
    parts = [list(iterate_batches(data, 8, epoch_generator(5, 1, "sample"), True, True, drop_last=True, shard=(r, 2)))
             for r in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 5
    for full, first, second in zip(whole, *parts):
        assert torch.equal(torch.cat([first.indices, second.indices]), full.indices)
        assert torch.equal(torch.cat([first[0], second[0]]), full[0])  # per-sample crops: the same images


def _decode_crop(out: torch.Tensor) -> tuple[int, int, bool]:
    """Top/left offsets and flip of a crop of the position-coded image (channel 0 = row + 1, 1 = column + 1):
    output row 4 reads padded row top + 4 = image row top; output column 4 (27 when flipped) reads image
    column left."""
    flipped = bool(out[1, 16, 20] < out[1, 16, 10])
    top = round(float(out[0, 4, 16]) * 255) - 1
    left = round(float(out[1, 16, 27 if flipped else 4]) * 255) - 1
    return top, left, flipped


def test_crop_offsets_are_uniform_over_0_to_8_and_half_the_images_are_flipped():
    n = 9000
    rows = torch.arange(1, 33, dtype=torch.uint8).view(1, 32, 1).expand(1, 32, 32)
    cols = torch.arange(1, 33, dtype=torch.uint8).view(1, 1, 32).expand(1, 32, 32)
    coded = torch.cat([rows, cols, torch.zeros(1, 32, 32, dtype=torch.uint8)]).expand(n, 3, 32, 32).contiguous()
    data = ImageSet(coded, torch.zeros(n, dtype=torch.int64))
    (images, _), = list(iterate_batches(data, n, epoch_generator(0, 1, "sample"), shuffle=False, augment=True))
    decoded = [_decode_crop(image) for image in images]
    tops = torch.bincount(torch.tensor([d[0] for d in decoded]), minlength=9)
    lefts = torch.bincount(torch.tensor([d[1] for d in decoded]), minlength=9)
    assert len(tops) == len(lefts) == 9  # offsets 0..8 (padding 4) and nothing else
    assert int(tops.min()) > 850 and int(tops.max()) < 1150  # 1000 expected each; 5 standard deviations
    assert int(lefts.min()) > 850 and int(lefts.max()) < 1150
    assert abs(sum(d[2] for d in decoded) / n - 0.5) < 0.025
    joint = torch.bincount(torch.tensor([d[0] * 9 + d[1] for d in decoded]), minlength=81)
    assert int(joint.min()) > 60  # top and left are not tied to each other (111 expected per pair)


def _start(generator: SampleGenerator, images: torch.Tensor, indices: list[int], start: str) -> torch.Tensor:
    generator.bind(torch.tensor(indices))
    return pgd_maximise(lambda x: x.sum(), images, eps=EPS, alpha=0.0, steps=0, generator=generator, start=start)


def test_a_samples_random_start_is_the_same_whatever_its_batch():
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    for start in ("uniform", "normal"):
        generator = epoch_generator(2, 5, "sample")
        alone = _start(generator, images[2:3], [2], start)
        in_batch = _start(generator, images, [0, 1, 2, 3, 4, 5], start)
        shuffled = _start(generator, images[[4, 2, 0]], [4, 2, 0], start)
        assert torch.equal(alone[0], in_batch[2]) and torch.equal(alone[0], shuffled[1])
        assert torch.equal(in_batch[4], shuffled[0])
        assert not torch.equal(in_batch[0] - images[0], in_batch[1] - images[1])  # samples get their own noise
        other_epoch = _start(epoch_generator(2, 6, "sample"), images, [0, 1, 2, 3, 4, 5], start)
        assert not torch.equal(other_epoch, in_batch)
    uniform = _start(epoch_generator(2, 5, "sample"), images, list(range(6)), "uniform") - images
    assert float(uniform.abs().max()) <= EPS + 1e-7 and float(uniform.abs().max()) > 0.9 * EPS
    normal = _start(epoch_generator(2, 5, "sample"), images, list(range(6)), "normal") - images
    assert 0.0008 < float(normal.std()) < 0.0012  # 0.001 * N(0, 1), TRADES' start


def test_a_steps_second_draw_differs_from_its_first():
    generator = SampleGenerator(key_of("train", 0, 1), 0).bind(torch.tensor([7]))
    images = torch.full((1, 3, 4, 4), 0.5)
    first = pgd_maximise(lambda x: x.sum(), images, eps=EPS, alpha=0.0, steps=0, generator=generator)
    second = pgd_maximise(lambda x: x.sum(), images, eps=EPS, alpha=0.0, steps=0, generator=generator)
    assert not torch.equal(first, second)
    generator.bind(torch.tensor([7]))  # the next step of the same sample starts the count again
    assert torch.equal(pgd_maximise(lambda x: x.sum(), images, eps=EPS, alpha=0.0, steps=0, generator=generator),
                       first)


def test_rng_batch_written_out_and_sync_bn_at_its_default_keep_existing_run_keys():
    """train.rng's default became sample (issue #24): rng: batch written out keeps the key runs had before
    (tests/config/test_run_keys.py pins both); the default and an explicit sample name one run."""
    # acm.weight as it was when the keys below were committed (the recipe now pins methods_cpu's tuned value)
    base = load_recipe("recipes/mixacm_cifar10_cpu.yaml", ["method.acm.weight=10.0"])
    assert base.train.rng == "sample" and base.key() == "474984682f"
    raw = base.to_dict()
    written = validate_recipe({**raw, "train": {**raw["train"], "rng": "sample", "sync_bn": False}})
    assert written.key() == base.key()
    batch = validate_recipe({**raw, "train": {**raw["train"], "rng": "batch"}})
    assert batch.key() == "2c5b5b2de9"  # the committed key while batch was the default
    assert validate_recipe({**raw, "train": {**raw["train"], "sync_bn": True}}).key() != base.key()
