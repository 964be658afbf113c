"""scripts/cpu_studies.sh, issue #24's two study queues, with a stand-in for kdlab that records what it was asked
to run: the order of each queue, the MixACM studies held back until MixACM's acm.weight is pinned, a study another
queue holds skipped, queue b waiting for the shared teacher before a CIFAR-10 study, the teacher kept between
sessions (KDLAB_KEEP): the shared CIFAR-10 teacher and the detection teachers alike, and the one-queue mode (`both`:
two workers per study, named studies only)."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "cpu_studies.sh"
PIN = "acm.weight: chosen by recipes/studies/methods_cpu.yaml"


def checkout(tmp_path: Path, pinned: bool) -> Path:
    """The script and the one recipe it reads, in a folder of their own (the script runs from the checkout root)."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "recipes").mkdir()
    shutil.copy(SCRIPT, root / "scripts" / SCRIPT.name)
    text = (REPO / "recipes" / "mixacm_cifar10_cpu.yaml").read_text()
    text = "".join(line for line in text.splitlines(keepends=True) if PIN not in line)  # the committed recipe is pinned
    (root / "recipes" / "mixacm_cifar10_cpu.yaml").write_text(text + (f"# {PIN}\n" if pinned else ""))
    return root


def fake_kdlab(tmp_path: Path) -> Path:
    """Appends its arguments to calls.txt; ``ablate`` of a CIFAR-10 study trains the shared teacher (a summary.json),
    of a BCCD study that study's detection teacher."""
    fake = tmp_path / "kdlab"
    fake.write_text('#!/bin/bash\necho "$2" >> "$CALLS"\necho "$4" >> "$CALLS.jobs"\n'
                    'case "$2" in *skd_bccd*) t=results/runs/skd-bccd-teacher-k ;; *) t=results/runs/mixacm-cpu-teacher-k ;; '
                    'esac\nmkdir -p $t && touch $t/summary.json\n')
    fake.chmod(0o755)
    return fake


def run(root: Path, queue: str, tmp_path: Path, *studies: str, **env: str) -> tuple[list[str], str]:
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    (tmp_path / "calls.txt.jobs").unlink(missing_ok=True)
    result = subprocess.run(["bash", str(root / "scripts" / SCRIPT.name), queue, *studies], capture_output=True,
                            text=True, check=False, timeout=60,
                            env={**os.environ, "KDLAB": str(fake_kdlab(tmp_path)), "CALLS": str(calls),
                                 "KDLAB_LOCKS": str(tmp_path / "locks"), **env})
    assert result.returncode == 0, result.stderr
    studies = [Path(line).stem for line in calls.read_text().split()] if calls.exists() else []
    return studies, result.stdout


def test_queue_a_holds_the_mixacm_studies_back_until_the_weight_is_pinned(tmp_path):
    studies, output = run(checkout(tmp_path, pinned=False), "a", tmp_path)
    assert studies == ["teacher_headroom_cpu", "methods_cpu", "skd_bccd_retinanet_cpu", "skd_bccd_cpu",
                       "skd_bccd_frcnn_cpu"]
    assert "mixacm_cpu_components: skipped until MixACM's acm.weight is pinned" in output


def test_queue_b_waits_for_the_teacher_runs_the_pinned_mixacm_studies_and_skips_what_the_other_queue_holds(
        tmp_path):
    import time

    root = checkout(tmp_path, pinned=True)
    (tmp_path / "locks").mkdir()
    holder = subprocess.Popen(["flock", str(tmp_path / "locks" / "methods_cpu.lock"), "sleep", "60"])
    calls = tmp_path / "calls.txt"
    queue = subprocess.Popen(["bash", str(root / "scripts" / SCRIPT.name), "b"], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "KDLAB": str(fake_kdlab(tmp_path)), "CALLS": str(calls),
                                  "KDLAB_LOCKS": str(tmp_path / "locks"), "KDLAB_POLL": "0.2"})
    try:
        time.sleep(3)
        assert calls.read_text().split() == ["recipes/studies/skd_bccd_retinanet_cpu.yaml"]  # waiting for the teacher
        teacher = root / "results" / "runs" / "mixacm-cpu-teacher-k"
        teacher.mkdir(parents=True)
        (teacher / "summary.json").touch()  # queue a has trained it
        output, _ = queue.communicate(timeout=60)
    finally:
        holder.kill()
        queue.kill()
    assert queue.returncode == 0
    assert [Path(line).stem for line in calls.read_text().split()] == [
        "skd_bccd_retinanet_cpu", "mixacm_cpu_components", "mixacm_cpu_blocks", "skd_bccd_cpu", "skd_bccd_frcnn_cpu",
        "teacher_headroom_cpu"]
    assert "methods_cpu: taken by the other queue, skipped" in output


def test_the_teachers_are_kept_between_sessions_and_restored(tmp_path):
    keep = tmp_path / "keep"
    root = checkout(tmp_path, pinned=False)
    unfinished = root / "results" / "runs" / "other-teacher-k"
    unfinished.mkdir(parents=True)  # no summary.json: still training, not kept
    run(root, "a", tmp_path, KDLAB_KEEP=str(keep))
    assert sorted(p.name for p in (keep / "runs").iterdir()) == ["mixacm-cpu-teacher-k", "skd-bccd-teacher-k"]
    fresh = checkout(tmp_path / "next", pinned=False)
    _, output = run(fresh, "b", tmp_path, KDLAB_KEEP=str(keep))
    assert output.count("teacher restored from") == 2
    for name in ("mixacm-cpu-teacher-k", "skd-bccd-teacher-k"):
        assert (fresh / "results" / "runs" / name / "summary.json").is_file()


def test_queue_both_runs_queue_as_order_with_two_workers_per_study(tmp_path):
    studies, _ = run(checkout(tmp_path, pinned=True), "both", tmp_path)
    assert studies == ["teacher_headroom_cpu", "methods_cpu", "mixacm_cpu_components", "mixacm_cpu_blocks",
                       "skd_bccd_retinanet_cpu", "skd_bccd_cpu", "skd_bccd_frcnn_cpu"]
    assert set((tmp_path / "calls.txt.jobs").read_text().split()) == {"2"}
    studies, _ = run(checkout(tmp_path / "one", pinned=True), "a", tmp_path)
    assert set((tmp_path / "calls.txt.jobs").read_text().split()) == {"1"}


def test_named_studies_run_alone_in_the_queues_order_and_an_unknown_name_is_refused(tmp_path):
    studies, _ = run(checkout(tmp_path, pinned=True), "both", tmp_path, "skd_bccd_frcnn_cpu", "skd_bccd_cpu",
                     "methods_cpu")
    assert studies == ["methods_cpu", "skd_bccd_cpu", "skd_bccd_frcnn_cpu"]
    result = subprocess.run(["bash", str(SCRIPT), "both", "skd_bccd"], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2 and "unknown study skd_bccd; the studies are: teacher_headroom_cpu" in result.stderr


def test_an_unknown_queue_is_refused():
    result = subprocess.run(["bash", str(SCRIPT), "c"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and "queue must be a, b or both, not c" in result.stderr
