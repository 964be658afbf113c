#!/usr/bin/env bash
# Issue #24's declared CPU studies, continued on any checkout: two queues, one core each. Start both first thing in
# a session, from the repository root (a detached worktree keeps edits to main away from the running code):
#   bash scripts/cpu_studies.sh a > a.log 2>&1 &
#   bash scripts/cpu_studies.sh b > b.log 2>&1 &
# Each study runs as `kdlab ablate recipes/studies/NAME.yaml --jobs 1 --threads 1`, which continues from its
# committed table (complete rows are not retrained; docs/ablations.md, "Continuing a study"). Commit
# results/ablations/, results/eval.csv, results/runs.csv and results/diffs/ as cells finish.
#
# Queue a takes the CIFAR-10 studies that share one teacher (recipes/mixacm_cifar10_cpu_teacher.yaml, ~75 min on
# one core, retrained on a fresh checkout and checked against the tables' teacher_sha256): the short headroom study,
# then methods_cpu (its tuning, then its final runs). Queue b takes the RetinaNet BCCD study (its own teacher), then
# the MixACM components and blocks studies, then the Faster R-CNN BCCD study. Each then takes what the other left.
# Queue `both` takes queue a's order alone with two workers per study (`--jobs 2`, the studies' declared command):
# start it instead of a and b once one study is left, so its runs use both cores. Study names after the queue
# (`cpu_studies.sh both skd_bccd_cpu`) run only those, in the queue's order: a complete study replays its finished
# runs from their directories (about 10 minutes of both cores for methods_cpu), which a session with one study left
# need not pay.
# A study is run by one queue at a time (flock; the other queue skips it), and queue b starts a CIFAR-10 study only
# once the shared teacher has finished training, so the two never train it at once.
# The MixACM components and blocks studies use recipes/mixacm_cifar10_cpu.yaml's acm.weight, which is the value
# methods_cpu's tuning chooses for MixACM (the same recipe): they are skipped until that recipe says so (a line
# "acm.weight: chosen by recipes/studies/methods_cpu.yaml", written with the value once the tuning has chosen it).
# The Faster R-CNN study is declared twice with one declaration (skd_bccd_frcnn_cpu.yaml's header says why): CPU
# training is reproducible only on one processor type, so skd_bccd_cpu continues where the teacher retrains as on
# its AMD EPYC rows, skd_bccd_frcnn_cpu as on its Intel Xeon rows; the other is refused in one line once the
# teacher has trained (exit 2) and the queue goes on: `cpu_studies.sh both skd_bccd_cpu skd_bccd_frcnn_cpu`.
#
# KDLAB_KEEP (optional): a folder outside the checkout where the teachers' run directories (results/runs/*-teacher-*:
# the shared CIFAR-10 teacher, ~1 h on one core, and the BCCD detectors' teachers, ~17 min each) are kept between
# sessions on the same machine; they are copied in before the first study and saved after each study. The tables'
# teacher_sha256 check still decides whether a kept teacher may be used. KDLAB (the kdlab command), KDLAB_LOCKS
# (the lock folder) and KDLAB_POLL (seconds between looks for the teacher) are for tests.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's kdlab, whichever one the venv installed
QUEUE=${1:?usage: cpu_studies.sh a|b|both [STUDY...]}
shift
KDLAB=${KDLAB:-kdlab}
LOCKS=${KDLAB_LOCKS:-/tmp/kdlab-study-locks}
mkdir -p "$LOCKS"

CIFAR=(teacher_headroom_cpu methods_cpu mixacm_cpu_components mixacm_cpu_blocks)
TEACHER_GLOB="results/runs/mixacm-cpu-teacher-*"
KEPT_GLOB="results/runs/*-teacher-*"

case $QUEUE in
    a|both) ORDER=(teacher_headroom_cpu methods_cpu mixacm_cpu_components mixacm_cpu_blocks skd_bccd_retinanet_cpu skd_bccd_cpu
                 skd_bccd_frcnn_cpu) ;;
    b) ORDER=(skd_bccd_retinanet_cpu mixacm_cpu_components mixacm_cpu_blocks skd_bccd_cpu skd_bccd_frcnn_cpu methods_cpu
               teacher_headroom_cpu) ;;
    *) echo "cpu_studies.sh: queue must be a, b or both, not $QUEUE" >&2; exit 2 ;;
esac
JOBS=1
[ "$QUEUE" = both ] && JOBS=2
if [ $# -gt 0 ]; then
    for study in "$@"; do
        [[ " ${ORDER[*]} " == *" $study "* ]] || { echo "cpu_studies.sh: unknown study $study; the studies are: ${ORDER[*]}" >&2; exit 2; }
    done
    KEEP=()
    for study in "${ORDER[@]}"; do [[ " $* " == *" $study "* ]] && KEEP+=("$study"); done
    ORDER=("${KEEP[@]}")
fi

teacher_trained() { compgen -G "$TEACHER_GLOB/summary.json" > /dev/null; }

restore_teachers() {
    [ -n "${KDLAB_KEEP:-}" ] && [ -d "$KDLAB_KEEP/runs" ] || return 0
    local kept
    for kept in "$KDLAB_KEEP"/runs/*-teacher-*; do
        [ -f "$kept/summary.json" ] && [ ! -e "results/runs/$(basename "$kept")" ] || continue
        mkdir -p results/runs && cp -r "$kept" results/runs/ && echo "teacher restored from $kept"
    done
}

keep_teachers() {
    [ -n "${KDLAB_KEEP:-}" ] || return 0
    local run
    for run in $KEPT_GLOB; do
        [ -f "$run/summary.json" ] || continue  # finished teachers only
        mkdir -p "$KDLAB_KEEP/runs" && cp -r "$run" "$KDLAB_KEEP/runs/" 2>/dev/null || true
    done
}

is_cifar() { local s; for s in "${CIFAR[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

weight_pinned() { grep -q "acm.weight: chosen by recipes/studies/methods_cpu.yaml" recipes/mixacm_cifar10_cpu.yaml; }

restore_teachers
for study in "${ORDER[@]}"; do
    if { [ "$study" = mixacm_cpu_components ] || [ "$study" = mixacm_cpu_blocks ]; } && ! weight_pinned; then
        echo "$(date -u +%FT%TZ) $study: skipped until MixACM's acm.weight is pinned from methods_cpu's tuning"
        continue
    fi
    if [ "$QUEUE" = b ] && is_cifar "$study"; then
        until teacher_trained; do sleep "${KDLAB_POLL:-60}"; done
    fi
    (
        flock -n 9 || { echo "$(date -u +%FT%TZ) $study: taken by the other queue, skipped"; exit 0; }
        echo "$(date -u +%FT%TZ) $study: start"
        "$KDLAB" ablate "recipes/studies/$study.yaml" --jobs "$JOBS" --threads 1
        status=$?  # before the date's command substitution resets $?
        echo "$(date -u +%FT%TZ) $study: exit $status"
    ) 9> "$LOCKS/$study.lock"
    keep_teachers
done
