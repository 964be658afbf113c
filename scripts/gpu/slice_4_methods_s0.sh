#!/usr/bin/env bash
# Slice 4 of issue #25 (repeat until finished): the robust-KD comparison at seed 0 at each method's kdlab defaults
# (no tuning), the same student, teacher, epochs and evaluation: MixACM, KD, ARD, RSLAD, IAD, AdaAD, PGD-AT.
# Expected: MixACM and KD ~2 min each (MixACM's row reused from slice 2); ARD, RSLAD, IAD, AdaAD and PGD-AT attack
# the student in every step (10 inner PGD steps: ~11 passes an image, 5,093 img/s measured for PGD-10 AT at batch
# 512 -> ~5 min each at 30 epochs, 10-15 min at batch 128), + ~2.5 min AutoAttack each: ~8 slices.
# Device call: as slice 2 (setup.sh first, carry [".whl", ".gpu-state"]).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
status=0
ablate mixacm_cifar10_fast --methods "${SLICE_METHODS:-mixacm,kd,ard,rslad,iad,adaad,pgd-at}" || status=$?
autoattack
pack
say "methods: ablation exit $status (0: finished, 3: more to do)"
