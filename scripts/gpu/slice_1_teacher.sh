#!/usr/bin/env bash
# Slice 1 of issue #25 on one bare GPU (H100/H200, 10-minute command): the fast robust teacher
# (recipes/cifar10_fast_at_teacher.yaml: FGSM-RS, PreAct ResNet-18, 15 epochs on all 50,000 images), its clean and
# PGD-20 accuracy on the 10,000 test images, standard AutoAttack + sanity checks on 1,000; then, with the time
# left, the first cells of the component ablation (slice 2's study); the state packed into $OUT/state.
# Expected wall time (docs/scale.md, "GPU slices"): set-up ~0.5 min, teacher ~0.5 min at the measured batch-512
# rate (1-1.5 min allowing 2-3x for batch 128), evaluation 0.1 min, AutoAttack + sanity ~2.5 min (estimate),
# then component cells until ~5.5 min before the command's limit.
# Device call (docs/scale.md): carry [".whl", ".gpu-data"], timeout_s 600:  bash scripts/gpu/slice_1_teacher.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
say "kdlab train $TEACHER"
kdlab train "$TEACHER" "${THREADS[@]}"
TEACHER_RUN=$($PY -c "import csv; print(list(csv.DictReader(open('results/runs.csv')))[-1]['run_dir'])")
say "kdlab eval $TEACHER_RUN --attack autoattack --n $AA_N ${SANITY[*]}"
kdlab eval "$TEACHER_RUN" --attack autoattack --n "$AA_N" --batch-size 500 "${SANITY[@]}" --out results/eval.csv
status=0
SLICE_RESERVE=${SLICE_RESERVE:-330} ablate mixacm_cifar10_fast --components || status=$?
autoattack
if compgen -G "results/ablations/*.csv" >/dev/null; then
    pack
else  # no ablation table yet: carry the teacher through the runs table, its weights included
    kdlab pack results/runs.csv results/eval.csv --weights --out "$OUT/state"
    kdlab table results/eval.csv > "$OUT/tables.md" 2>&1 || true
fi
say "slice 1 done (ablation exit $status: 0 finished, 3 more to do, >3 not started)"
