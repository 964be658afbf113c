from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data import imagefolder
from kdlab.data.augment import crop_flip, random_crop_flip, to_float
from kdlab.data.classification import ImageSet, iterate_batches, num_batches
from kdlab.data.loaders import load_classification_data
from kdlab.data.splits import stratified_split
from kdlab.errors import KdlabError

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_CIFAR = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg"
needs_real_cifar = pytest.mark.skipif(
    not (REAL_CIFAR / "train").is_dir(),
    reason=f"real CIFAR-10 JPEG copy not found at {REAL_CIFAR} (../shared/data/cifar10-jpeg from the repo root)",
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- augment


def _pattern(batch: int = 1, size: int = 5) -> torch.Tensor:
    """Every pixel distinct and non-zero: value = 10*row + col + 1 (+100 per channel)."""
    rows = torch.arange(size).view(size, 1) * 10
    cols = torch.arange(size).view(1, size)
    img = torch.stack([rows + cols + 1 + 100 * c for c in range(3)]).to(torch.uint8)
    return img.unsqueeze(0).repeat(batch, 1, 1, 1)


def test_augment_shape_dtype_range_and_determinism():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=_gen(0))
    out = random_crop_flip(images, _gen(5))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.equal(out, random_crop_flip(images, _gen(5)))
    assert not torch.equal(out, random_crop_flip(images, _gen(6)))
    assert torch.equal(to_float(images), images.float() / 255)


def test_crop_flip_by_hand():
    img = _pattern()
    p = 1
    centre = crop_flip(img, torch.tensor([p]), torch.tensor([p]), torch.tensor([False]), padding=p)
    assert torch.equal(centre, img)
    # top=0, left=0: image moves down-right by one pixel, zero row and column enter at the top/left
    shifted = crop_flip(img, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), padding=p)
    assert (shifted[0, :, 0, :] == 0).all() and (shifted[0, :, :, 0] == 0).all()
    assert torch.equal(shifted[0, :, 1:, 1:], img[0, :, :-1, :-1])
    # top=2, left=2: moves up-left
    up_left = crop_flip(img, torch.tensor([2]), torch.tensor([2]), torch.tensor([False]), padding=p)
    assert torch.equal(up_left[0, :, :-1, :-1], img[0, :, 1:, 1:])
    assert (up_left[0, :, -1, :] == 0).all()
    flipped = crop_flip(img, torch.tensor([p]), torch.tensor([p]), torch.tensor([True]), padding=p)
    assert torch.equal(flipped, img.flip(-1))
    assert int(flipped[0, 0, 0, 0]) == 5  # row 0, last column: 10*0 + 4 + 1


def _all_candidates(img: torch.Tensor, padding: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(img, (padding,) * 4)
    h, w = img.shape[-2:]
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top:top + h, left:left + w]
            out += [crop, crop.flip(-1)]
    return out


def test_random_crop_flip_outputs_are_valid_crops_and_vary():
    base = _pattern(size=6)[0]
    images = base.unsqueeze(0).repeat(64, 1, 1, 1)
    out = (random_crop_flip(images, _gen(1), padding=2) * 255).round().to(torch.uint8)
    candidates = _all_candidates(base, 2)
    matches = [[i for i, c in enumerate(candidates) if torch.equal(o, c)] for o in out]
    assert all(len(m) == 1 for m in matches), "every output is exactly one crop (+flip) of the padded image"
    chosen = {m[0] for m in matches}
    assert len(chosen) > 10
    assert any(i % 2 for i in chosen) and any(i % 2 == 0 for i in chosen), "both flipped and unflipped occur"


def test_padding_zero_only_flips():
    images = _pattern(batch=32)
    out = (random_crop_flip(images, _gen(3), padding=0) * 255).round().to(torch.uint8)
    flipped = torch.tensor([torch.equal(o, images[0].flip(-1)) for o in out])
    same = torch.tensor([torch.equal(o, images[0]) for o in out])
    assert bool((flipped | same).all()) and flipped.any() and same.any()


# ------------------------------------------------------------------------------------------- splits


def test_stratified_split_is_stratified_seeded_and_disjoint():
    labels = torch.arange(10).repeat_interleave(50)  # 10 classes x 50
    train, val = stratified_split(labels, 10, subset=200, val_size=100, seed=0)
    assert len(train) == 200 and len(val) == 100
    assert torch.bincount(labels[train], minlength=10).tolist() == [20] * 10
    assert torch.bincount(labels[val], minlength=10).tolist() == [10] * 10
    assert not set(train.tolist()) & set(val.tolist())
    again = stratified_split(labels, 10, subset=200, val_size=100, seed=0)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    other = stratified_split(labels, 10, subset=200, val_size=100, seed=1)
    assert not torch.equal(other[0], train)
    # the subset does not depend on val_size, nor val on subset
    assert torch.equal(stratified_split(labels, 10, subset=200, val_size=0, seed=0)[0], train)
    assert torch.equal(stratified_split(labels, 10, subset=50, val_size=100, seed=0)[1], val)
    everything, _ = stratified_split(labels, 10, subset=None, val_size=100, seed=0)
    assert len(everything) == 400 and not set(everything.tolist()) & set(val.tolist())


def test_stratified_split_imbalanced_counts():
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    train, val = stratified_split(labels, 3, subset=10, val_size=10, seed=0)
    assert torch.bincount(labels[train], minlength=3).tolist() == [7, 2, 1]
    assert torch.bincount(labels[val], minlength=3).tolist() == [7, 2, 1]
    train, _ = stratified_split(labels, 3, subset=7, val_size=0, seed=0)
    assert len(train) == 7


# --------------------------------------------------------------------------------------- imagefolder


def _make_tree(root: Path, classes=("cat", "dog", "emu"), n_train=6, n_test=3, size=8) -> Path:
    """PNG images whose pixels encode (split, class, index): R = class, G = index, B = 1 (train) / 2 (test)."""
    from PIL import Image

    for split, n, tag in (("train", n_train, 1), ("test", n_test, 2)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.zeros((size, size, 3), dtype=np.uint8)
                pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10 * c, i, tag
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def _ids(images: ImageSet, split_tag: int) -> set[tuple[int, int]]:
    assert bool((images.images[:, 2] == split_tag).all())
    return {(int(img[0, 0, 0]) // 10, int(img[1, 0, 0])) for img in images.images}


def test_imagefolder_tiny_tree(tmp_path):
    root = _make_tree(tmp_path / "tree")
    data = load_classification_data("imagefolder", root=str(root))
    assert data.classes == ["cat", "dog", "emu"] and data.num_classes == 3
    assert len(data.train) == 18 and len(data.test) == 9 and data.val is None
    assert data.train.images.shape == (18, 3, 8, 8) and data.train.images.dtype == torch.uint8
    # labels agree with the pixels that encode the class
    assert torch.equal(data.train.labels, data.train.images[:, 0, 0, 0].long() // 10)
    assert torch.equal(data.test.labels, data.test.images[:, 0, 0, 0].long() // 10)


def test_imagefolder_subset_val_test_subset(tmp_path, monkeypatch):
    root = _make_tree(tmp_path / "tree")
    decoded = []
    original = imagefolder.read_files
    monkeypatch.setattr(imagefolder, "read_files", lambda paths: decoded.append(len(paths)) or original(paths))
    data = load_classification_data("imagefolder", root=str(root), subset=6, val_size=3, test_subset=3, seed=4)
    assert decoded == [6, 3, 3], "only the chosen files are decoded"
    assert torch.bincount(data.train.labels).tolist() == [2, 2, 2]
    assert torch.bincount(data.val.labels).tolist() == [1, 1, 1]
    assert torch.bincount(data.test.labels).tolist() == [1, 1, 1]
    train_ids, val_ids, test_ids = _ids(data.train, 1), _ids(data.val, 1), _ids(data.test, 2)
    assert not train_ids & val_ids, "subset and val are disjoint"
    assert len(train_ids) == 6 and len(val_ids) == 3 and len(test_ids) == 3
    # val comes from train/ (blue = 1), test from test/ (blue = 2): they can never overlap
    again = load_classification_data("imagefolder", root=str(root), subset=6, val_size=3, test_subset=3, seed=4)
    assert torch.equal(again.train.images, data.train.images)
    other = load_classification_data("imagefolder", root=str(root), subset=6, val_size=3, test_subset=3, seed=5)
    assert _ids(other.train, 1) != train_ids


def test_imagefolder_errors(tmp_path):
    with pytest.raises(KdlabError, match="needs data.root"):
        load_classification_data("imagefolder")
    with pytest.raises(KdlabError, match="does not exist"):
        load_classification_data("imagefolder", root=str(tmp_path / "nope"))
    root = _make_tree(tmp_path / "tree")
    with pytest.raises(KdlabError, match="subset"):
        load_classification_data("imagefolder", root=str(root), subset=16, val_size=3)
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    for d in (root / "test").iterdir():
        d.rmdir()
    (root / "test").rmdir()
    with pytest.raises(KdlabError, match="split 'test' not found"):
        load_classification_data("imagefolder", root=str(root))


def test_imagefolder_bad_file_and_mixed_sizes(tmp_path):
    from PIL import Image

    root = _make_tree(tmp_path / "tree")
    (root / "train" / "cat" / "zzz.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    with pytest.raises(KdlabError, match="cannot decode image .*zzz.jpg"):
        load_classification_data("imagefolder", root=str(root))
    (root / "train" / "cat" / "zzz.jpg").unlink()
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(root / "train" / "dog" / "big.png")
    with pytest.raises(KdlabError, match="different sizes"):
        load_classification_data("imagefolder", root=str(root))


# ------------------------------------------------------------------------------------- other datasets


def test_embedded_counts_and_balance():
    data = load_classification_data("embedded")
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck" and data.num_classes == 10
    assert data.train.images.shape == (5000, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert torch.bincount(data.train.labels).tolist() == [500] * 10
    assert torch.bincount(data.test.labels).tolist() == [100] * 10
    mean = data.train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.03), "real CIFAR-10 statistics"
    small = load_classification_data("embedded", subset=1000, val_size=500, test_subset=200, seed=3)
    assert torch.bincount(small.train.labels).tolist() == [100] * 10
    assert torch.bincount(small.val.labels).tolist() == [50] * 10
    assert torch.bincount(small.test.labels).tolist() == [20] * 10


@pytest.mark.parametrize(("dataset", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_files_give_kdlab_error(tmp_path, dataset, folder):
    with pytest.raises(KdlabError, match=f"not found under {tmp_path}.*data.download: true.*{folder}"):
        load_classification_data(dataset, root=str(tmp_path), download=False)
    (tmp_path / folder).mkdir()
    with pytest.raises(KdlabError, match="incomplete or corrupted"):
        load_classification_data(dataset, root=str(tmp_path), download=False)


class _FakeCIFAR10:
    def __init__(self, root, train, download):
        self.classes = [f"c{i}" for i in range(10)]
        n = 100 if train else 30
        rng = np.random.default_rng(0 if train else 1)
        self.data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)  # torchvision layout: N H W C
        self.targets = [i % 10 for i in range(n)]


def test_cifar10_through_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeCIFAR10)
    (tmp_path / "cifar-10-batches-py").mkdir()
    data = load_classification_data("cifar10", root=str(tmp_path), subset=40, val_size=20, test_subset=10)
    fake = _FakeCIFAR10(None, True, False)
    assert data.train.images.shape == (40, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert torch.bincount(data.train.labels).tolist() == [4] * 10
    assert torch.bincount(data.val.labels).tolist() == [2] * 10
    assert torch.bincount(data.test.labels).tolist() == [1] * 10
    first = int(torch.nonzero(data.train.labels == data.train.labels[0])[0])
    assert first == 0
    # pixels are transposed from H x W x C, not reshaped
    index = [i for i in range(100) if torch.equal(torch.from_numpy(fake.data[i]).permute(2, 0, 1),
                                                    data.train.images[0])]
    assert len(index) == 1 and fake.targets[index[0]] == int(data.train.labels[0])


def test_cifar_download_failure_is_friendly(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    class Offline(_FakeCIFAR10):
        def __init__(self, root, train, download):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    with pytest.raises(KdlabError, match="could not download CIFAR-100 .*URLError.*internet"):
        load_classification_data("cifar100", root=str(tmp_path), download=True)


def test_unknown_dataset_and_bad_sizes():
    with pytest.raises(KdlabError, match="did you mean 'cifar10'.*embedded"):
        load_classification_data("cifar-10")
    with pytest.raises(KdlabError, match="subset"):
        load_classification_data("embedded", subset=0)
    with pytest.raises(KdlabError, match="test_subset"):
        load_classification_data("embedded", test_subset=5000)


@pytest.mark.slow
@needs_real_cifar
def test_real_cifar10_subset():
    data = load_classification_data("imagefolder", root=str(REAL_CIFAR), subset=1000, val_size=500,
                                    test_subset=500, seed=0)
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert torch.bincount(data.train.labels).tolist() == [100] * 10
    assert torch.bincount(data.val.labels).tolist() == [50] * 10
    assert data.train.images.shape == (1000, 3, 32, 32)
    mean = data.train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.04)


# ------------------------------------------------------------------------------------------ batches


def test_iterate_batches_epoch_and_determinism():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).repeat(1, 3, 4, 4)
    data = ImageSet(images, torch.arange(10))
    assert num_batches(data, 4) == 3 and num_batches(data, 4, drop_last=True) == 2 and num_batches(10, 5) == 2
    plain = list(iterate_batches(data, 4, None, shuffle=False, augment=False))
    assert [len(y) for _, y in plain] == [4, 4, 2]
    assert torch.cat([y for _, y in plain]).tolist() == list(range(10))
    assert torch.equal(plain[0][0], images[:4].float() / 255)
    shuffled = list(iterate_batches(data, 4, _gen(0), shuffle=True, augment=False))
    labels = torch.cat([y for _, y in shuffled])
    assert sorted(labels.tolist()) == list(range(10)) and labels.tolist() != list(range(10))
    for x, y in shuffled:  # images stay paired with their labels
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), y)
    dropped = list(iterate_batches(data, 4, _gen(0), shuffle=True, augment=True, drop_last=True))
    assert len(dropped) == 2
    again = list(iterate_batches(data, 4, _gen(0), shuffle=True, augment=True, drop_last=True))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(dropped, again))
    assert all(x.dtype == torch.float32 and float(x.max()) <= 1 for x, _ in dropped)
