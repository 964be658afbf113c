#!/bin/bash
# The robust-distillation methods comparison on 2 CPU cores, steps 1-2 of recipes/methods_cifar10_cpu.yaml's header: tune each method's
# main weight on the validation split (3 values, 1 seed), then run every method at its chosen value, 3 seeds, on the
# test split. Resumable: rerunning reuses finished runs and resumes interrupted ones. Run from the repository root:
#   bash scripts/methods_comparison.sh            # -> results/ablations/methods_cifar10_cpu-methods.{csv,md,png}
# Step 3 (AutoAttack on each method's seed-0 student, then kdlab table ... --with-eval results/eval.csv) follows.
set -euo pipefail
export OMP_NUM_THREADS=1
R=recipes/methods_cifar10_cpu.yaml
V=(--set eval.split=val --set eval.n=500 --set train.select=last --threads 1)
I="inner: {steps: 3, step: 6.67/255}"
tune() { kdlab ablate "$R" "$@" "${V[@]}" --jobs 1; }
tune --grid method.acm.weight=1,10,100 --name methods_tune_mixacm     # trains the shared teacher first
# two streams, one core each
( tune --set 'method={name: kd}' --grid method.weight=0.09,0.9,9 --name methods_tune_kd
  tune --set 'method={name: at}' --grid method.weight=100,1000,10000 --name methods_tune_at
  tune --set "method={name: ard, $I}" --grid method.alpha=0.5,0.9,1.0 --name methods_tune_ard
  tune --set "method={name: adaad, $I}" --grid method.alpha=0.5,0.9,1.0 --name methods_tune_adaad ) &
( tune --set 'method={name: rrm}' --grid method.weight=0.1,1,10 --name methods_tune_rrm
  tune --set 'method={name: fitnet}' --grid method.weight=10,100,1000 --name methods_tune_fitnet || true  # 1000 diverges
  tune --set "method={name: rslad, $I}" --grid method.alpha=0.5,0.833333,1.0 --name methods_tune_rslad
  tune --set "method={name: iad, $I}" --set method.warmup_epochs=3 --grid method.alpha=0.5,0.9,1.0 \
       --name methods_tune_iad ) &
wait
# the value with the best validation PGD-20 accuracy per method (ties: the first listed)
FLAGS=$(python - <<'PY'
import glob
import pandas as pd
keys = {"mixacm": "acm.weight", "rrm": "weight", "kd": "weight", "fitnet": "weight", "at": "weight",
        "ard": "alpha", "rslad": "alpha", "iad": "alpha", "adaad": "alpha"}
for method, key in keys.items():
    (path,) = glob.glob(f"results/ablations/methods_tune_{method}-grid-*.csv")
    table = pd.read_csv(path)
    print(f"--method-set {method}.{key}={table.loc[table['pgd_acc'].idxmax(), 'setting'].split('=', 1)[1]}")
PY
)
echo "chosen on validation: $FLAGS"
# shellcheck disable=SC2086
kdlab ablate "$R" --methods mixacm,rrm,kd,fitnet,at,ard,rslad,iad,adaad,pgd-at --inner-steps 3 --inner-step 6.67/255 \
  --method-set iad.warmup_epochs=3 $FLAGS --seeds 0,1,2 --attack pgd --attack cw --jobs 2 --threads 1
