#!/usr/bin/env bash
# Slice 3 of issue #25 (repeat until finished): the block ablation at seed 0 -- ACM on PreAct ResNet-18's block 3,
# 4 or 5 alone and on all three (equal total weight), otherwise mixacm_cifar10_fast; AutoAttack per row as slice 2.
# Expected: 4 rows, one of them (all blocks) the components' mixacm row reused: 3 new rows x ~4.5 min -> 2 slices.
# Device call: as slice 2 (setup.sh first, carry [".whl", ".gpu-state"]).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
status=0
ablate mixacm_cifar10_fast --blocks "${SLICE_BLOCKS:-3,4,5}" || status=$?
autoattack
pack
say "blocks: ablation exit $status (0: finished, 3: more to do)"
