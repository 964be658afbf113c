#!/usr/bin/env bash
# Here (a machine with PyPI and ../shared/data): what a bare GPU machine needs beside the repository, in two
# git-ignored folders that the device tool's `carry` sends along:
#   .gpu-data/cifar10-jpeg.tar.gz   the 60,000 CIFAR-10 JPEGs (55 MB in 60,000 files -> ~19 MiB gzip, ~2 s)
#   .whl/                           the wheels kdlab needs that the GPU image lacks (its package list:
#                                   /work/.library/device/KINDS.md): pydantic + pydantic-core, annotated-types,
#                                   typing-inspection, typing-extensions, torchattacks (~2.8 MiB, Python 3.12)
# Usage: bash scripts/gpu/pack_inputs.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DATA=${1:-$REPO/../shared/data}
mkdir -p "$REPO/.gpu-data"
tar -C "$DATA" -czf "$REPO/.gpu-data/cifar10-jpeg.tar.gz" cifar10-jpeg
PY=${PYTHON:-python3}
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$REPO/.whl" pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing_extensions==4.16.0 torchattacks==3.5.1
du -sh "$REPO/.gpu-data" "$REPO/.whl"
