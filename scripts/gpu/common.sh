# Sourced by every scripts/gpu/slice_*.sh: set-up on a bare GPU machine, the study folder, the helpers.
#
# Layout (SLICE_HOME, default /tmp/kdlab-gpu, survives between two calls while the machine stays warm):
#   site/                     the carried wheels (.whl/: pydantic, torchattacks, ...) installed with --target
#   shared/data/cifar10-jpeg  CIFAR-10 unpacked from .gpu-data/cifar10-jpeg.tar.gz (scripts/gpu/pack_inputs.sh)
#   work/recipes/             the study's recipes (scripts/gpu/prepare_recipes.py), which name the data as
#                             ../../shared/data/cifar10-jpeg like the shipped ones
#   work/results/             the runs, tables and eval rows; kdlab commands run in work/ (relative paths, so
#                             kdlab pack / unpack move them between machines)
# Inputs: .gpu-state/ (the previous slice's kdlab pack, if any), $OUT (the device tool's output folder).
# SLICE_TINY=1: the same steps on the CPU with tiny settings (tests/scripts/test_gpu_slices.py).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${OUT:?OUT must name the folder for the files of the slice (the device tool sets it)}"
TINY=${SLICE_TINY:-0}
HOME_DIR=${SLICE_HOME:-/tmp/kdlab-gpu}
WORK=$HOME_DIR/work
STATE_IN=${SLICE_STATE:-$REPO/.gpu-state}
DATA_ARCHIVE=${SLICE_DATA:-$REPO/.gpu-data/cifar10-jpeg.tar.gz}
PY=${PYTHON:-python3}
COMMAND_SECONDS=${SLICE_SECONDS:-570}   # the device tool's 600 s per command, less a margin for the transfers
AA_N=${SLICE_AA_N:-1000}
SANITY=(--sanity)                       # the sanity checks beside AutoAttack (SLICE_SANITY=0: without)
[ "${SLICE_SANITY:-1}" = 0 ] && SANITY=()
AA_SECONDS=${SLICE_AA_SECONDS:-150}     # AutoAttack + sanity checks on AA_N images of one PreAct ResNet-18: an
                                        # estimate (docs/scale.md), not a measurement; the loop stops before it
STARTED=$(date +%s)
mkdir -p "$OUT" "$WORK"
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1

elapsed() { echo $(( $(date +%s) - STARTED )); }
left() { echo $(( COMMAND_SECONDS - $(elapsed) )); }
say() { echo "[slice $(elapsed)s] $*"; }

setup() {
    if [ "$TINY" != 1 ] && [ -d "$REPO/.whl" ] && [ ! -f "$HOME_DIR/site/.done" ]; then
        say "installing the carried wheels into $HOME_DIR/site"
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$HOME_DIR/site" "$REPO"/.whl/*.whl
        touch "$HOME_DIR/site/.done"
    fi
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    [ -d "$HOME_DIR/site" ] && export PYTHONPATH="$PYTHONPATH:$HOME_DIR/site"
    export PYTHONUNBUFFERED=1
    if [ ! -d "$HOME_DIR/shared/data/cifar10-jpeg" ]; then
        [ -f "$DATA_ARCHIVE" ] || { echo "error: $DATA_ARCHIVE not found and CIFAR-10 not unpacked in $HOME_DIR: carry .gpu-data (bash scripts/gpu/pack_inputs.sh), or run scripts/gpu/setup.sh in the same warm session first"; exit 2; }
        say "unpacking $(basename "$DATA_ARCHIVE")"
        mkdir -p "$HOME_DIR/shared/data"
        tar -xzf "$DATA_ARCHIVE" -C "$HOME_DIR/shared/data"
    fi
    $PY "$REPO/scripts/gpu/prepare_recipes.py" "$REPO/recipes" "$WORK/recipes" --tiny "$TINY"
    cd "$WORK"
    if [ -f "$STATE_IN/manifest.json" ]; then
        say "unpacking the previous slice's state from $STATE_IN"
        kdlab unpack "$STATE_IN"
    fi
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
}

kdlab() { $PY -m kdlab "$@"; }

# The study's commands. Tiny: the same flags; the recipes themselves are shrunk (prepare_recipes.py).
STUDENT=recipes/mixacm_cifar10_fast.yaml
TEACHER=recipes/cifar10_fast_at_teacher.yaml
THREADS=()
[ "$TINY" = 1 ] && THREADS=(--threads 1)

# ablate NAME FLAGS...: the ablation, stopped by --time-limit so that AutoAttack and the pack still fit
ablate() {
    local name=$1; shift
    local budget=$(( $(left) - ${SLICE_RESERVE:-240} ))
    if [ "$budget" -lt "${SLICE_MIN_ABLATE:-60}" ]; then say "no time left for $name (${budget}s)"; return 3; fi
    say "kdlab ablate $STUDENT $* --name $name --time-limit ${budget}s"
    local status=0
    kdlab ablate "$STUDENT" "$@" --name "$name" --time-limit "${budget}s" "${THREADS[@]}" || status=$?
    [ "$status" = 0 ] || [ "$status" = 3 ] || exit "$status"
    return "$status"
}

# autoattack: AutoAttack (+ sanity checks) on AA_N test images of every run in the tables whose weights are on
# this machine and that has no autoattack row yet; the student weights do not travel, so this runs in the slice
# that trained them. Then the tables get the autoattack column (kdlab table --with-eval).
autoattack() {
    local run
    for run in $($PY "$REPO/scripts/gpu/pending_autoattack.py" results/eval.csv results/ablations/*.csv); do
        if [ "$(left)" -lt "$AA_SECONDS" ]; then say "no time left for AutoAttack of $run (left $(left)s)"; continue; fi
        say "kdlab eval $run --attack autoattack --n $AA_N ${SANITY[*]}"
        kdlab eval "$run" --attack autoattack --n "$AA_N" --batch-size 500 "${SANITY[@]}" --out results/eval.csv
    done
    local table
    for table in results/ablations/*.csv; do
        [ -f "$table" ] && { kdlab table "$table" --with-eval results/eval.csv >/dev/null 2>&1 || say "no AutoAttack rows for $table yet"; }
    done
    return 0
}

# pack: the state for the next slice into $OUT/state (<= 8 files of 16 MiB), the tables as Markdown beside it
pack() {
    local tables=(results/ablations/*.csv)
    [ -f results/eval.csv ] && tables+=(results/eval.csv)
    kdlab pack "${tables[@]}" --out "$OUT/state"
    { for table in results/ablations/*.md; do echo "## $table"; cat "$table"; echo; done
      [ -f results/eval.csv ] && { echo "## results/eval.csv"; kdlab table results/eval.csv; }; } > "$OUT/tables.md" 2>&1 || true
    say "packed into $OUT/state ($(du -sh "$OUT/state" | cut -f1)); $(elapsed)s in all"
}
