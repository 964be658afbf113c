"""Any checkpoint: a plain state dict (kdlab or torchvision architecture) evaluated with --arch."""

import pandas as pd
import pytest
import torch
import torchvision
from typer.testing import CliRunner

from kdlab.cli.main import app
from kdlab.config.datasets import CIFAR10_MEAN, CIFAR10_STD
from kdlab.data.loaders import load_classification_data
from kdlab.errors import KdlabError
from kdlab.models.registry import build_classifier
from kdlab.runs.evaluate import evaluate_target
from kdlab.tasks import classification

N = 40


@pytest.fixture(scope="module")
def test_images():
    data = load_classification_data("embedded", root=None, download=False, subset=None, val_size=0,
                                    test_subset=None, seed=0)
    return classification.test_selection(data.test, N, 0)


def expected_accuracy(net, images, labels, mean, std):
    """Accuracy computed directly: normalise by hand, run the bare network, compare argmax with the labels."""
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    net.eval()
    with torch.no_grad():
        predictions = net((images - mean) / std).argmax(1)
    return 100.0 * float((predictions == labels).float().mean())


def test_a_torchvision_state_dict_is_evaluated_with_the_datasets_normalisation(tmp_path, test_images):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():  # spread the predictions over a few classes
        net.fc.bias.copy_(torch.linspace(-1, 1, 10))
    torch.save(net.state_dict(), tmp_path / "resnet18.pt")
    out = tmp_path / "eval.csv"
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "resnet18.pt"), "--arch", "torchvision:resnet18",
                                      "--data", "embedded", "--attack", "clean", "--n", str(N),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out).iloc[0]
    images, labels = test_images
    assert row["accuracy"] == pytest.approx(expected_accuracy(net, images, labels, CIFAR10_MEAN, CIFAR10_STD))
    assert (row["arch"], row["checkpoint_kind"], row["normalisation"]) == ("torchvision:resnet18", "external",
                                                                           "cifar10")


def test_a_wrapped_data_parallel_state_dict_of_a_kdlab_architecture(tmp_path, test_images):
    torch.manual_seed(1)
    model = build_classifier("resnet_small", 10)
    with torch.no_grad():
        model.net.head.fc.bias.copy_(torch.linspace(-2, 2, 10))
    state = {f"module.{key}": value for key, value in model.net.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "ckpt.pth")
    report = evaluate_target(tmp_path / "ckpt.pth", ["clean"], n=N, data="embedded", out=tmp_path / "e.csv",
                             arch="resnet_small", norm="imagenet")
    images, labels = test_images
    expected = expected_accuracy(model.net, images, labels, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert report.rows[0]["accuracy"] == pytest.approx(expected)
    assert report.rows[0]["normalisation"] == "imagenet" and report.rows[0]["checkpoint_kind"] == "external"


def test_wrong_class_count_or_a_kdlab_checkpoint_are_one_line_errors(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=100).state_dict(), tmp_path / "r100.pt")
    with pytest.raises(KdlabError, match="predicts 100 classes but embedded has 10: pass --num-classes 10"):
        evaluate_target(tmp_path / "r100.pt", ["clean"], n=4, data="embedded", out=tmp_path / "e.csv",
                        arch="torchvision:resnet18")
    with pytest.raises(KdlabError, match="does not fit the model"):
        evaluate_target(tmp_path / "r100.pt", ["clean"], n=4, data="embedded", out=tmp_path / "e.csv",
                        arch="torchvision:resnet34")
    with pytest.raises(KdlabError, match="torchvision has no model 'resnet_nope'"):
        evaluate_target(tmp_path / "r100.pt", ["clean"], n=4, data="embedded", out=tmp_path / "e.csv",
                        arch="torchvision:resnet_nope")


@pytest.mark.parametrize("norm, mean, std", [("dataset", CIFAR10_MEAN, CIFAR10_STD),
                                             ("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                             ("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))])
def test_the_loaded_model_gives_the_original_networks_logits_on_hand_normalised_images(tmp_path, test_images,
                                                                                      norm, mean, std):
    from kdlab.models.files import load_external_model
    from kdlab.tasks.classification_eval import normalisation

    torch.manual_seed(2)
    net = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(net.state_dict(), tmp_path / "r.pt")
    chosen_mean, chosen_std, _ = normalisation(norm, "embedded")
    model = load_external_model(tmp_path / "r.pt", "torchvision:resnet18", num_classes=None, mean=chosen_mean,
                                std=chosen_std)
    images = test_images[0][:8]
    with torch.no_grad():
        ours = model(images)
        by_hand = net((images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        unnormalised = net(images)
    assert torch.allclose(ours, by_hand, atol=1e-5)
    assert norm == "none" or not torch.allclose(ours, unnormalised, atol=1e-3)  # the normalisation matters
