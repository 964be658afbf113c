#!/usr/bin/env bash
# Slice 2 of issue #25 (run it again until it says "finished"): the MixACM component ablation at seed 0
# (student-ce, kd-only, acm, acm+kd, acm+mixup, mixacm; PreAct ResNet-18 student of mixacm_cifar10_gpu.yaml, 30
# epochs, with the fast teacher of slice 1), clean/PGD-20 on 10,000 and AutoAttack + sanity on 1,000 per row,
# continued from the packed state of the previous slice ($REPO/.gpu-state).
# Expected wall time (docs/scale.md): ~2 min training per row at the measured batch-512 MixACM rate allowing 2-3x
# for batch 128, + ~2.5 min AutoAttack per row (estimate): ~2 rows per slice, so slices 2a-2c for the 6 rows.
# Device call: carry [".whl", ".gpu-state"] after scripts/gpu/setup.sh in the same warm session (the data
# archive and the teacher's state together are over 64 MiB), timeout_s 600: bash scripts/gpu/slice_2_components_s0.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
status=0
ablate mixacm_cifar10_fast --components || status=$?
autoattack
pack
say "components: ablation exit $status (0: finished, 3: more to do)"
