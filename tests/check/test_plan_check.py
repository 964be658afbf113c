"""The plan check: every mistake found without training is refused before any work, all of them at once.

Each CLI test asserts exit code 2, a one-line message per problem naming the key and the fix, and that nothing
was trained or written. Before the plan check, each of these was found only after data loading or after the
teacher had trained (the detection student's architecture, an ablation cell's, a block index one model lacks,
a detector resize below its FPN strides, a teacher checkpoint that does not fit), or never (an output folder
that cannot be written failed at the end of training).
"""

from pathlib import Path

import pytest

from kdlab.models.files import save_model
from kdlab.models.registry import build_classifier
from tests.helpers.failfast import assert_one_line_error, files_under, invoke, write_recipe

TINY = "data: {dataset: embedded, subset: 100, test_subset: 20, batch_size: 50}\ntrain: {epochs: 1}\neval: {n: 20}\n"
DETECTION = ("task: detection\ndata: {dataset: synthetic, image_size: 64, num_images: 8, num_test_images: 4, "
             "batch_size: 2}\ntrain: {epochs: 1}\n")
DETECTOR = "{arch: %s, backbone: resnet18, min_size: %d, max_size: %d, options: {fpn_channels: 32}}"


def teacher_and_student(folder: Path, student: str, teacher: str = "model: {arch: resnet_small, width: 4}",
                        data: str = TINY) -> Path:
    write_recipe(folder, teacher + "\n" + data, name="teacher.yaml")
    return write_recipe(folder, f"{student}\nteacher: {{recipe: teacher.yaml}}\n{data}", name="student.yaml")


def error_lines(result) -> list[str]:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = result.stderr.strip() if result.stderr else result.output.strip()
    lines = text.splitlines()
    assert all(line.startswith("error: ") for line in lines), text
    return lines


# ------------------------------------------------------------------------------------- architectures
def test_unknown_detection_student_architecture_is_refused_before_the_teacher_trains(tmp_path):
    student = teacher_and_student(tmp_path, "student: " + DETECTOR % ("fasterrcn", 64, 64),
                                  teacher="model: " + DETECTOR % ("fasterrcnn", 64, 64), data=DETECTION)
    assert_one_line_error(invoke("distill", student), "student.arch", "unknown detector arch 'fasterrcn'",
                          "did you mean 'fasterrcnn'", "choose one of fasterrcnn, retinanet")
    assert files_under(tmp_path / "out") == []


def test_unknown_architecture_in_the_teacher_recipe(tmp_path):
    student = teacher_and_student(tmp_path, "student: {arch: resnet_small, width: 4}",
                                  teacher="model: {arch: resnet_smal, width: 4}")
    assert_one_line_error(invoke("distill", student), "teacher.recipe", "teacher.yaml", "model.arch",
                          "unknown architecture 'resnet_smal'", "did you mean 'resnet_small'")
    assert files_under(tmp_path / "out") == []


def test_unknown_architecture_in_an_ablation_cell(tmp_path):
    student = teacher_and_student(tmp_path, "student: {arch: resnet_small, width: 4}")
    out = tmp_path / "out" / "ablations"
    result = invoke("ablate", student, "--grid", "student.arch=resnet_small,resnett", "--out", out)
    assert_one_line_error(result, "[cell arch=resnett, seed 0]", "student.arch", "unknown architecture 'resnett'",
                          "valid architectures")
    assert files_under(tmp_path / "out") == []


# ------------------------------------------------------------------------------------- methods
def test_a_block_the_teacher_lacks_is_refused(tmp_path):
    """A 4-stage student has block 5; the 3-stage teacher does not (blocks 1-4)."""
    student = teacher_and_student(tmp_path, "student: {arch: resnet_small, width: 4, stages: 4}\n"
                                            "method: {name: mixacm, acm: {blocks: [2, 5]}}")
    assert_one_line_error(invoke("distill", student), "method.acm.blocks (for the teacher)", "5",
                          "is not a block of the teacher", "has blocks 1 (net.stem)", "method.acm.teacher_blocks")
    assert files_under(tmp_path / "out") == []


def test_a_detection_method_on_a_classification_recipe(tmp_path):
    student = teacher_and_student(tmp_path, "student: {arch: resnet_small, width: 4}\nmethod: {name: skd}")
    assert_one_line_error(invoke("distill", student), "method 'skd' is for detection recipes, not classification",
                          "set method.name: mixacm")
    assert files_under(tmp_path / "out") == []


def test_a_detector_resize_below_its_coarsest_fpn_stride(tmp_path):
    """Faster R-CNN's coarsest FPN level (the pool level after P5) has stride 64: a 32 px image gives it no pixel."""
    recipe = write_recipe(tmp_path, "model: " + DETECTOR % ("fasterrcnn", 32, 32) + "\n" + DETECTION)
    assert_one_line_error(invoke("train", recipe), "model.min_size (32)", "stride of the coarsest FPN level ('pool')",
                          "at least 64")
    assert files_under(tmp_path / "out") == []


# ------------------------------------------------------------------------------------- checkpoints
def _checkpoint(path: Path, arch_options: dict, weights_width: int, classes: int) -> Path:
    model = build_classifier("resnet_small", classes, width=weights_width)
    save_model(path, model, task="classification", arch="resnet_small", options=arch_options, num_classes=classes)
    return path


def test_a_teacher_checkpoint_whose_weights_are_another_architecture(tmp_path):
    """The file says resnet_small width 8 but holds width-4 weights: refused before any data is loaded."""
    checkpoint = _checkpoint(tmp_path / "teacher.pt", {"width": 8}, weights_width=4, classes=10)
    student = write_recipe(tmp_path, f"student: {{arch: resnet_small, width: 4}}\nteacher: {{checkpoint: "
                                     f"{checkpoint}}}\n{TINY}")
    assert_one_line_error(invoke("distill", student), "teacher.checkpoint", "does not fit the model",
                          "wrong architecture or class count")
    assert files_under(tmp_path / "out") == []


def test_a_teacher_checkpoint_with_another_class_count(tmp_path):
    checkpoint = _checkpoint(tmp_path / "teacher100.pt", {"width": 4}, weights_width=4, classes=100)
    student = write_recipe(tmp_path, f"student: {{arch: resnet_small, width: 4}}\nteacher: {{checkpoint: "
                                     f"{checkpoint}}}\n{TINY}")
    assert_one_line_error(invoke("distill", student), "teacher.checkpoint", "predicts 100 classes",
                          "the data has 10", "use a checkpoint trained on the same dataset")
    assert files_under(tmp_path / "out") == []


def test_a_teacher_recipe_on_another_class_count(tmp_path):
    """A CIFAR-100 teacher recipe for a CIFAR-10 student: refused before the teacher would train (the data
    folder only has to exist: the check sizes CIFAR from its published split sizes, without reading it)."""
    (tmp_path / "data" / "cifar-100-python").mkdir(parents=True)
    student = teacher_and_student(tmp_path, "student: {arch: resnet_small, width: 4}")
    write_recipe(tmp_path, f"model: {{arch: resnet_small, width: 4}}\ndata: {{dataset: cifar100, root: "
                           f"{tmp_path / 'data'}}}\ntrain: {{epochs: 1}}", name="teacher.yaml")
    text = assert_one_line_error(invoke("distill", student), "teacher.recipe", "100 outputs", "needs 10",
                                 "same dataset")
    assert "cifar100" in text
    assert files_under(tmp_path / "out") == []


# ------------------------------------------------------------------------------------- paths
def test_an_output_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should go")
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + TINY)
    result = invoke("train", recipe, "--set", f"output.dir={blocker / 'runs'}")
    assert_one_line_error(result, "output.dir", f"because '{blocker}' is a file, not a folder",
                          "set output.dir to a path under a folder")
    assert files_under(tmp_path / "out") == [] and blocker.read_text().startswith("a file")


# /proc refuses new files even to root, for whom permission bits say "writable" everywhere: only trying tells
NO_WRITE = Path("/proc/kdlab-out")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_dir_that_cannot_be_written_is_refused_before_training(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + TINY)
    result = invoke("train", recipe, "--set", f"output.dir={NO_WRITE}")
    assert_one_line_error(result, f"output.dir: '{NO_WRITE}' is not writable",
                          "set output.dir to a folder path you can write")
    assert files_under(tmp_path / "out") == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_unwritable_output_table_says_so_and_not_folder(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + TINY)
    text = assert_one_line_error(invoke("check", recipe, "--set", f"output.table={NO_WRITE / 'runs.csv'}"),
                                 f"output.table: '{NO_WRITE / 'runs.csv'}' is not writable",
                                 "set output.table to a file path you can write")
    assert "folder" not in text, text
    assert files_under(tmp_path / "out") == []


def test_the_write_check_creates_and_leaves_nothing(tmp_path):
    from kdlab.check.plan import writable_problems

    table = tmp_path / "kept" / "runs.csv"
    table.parent.mkdir()
    table.write_text("a,b\n1,2\n")
    assert writable_problems(str(tmp_path / "new" / "deeper" / "runs"), "output.dir", folder=True) == []
    assert writable_problems(str(tmp_path / "new2" / "runs.csv"), "output.table", folder=False) == []
    assert writable_problems(str(table), "output.table", folder=False) == []
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["kept", "runs.csv"]
    assert table.read_text() == "a,b\n1,2\n"


def _probe(folder: str) -> str | None:
    from kdlab.results import write_problem

    return write_problem(Path(folder))


def test_write_checks_running_at_once_on_a_new_folder_all_pass(tmp_path):
    """Every torchrun rank checks its plan, so two processes probe the same missing output.dir at once: a probe
    that created the folder and removed it again made the other fail ('File exists', 'No such file or
    directory'; about one probe in four over these rounds did)."""
    import multiprocessing

    folders = [str(tmp_path / f"round{i}" / "runs") for i in range(40)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        answers = pool.map(_probe, [folder for folder in folders for _ in range(4)], chunksize=1)
    assert answers == [None] * len(answers)
    assert list(tmp_path.iterdir()) == []  # and nothing was left behind


def test_a_folder_where_the_table_should_be_is_called_a_folder(tmp_path):
    from kdlab.check.plan import writable_problems

    assert writable_problems(str(tmp_path), "output.table", folder=False) == [
        f"output.table: '{tmp_path}' is a folder, not a file: set output.table to a file path"]


def test_a_relative_teacher_recipe_works_from_another_directory(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    student = teacher_and_student(tmp_path / "recipes", "student: {arch: resnet_small, width: 4}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke("check", student, "--no-timing")
    assert result.exit_code == 0, result.output
    assert "teacher" in result.output and "2 runs: 0 finished (reused), 2 to train" in result.output
    assert files_under(elsewhere) == [] and files_under(tmp_path / "recipes" / "out") == []


# ------------------------------------------------------------------------------------- several at once
def test_several_problems_are_reported_together_one_per_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    student = teacher_and_student(tmp_path, "student: {arch: resnett, width: 4}",
                                  teacher="model: {arch: resnet_smal, width: 4}")
    result = invoke("distill", student, "--set", "eval.n=5000", "--set", f"output.table={blocker / 'runs.csv'}")
    lines = error_lines(result)
    assert len(lines) == 4, lines
    expected = ["eval.n (5000)", "output.table", "student.arch: unknown architecture 'resnett'",
                "model.arch: unknown architecture 'resnet_smal'"]
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, (fragment, lines)
    assert files_under(tmp_path / "out") == []


def test_several_schema_problems_are_all_listed(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\ntrain: {epochz: 3, lr: fast}\n"
                                    "eval: {attacks: [clean, pgdd]}")
    lines = error_lines(invoke("check", recipe))
    assert len(lines) == 3, lines
    assert any("unknown key 'epochz' in train (did you mean 'epochs'?)" in line for line in lines)
    assert any("train.lr" in line for line in lines)
    assert any("unknown attack 'pgdd' (did you mean 'pgd'?)" in line for line in lines)


# ------------------------------------------------------------------------------------- the plan
def test_check_reports_a_finished_teacher_where_the_run_put_it_and_estimates_the_rest(tmp_path):
    """Train the teacher for real (seconds), then `kdlab check` the student: the teacher is reused from the
    directory `kdlab train` wrote, the student will train, and the estimate says how it was made."""
    student = teacher_and_student(tmp_path, "student: {arch: resnet_small, width: 4}\n"
                                            "method: {acm: {blocks: [2, 3]}}")
    trained = invoke("train", tmp_path / "teacher.yaml", "--threads", "1")
    assert trained.exit_code == 0, trained.output
    (teacher_dir,) = [p for p in (tmp_path / "out" / "runs").iterdir() if p.is_dir()]
    assert (teacher_dir / "best.pt").is_file()
    before = files_under(tmp_path / "out")
    result = invoke("check", student, "--threads", "1")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "2 runs: 1 finished (reused), 1 to train" in output
    assert teacher_dir.name in output.replace("… ", "")
    assert "estimated time" in output and "timed training steps" in output
    assert files_under(tmp_path / "out") == before  # the check wrote nothing
