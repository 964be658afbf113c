"""RobustBench zoo checkpoints, offline: RobustBench's own forward as the reference, teachers, taps, eval."""

import csv
import hashlib
from pathlib import Path

import pytest
import torch

from kdlab.errors import KdlabError
from kdlab.models.taps import FeatureTaps
from kdlab.models.zoo import load_zoo_model, zoo_network
from tests.helpers.failfast import assert_one_line_error, invoke
from tests.helpers.zoo import save_zoo_checkpoint, seeded_images, seeded_weights

REFERENCE = torch.load(Path(__file__).resolve().parents[1] / "fixtures" / "robustbench_reference.pt")
NAME = "Andriushchenko2020Understanding"  # PreActResNet-18, weights under 'last', no normalisation


@pytest.mark.parametrize("arch", ["wrn-10-2", "preact_resnet18"])
def test_zoo_weights_give_robustbench_logits(arch):
    net = zoo_network(arch, seeded_weights(REFERENCE[arch]["shapes"])).eval()
    with torch.no_grad():
        logits = net(seeded_images())
    torch.testing.assert_close(logits, REFERENCE[arch]["logits"], atol=1e-5, rtol=1e-5)


def zoo_file(model_dir: Path, seed: int = 0) -> Path:
    return save_zoo_checkpoint(model_dir, NAME, seeded_weights(REFERENCE["preact_resnet18"]["shapes"], seed),
                               wrap="last")


def test_a_file_in_the_zoo_layout_loads_with_kdlab_block_numbers(tmp_path):
    path = zoo_file(tmp_path)
    assert path == tmp_path / "cifar10" / "Linf" / f"{NAME}.pt"
    model, found = load_zoo_model(NAME, model_dir=tmp_path)
    assert found == path
    with torch.no_grad():  # images in [0, 1], no normalisation: RobustBench's logits
        torch.testing.assert_close(model(seeded_images()), REFERENCE["preact_resnet18"]["logits"],
                                   atol=1e-5, rtol=1e-5)
    assert [(b.index, b.path) for b in model.blocks()] == [
        (1, "net.stem"), (2, "net.stage1"), (3, "net.stage2"), (4, "net.stage3"), (5, "net.stage4")]
    with FeatureTaps(model, [2, 3, 4, 5]) as taps, torch.no_grad():
        model(seeded_images(2))
    # PreActResNet-18 stage widths and resolutions on 32x32 images (He et al. 2016, RobustBench resnet.py).
    assert [tuple(taps.features[k].shape[1:]) for k in (2, 3, 4, 5)] == [
        (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


def test_unknown_names_and_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(KdlabError, match="did you mean 'Wong2020Fast'"):
        load_zoo_model("Wong2020Fst", model_dir=tmp_path)
    with pytest.raises(KdlabError, match="Gowal2021"):
        load_zoo_model("Gowal2021Improving_28_10_ddpm_100m", model_dir=tmp_path)
    where = tmp_path / "cifar10" / "Linf" / f"{NAME}.pt"
    assert_one_line_error(invoke("eval", f"robustbench:{NAME}", "--model-dir", tmp_path),
                          f"{where} not found", "kdlab never downloads", f"place {NAME}.pt")


def test_inspect_shows_the_zoo_architecture_blocks():
    result = invoke("inspect", "robustbench:Chen2021LTD_WRN34_20")
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if line.count("│") == 5]
    # WRN-34-20: stem of 16 channels, stages of 16k, 32k, 64k = 320, 640, 1280 channels.
    assert [int(r[4]) for r in rows] == [16, 320, 640, 1280]


def recipe(tmp_path: Path, model_dir: Path) -> Path:
    path = tmp_path / "zoo.yaml"
    path.write_text(f"""
name: zoo
data: {{dataset: embedded, subset: 100, val_size: 20, batch_size: 16}}
teacher: {{robustbench: {NAME}, model_dir: {model_dir.name}}}
student: {{arch: resnet_small, width: 8}}
method: {{name: mixacm, acm: {{weight: 1.0, blocks: [2, 3, 4]}}}}
train: {{epochs: 1, max_batches_per_epoch: 2}}
eval: {{n: 16, attacks: [pgd], steps: 2}}
output: {{dir: {tmp_path / 'runs'}, table: {tmp_path / 'runs.csv'}}}
""")
    return path


@pytest.mark.slow
def test_distil_from_a_zoo_teacher_and_evaluate_it(tmp_path):
    model_dir = tmp_path / "zoo-models"
    missing = invoke("distill", recipe(tmp_path, model_dir), "--threads", "1")
    assert_one_line_error(missing, "teacher.robustbench", str(model_dir / "cifar10" / "Linf" / f"{NAME}.pt"))
    path = zoo_file(model_dir)
    result = invoke("distill", recipe(tmp_path, model_dir), "--threads", "1")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "runs.csv") as table:
        (row,) = list(csv.DictReader(table))
    assert row["teacher"] == f"robustbench:{NAME}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    import json

    summary = json.loads((Path(row["run_dir"]) / "run.json").read_text())
    assert summary["teacher_identity"].startswith(f"robustbench:{NAME}@") and \
        digest.startswith(summary["teacher_identity"].split("@")[1][:12])
    zoo_file(model_dir, seed=1)  # other weights under the same name: another run key
    again = invoke("distill", recipe(tmp_path, model_dir), "--threads", "1")
    assert again.exit_code == 0, again.output
    with open(tmp_path / "runs.csv") as table:
        keys = [r["key"] for r in csv.DictReader(table)]
    assert len(set(keys)) == 2

    out = tmp_path / "eval.csv"
    result = invoke("eval", f"robustbench:{NAME}", "--model-dir", model_dir, "--data", "embedded", "--n", "8",
                    "--attack", "clean", "--attack", "pgd", "--steps", "2", "--out", out, "--threads", "1")
    assert result.exit_code == 0, result.output
    with open(out) as table:
        rows = list(csv.DictReader(table))
    assert [r["attack"] for r in rows] == ["clean", "pgd"]
    assert {r["arch"] for r in rows} == {f"robustbench:{NAME}"}
    assert rows[0]["checkpoint_sha256"] and hashlib.sha256(path.read_bytes()).hexdigest().startswith(
        rows[0]["checkpoint_sha256"][:12])
    assert float(rows[1]["accuracy"]) <= float(rows[0]["accuracy"])
