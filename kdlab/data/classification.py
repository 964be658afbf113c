"""Image-classification data: decoded once into uint8 tensors held in memory, augmented on tensors.

Datasets (``load_classification_data(dataset, ...)``):

- ``cifar10`` / ``cifar100``: the official python batches via torchvision (``root``, ``download``);
- ``imagefolder``: ``root/train/<class>/*`` and ``root/test/<class>/*`` (e.g. ../shared/data/cifar10-jpeg);
  the subset is chosen from the file list first, so only the chosen files are read and decoded;
- ``embedded``: a stratified real CIFAR-10 subset shipped in the package (5000 train, 500/class; 1000 test,
  100/class; original JPEG bytes), built by ``scripts/build_embedded_cifar10.py``. Needs no network or files.

Splits: ``val_size`` images are held out of TRAIN (stratified, seeded; never from test), ``subset`` training
images are then chosen from the rest (stratified, seeded). Both are drawn from one seeded per-class
permutation — val from its end, the subset from its start — so the validation images do not depend on
``subset`` and the subset does not depend on ``val_size`` (unless together they need almost every image).
``test_subset`` is a stratified, seeded subset of the test split.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdlab.config.names import CLASSIFICATION_DATASETS
from kdlab.data.augment import random_crop_flip, sample_crop_flip, to_float
from kdlab.errors import KdlabError, did_you_mean
from kdlab.runtime.device_copy import to_device
from kdlab.runtime.sample_random import IndexedBatch, per_sample

__all__ = [
    "DATASETS",
    "EMBEDDED_ASSET",
    "ClassificationData",
    "ImageSet",
    "iterate_batches",
    "load_classification_data",
    "num_batches",
    "on_device",
    "stratified_split",
]

DATASETS = CLASSIFICATION_DATASETS
EMBEDDED_ASSET = Path(__file__).resolve().parent / "assets" / "cifar10_embedded.npz"
DEFAULT_ROOT = "data"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


@dataclass
class ImageSet:
    """``images``: uint8 N x C x H x W; ``labels``: int64 N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"ImageSet.images must be uint8 N x C x H x W, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ValueError(f"ImageSet.labels must be int64 of length {len(self.images)}, got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, indices: torch.Tensor | Sequence[int]) -> ImageSet:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass
class ClassificationData:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    classes: list[str]
    name: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------------------------- splits


def _derive_seed(seed: int, stream: str) -> int:
    digest = hashlib.sha256(f"kdlab:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _allocate(sizes: list[int], n: int, caps: list[int]) -> list[int]:
    """Split ``n`` over classes proportionally to ``sizes`` (largest remainder, ties -> lower class index),
    never giving a class more than its cap. Requires n <= sum(caps)."""
    total = sum(sizes)
    if n <= 0 or total == 0:
        return [0] * len(sizes)
    quotas = [n * s / total for s in sizes]
    counts = [min(int(q), c) for q, c in zip(quotas, caps)]
    order = sorted(range(len(sizes)), key=lambda k: (-(quotas[k] - int(quotas[k])), k))
    remaining = n - sum(counts)
    while remaining > 0:
        progressed = False
        for k in order:
            if remaining == 0:
                break
            if counts[k] < caps[k]:
                counts[k] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise AssertionError("allocation exceeds capacity")  # callers check n <= sum(caps)
    return counts


def stratified_split(labels: torch.Tensor, num_classes: int, subset: int | None, val_size: int,
                     seed: int, stream: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (sorted) of the chosen subset and of the held-out validation split, stratified by class.

    Per class, one seeded permutation: validation takes its last ``v_k`` entries, the subset its first ``s_k``.
    ``subset=None`` means every image not held out.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(_derive_seed(seed, stream))
    perms = []
    for k in range(num_classes):
        idx = torch.nonzero(labels == k).flatten()
        perms.append(idx[torch.randperm(len(idx), generator=generator)])
    sizes = [len(p) for p in perms]
    val_counts = _allocate(sizes, val_size, sizes)
    room = [s - v for s, v in zip(sizes, val_counts)]
    sub_counts = room if subset is None else _allocate(sizes, subset, room)
    empty = torch.zeros(0, dtype=torch.int64)
    chosen = torch.cat([p[:c] for p, c in zip(perms, sub_counts)] or [empty])
    held = torch.cat([p[len(p) - v:] for p, v in zip(perms, val_counts)] or [empty])
    return torch.sort(chosen).values, torch.sort(held).values


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise KdlabError(f"data.{name}={value!r} is invalid: use an integer >= {minimum}")


def _plan_splits(dataset: str, train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                 subset: int | None, val_size: int, test_subset: int | None, seed: int):
    n_train, n_test = len(train_labels), len(test_labels)
    if val_size >= n_train:
        raise KdlabError(f"data.val_size ({val_size}) leaves none of the {n_train} training images of {dataset} "
                         "for training: lower data.val_size")
    if subset is not None and subset + val_size > n_train:
        raise KdlabError(
            f"data.subset ({subset}) + data.val_size ({val_size}) is more than the {n_train} training images of "
            f"{dataset}: lower data.subset or data.val_size"
        )
    if test_subset is not None and test_subset > n_test:
        raise KdlabError(f"data.test_subset ({test_subset}) is more than the {n_test} test images of {dataset}: "
                         "lower it or leave it unset for the full test split")
    train_idx, val_idx = stratified_split(train_labels, num_classes, subset, val_size, seed, "train")
    if test_subset is None:
        test_idx = torch.arange(n_test)
    else:
        test_idx, _ = stratified_split(test_labels, num_classes, test_subset, 0, seed, "test")
    return train_idx, val_idx, test_idx


# ---------------------------------------------------------------------------------------------- decoding


@contextlib.contextmanager
def _quiet_torchvision_io():
    """torchvision 0.29 warns on every decode call that its image codecs are deprecated (for TorchCodec);
    kdlab pins that torchvision and falls back to Pillow, so the warning is noise for users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TorchVision are deprecated.*", category=DeprecationWarning)
        yield


def _torchvision_io():
    try:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    except ImportError:  # pragma: no cover - future torchvision without image codecs: Pillow does it all
        return None
    return ImageReadMode, decode_image, decode_jpeg


def _decode_one(data: bytes, source: str) -> torch.Tensor:
    tv = _torchvision_io()
    if tv is not None:
        mode, decode_image, _ = tv
        try:
            with _quiet_torchvision_io():
                return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode.RGB)
        except (RuntimeError, ValueError):
            pass
    try:  # formats torchvision cannot decode (BMP, PPM, TIFF, ...)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            array = np.asarray(im.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    except Exception as error:  # noqa: BLE001 - any decoder failure becomes one friendly message
        raise KdlabError(f"cannot decode image {source} ({type(error).__name__}): remove or replace the file") from None


def _decode_many(blobs: Sequence[bytes | torch.Tensor], sources: Sequence[str]) -> torch.Tensor:
    """Decode encoded images to one uint8 N x 3 x H x W tensor (JPEGs in one batched call)."""
    tv = _torchvision_io()
    tensors = [b if isinstance(b, torch.Tensor) else torch.frombuffer(bytearray(b), dtype=torch.uint8)
               for b in blobs]
    out: list[torch.Tensor | None] = [None] * len(tensors)
    jpeg_pos = [i for i, t in enumerate(tensors) if len(t) >= 2 and int(t[0]) == 0xFF and int(t[1]) == 0xD8]
    if jpeg_pos and tv is not None:
        mode, _, decode_jpeg = tv
        try:
            with _quiet_torchvision_io():
                decoded = decode_jpeg([tensors[i] for i in jpeg_pos], mode=mode.RGB)
            for i, img in zip(jpeg_pos, decoded):
                out[i] = img
        except (RuntimeError, ValueError):
            pass  # one bad file: fall back to one-by-one decoding to name it
    for i, img in enumerate(out):
        if img is None:
            out[i] = _decode_one(bytes(tensors[i].numpy()), sources[i])
    if not out:
        raise KdlabError("no images to decode: check data.root and the subset sizes")
    shapes = {tuple(img.shape) for img in out}
    if len(shapes) > 1:
        first = tuple(out[0].shape)
        odd = next(i for i, img in enumerate(out) if tuple(img.shape) != first)
        raise KdlabError(f"images have different sizes ({sources[0]} is {first[1]}x{first[2]}, {sources[odd]} is "
                         f"{out[odd].shape[1]}x{out[odd].shape[2]}): resize the dataset to one size first")
    return torch.stack(out)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- datasets


def list_imagefolder_split(root: Path, split: str, classes: list[str] | None) -> tuple[list[str], list[str], list[int]]:
    folder = root / split
    if not folder.is_dir():
        raise KdlabError(f"imagefolder split '{split}' not found: expected {folder}/<class>/<image> "
                         f"(data.root must contain train/ and test/ folders)")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        if not found:
            raise KdlabError(f"no class folders in {folder}: expected {folder}/<class>/<image>")
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise KdlabError(f"{folder} has class folders {extra} that train/ lacks: use the same classes in both")
    files, labels = [], []
    for label, cls in enumerate(classes):
        class_dir = folder / cls
        if not class_dir.is_dir():
            continue
        with os.scandir(class_dir) as entries:
            names = sorted(e.name for e in entries if e.name.lower().endswith(_IMAGE_EXTENSIONS) and e.is_file())
        if split == "train" and not names:
            raise KdlabError(f"class folder {class_dir} has no images (.jpg, .png, ...): add images or remove it")
        prefix = os.path.join(str(class_dir), "")
        files += [prefix + n for n in names]  # plain strings: 50k Path objects would cost ~1 s
        labels += [label] * len(names)
    if not files:
        raise KdlabError(f"no images found under {folder}: expected {folder}/<class>/<image>")
    return classes, files, labels


def _read_files(paths: Sequence[str]) -> torch.Tensor:
    blobs = []
    for p in paths:
        try:
            with open(p, "rb") as handle:
                blobs.append(handle.read())
        except OSError as error:
            raise KdlabError(f"cannot read image {p}: {error.strerror or error}") from None
    return _decode_many(blobs, [str(p) for p in paths])


def _load_imagefolder(root: str | None, subset, val_size, test_subset, seed) -> ClassificationData:
    if root is None:
        raise KdlabError("dataset imagefolder needs data.root: a folder with train/<class>/* and test/<class>/*")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise KdlabError(f"imagefolder root {base} does not exist: set data.root to a folder with train/ and test/")
    classes, train_files, train_labels_list = list_imagefolder_split(base, "train", None)
    _, test_files, test_labels_list = list_imagefolder_split(base, "test", classes)
    train_labels = torch.tensor(train_labels_list, dtype=torch.int64)
    test_labels = torch.tensor(test_labels_list, dtype=torch.int64)
    train_idx, val_idx, test_idx = _plan_splits(f"imagefolder {base}", train_labels, test_labels, len(classes),
                                                subset, val_size, test_subset, seed)

    def load(files: list[str], labels: torch.Tensor, idx: torch.Tensor) -> ImageSet:
        return ImageSet(_read_files([files[i] for i in idx.tolist()]), labels[idx])

    train = load(train_files, train_labels, train_idx)
    val = load(train_files, train_labels, val_idx) if len(val_idx) else None
    test = load(test_files, test_labels, test_idx)
    return ClassificationData(train, val, test, classes, name="imagefolder")


def _load_embedded(subset, val_size, test_subset, seed) -> ClassificationData:
    if not EMBEDDED_ASSET.is_file():
        raise KdlabError(f"the embedded CIFAR-10 asset {EMBEDDED_ASSET} is missing: reinstall kdlab, or rebuild it "
                         "with scripts/build_embedded_cifar10.py")
    with np.load(EMBEDDED_ASSET, allow_pickle=False) as archive:
        buffer = torch.from_numpy(archive["jpeg_bytes"].copy())
        offsets = archive["offsets"].tolist()
        labels = torch.from_numpy(archive["labels"].astype(np.int64))
        split = torch.from_numpy(archive["split"].astype(np.int64))
        classes = [c.decode() for c in archive["classes"].tolist()]
    train_pos = torch.nonzero(split == 0).flatten()
    test_pos = torch.nonzero(split == 1).flatten()
    train_idx, val_idx, test_idx = _plan_splits("embedded", labels[train_pos], labels[test_pos], len(classes),
                                                subset, val_size, test_subset, seed)

    def load(positions: torch.Tensor) -> ImageSet:
        pos = positions.tolist()
        blobs = [buffer[offsets[i]:offsets[i + 1]] for i in pos]
        return ImageSet(_decode_many(blobs, [f"embedded #{i}" for i in pos]), labels[positions])

    train = load(train_pos[train_idx])
    val = load(train_pos[val_idx]) if len(val_idx) else None
    test = load(test_pos[test_idx])
    return ClassificationData(train, val, test, classes, name="embedded")


_CIFAR = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": ("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz", "CIFAR100"),
}


def _load_cifar(dataset: str, root: str | None, download: bool, subset, val_size, test_subset,
                seed) -> ClassificationData:
    title, folder, archive, cls_name = _CIFAR[dataset]
    base = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    if not download and not (base / folder).is_dir():
        raise KdlabError(f"{title} not found under {base}: set data.download: true (needs internet) or data.root "
                         f"to a folder containing {folder}")
    import torchvision.datasets

    dataset_cls = getattr(torchvision.datasets, cls_name)
    splits = {}
    for train in (True, False):
        try:
            splits[train] = dataset_cls(root=str(base), train=train, download=download)
        except Exception as error:  # noqa: BLE001 - never let a torchvision traceback reach the user
            detail = " ".join(str(error).split())[:200]
            if download:
                raise KdlabError(f"could not download {title} into {base} ({type(error).__name__}: {detail}): "
                                 f"check the internet connection, or extract {archive} under {base} yourself "
                                 "and set data.download: false") from None
            raise KdlabError(f"{title} under {base / folder} is incomplete or corrupted ({detail}): delete that "
                             "folder and set data.download: true, or replace it with a complete copy") from None
    classes = list(splits[True].classes)

    def to_set(ds) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.int64)

    train_images, train_labels = to_set(splits[True])
    test_images, test_labels = to_set(splits[False])
    train_idx, val_idx, test_idx = _plan_splits(dataset, train_labels, test_labels, len(classes), subset,
                                                val_size, test_subset, seed)
    full_train = ImageSet(train_images, train_labels)
    val = full_train.select(val_idx) if len(val_idx) else None
    return ClassificationData(full_train.select(train_idx), val,
                              ImageSet(test_images, test_labels).select(test_idx), classes, name=dataset)


def load_classification_data(
    dataset: str,
    root: str | None = None,
    download: bool = False,
    subset: int | None = None,
    val_size: int = 0,
    test_subset: int | None = None,
    seed: int = 0,
) -> ClassificationData:
    """Load ``dataset`` into memory as uint8 tensors; see the module docstring for datasets and splits."""
    name = str(dataset).strip().lower()
    if name not in DATASETS:
        raise KdlabError(f"unknown dataset '{dataset}'{did_you_mean(name, DATASETS)}: valid datasets are {', '.join(DATASETS)}")
    _check_count("subset", subset, 1)
    _check_count("val_size", val_size, 0)
    _check_count("test_subset", test_subset, 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise KdlabError(f"data seed {seed!r} is invalid: use a non-negative integer")
    if name == "imagefolder":
        return _load_imagefolder(root, subset, val_size, test_subset, seed)
    if name == "embedded":
        return _load_embedded(subset, val_size, test_subset, seed)
    return _load_cifar(name, root, download, subset, val_size, test_subset, seed)


# --------------------------------------------------------------------------------------------- batches


def num_batches(data: ImageSet | int, batch_size: int, drop_last: bool = False) -> int:
    n = data if isinstance(data, int) else len(data)
    if batch_size < 1:
        raise KdlabError(f"batch size {batch_size} is invalid: use a positive integer")
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    generator: torch.Generator | None,
    shuffle: bool,
    augment: bool,
    drop_last: bool = False,
    device: torch.device | str | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[IndexedBatch]:
    """Yield ``(images float32 in [0, 1], labels int64)`` batches (:class:`~kdlab.runtime.sample_random.IndexedBatch`:
    they also carry ``indices``, each sample's position in ``data``).

    With ``shuffle`` the order is ``torch.randperm(len(data), generator=generator)`` drawn once at the start;
    with ``augment`` every batch gets :func:`random_crop_flip` from the same generator, so the whole epoch is a
    function of the generator's state -- or, when the generator is a :class:`~kdlab.runtime.sample_random.SampleGenerator`
    (``train.rng: sample``), :func:`sample_crop_flip`, a function of each sample's index alone.
    ``device``: uint8 batches are moved there before augmentation. A set already on the device
    (:func:`on_device`) is indexed there: the epoch's order is copied to it once. ``shard=(rank, world)``: batch
    ``b`` is still positions ``[b * batch_size, (b + 1) * batch_size)`` of the order, and this process takes the
    ``rank``-th of its ``world`` equal parts (multi-process training: ``batch_size`` is the global batch).
    """
    rank, world = shard
    if batch_size % world:
        raise KdlabError(f"data.batch_size {batch_size} does not split evenly over {world} processes: use a "
                         f"multiple of {world} (e.g. --set data.batch_size={batch_size // world * world or world})")
    local = batch_size // world
    total = num_batches(data, batch_size, drop_last)
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if data.images.device.type != "cpu":
        order = to_device(order, data.images.device)  # once per epoch, not per batch
    keyed = per_sample(generator)
    for b in range(total):
        start = min(n, b * batch_size + rank * local)
        idx = order[start:min(start + local, (b + 1) * batch_size, n)]
        images, labels = data.images[idx], data.labels[idx]
        if device is not None:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if not augment:
            images = to_float(images)
        elif keyed is not None:
            images = sample_crop_flip(images, keyed, idx)
        else:
            images = random_crop_flip(images, generator)
        yield IndexedBatch(images, labels, idx)


def on_device(data: ImageSet, device: torch.device | str) -> ImageSet:
    """``data`` held on ``device`` (uint8 images and labels copied once): batches are then cut, cropped, flipped
    and mixed there, with no per-batch host-to-device copy of images and no loader processes. Full CIFAR-10
    is 150 MB of uint8 on the GPU."""
    device = torch.device(device)
    if data.images.device == device and data.labels.device == device:
        return data
    return ImageSet(data.images.to(device), data.labels.to(device))


def test_selection(test_set, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of a fixed, seeded permutation (the same for every model)."""
    order = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(seed))[:n]
    return test_set.images[order].float().div(255), test_set.labels[order]


def load_data_spec(spec) -> ClassificationData:
    """The data a recipe's ``data:`` section (:class:`kdlab.config.sections.DataSpec`) names; the subset, validation
    and test selection are fixed by ``spec.split_seed``, not the run seed."""
    return load_classification_data(
        spec.dataset, root=spec.root, download=spec.download, subset=spec.subset,
        val_size=spec.val_size, test_subset=spec.test_subset, seed=spec.split_seed,
    )
