#!/usr/bin/env bash
# First call of a GPU session for slices 2-4: install the carried wheels and unpack CIFAR-10 into /tmp/kdlab-gpu,
# which stays while the machine is warm (30 s after a call): the next call, at once, carries only .gpu-state
# (64 MiB per call: the repository ~5.5 MiB + the data archive ~19 MiB + the wheels ~3 MiB + the teacher's state
# ~40 MiB do not fit in one). Device call: carry [".whl", ".gpu-data"], timeout_s 120:  bash scripts/gpu/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
say "set up in $HOME_DIR"
