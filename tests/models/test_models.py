import pytest
import torch

from kdlab.config.datasets import CIFAR10_MEAN
from kdlab.errors import KdlabError
from kdlab.models.cifar import PreActResNet18, SmallResNet, WideResNet
from kdlab.models.registry import (
    ImageClassifier,
    available_architectures,
    build_classifier,
    count_parameters,
    describe_blocks,
)

torch.set_num_threads(1)


def _images(batch: int, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("arch", "options", "batch", "n_blocks"),
    [
        ("resnet_small", {}, 2, 4),
        ("wrn-16-4", {}, 2, 4),
        ("preact_resnet18", {}, 1, 5),
        ("wrn-34-10", {}, 1, 4),
    ],
)
def test_arch_builds_forwards_and_numbers_blocks(arch, options, batch, n_blocks):
    model = build_classifier(arch, 10, **options).eval()
    assert isinstance(model, ImageClassifier)
    with torch.no_grad():
        logits = model(_images(batch))
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()
    blocks = model.blocks()
    assert [b.index for b in blocks] == list(range(1, n_blocks + 1))
    assert blocks[0].path == "net.stem"
    assert [b.path for b in blocks[1:]] == [f"net.stage{i}" for i in range(1, n_blocks)]
    for block in blocks:
        assert model.get_submodule(block.path) is block.module


def test_num_classes_and_case_insensitive_names():
    model = build_classifier("WRN-16-4", 100).eval()
    assert model.arch == "wrn-16-4"
    with torch.no_grad():
        assert model(_images(2)).shape == (2, 100)


def test_parameter_counts_match_the_papers():
    # WRN-16-4 has 2.7M parameters (Zagoruyko & Komodakis, Table 1); PreAct ResNet-18 about 11.2M.
    assert 2.7e6 < count_parameters(WideResNet(16, 4)) < 2.8e6
    assert 11.1e6 < count_parameters(PreActResNet18()) < 11.2e6
    assert count_parameters(SmallResNet()) < 100_000


def test_resnet_small_scales_and_describe_blocks():
    model = build_classifier("resnet_small", 10, width=8, blocks_per_stage=2, stages=4)
    model.train()
    rows = describe_blocks(model)
    assert model.training, "describe_blocks must restore train mode"
    assert [r["index"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["path"] for r in rows] == ["net.stem", "net.stage1", "net.stage2", "net.stage3", "net.stage4"]
    assert [r["shape"] for r in rows] == [(8, 32, 32), (8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    assert [r["channels"] for r in rows] == [8, 8, 16, 32, 64]
    assert rows[2]["shape_str"] == "16x16x16"
    total = sum(p.numel() for p in model.parameters())
    assert all(r["model_params"] == total for r in rows)
    head = sum(p.numel() for p in model.net.head.parameters())
    assert head > 0 and sum(r["params"] for r in rows) == total - head  # every parameter but the head's
    assert len(model.net.stage2) == 2
    for module in model.modules():
        assert not module._forward_hooks


def test_describe_blocks_wrn_and_preact():
    rows = describe_blocks(build_classifier("wrn-16-4", 10))
    assert [r["shape"] for r in rows] == [(16, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
    rows = describe_blocks(build_classifier("preact_resnet18", 10))
    assert [r["channels"] for r in rows] == [64, 64, 128, 256, 512]
    assert rows[-1]["shape"] == (512, 4, 4)
    with pytest.raises(KdlabError, match="cannot take 1x32x32 images"):
        describe_blocks(build_classifier("resnet_small", 10), image_size=(1, 32, 32))


def test_normalisation_lives_inside_the_model():
    model = build_classifier("resnet_small", 10).eval()
    assert tuple(model.mean.flatten().tolist()) == pytest.approx(CIFAR10_MEAN)
    assert {"mean", "std"} <= set(model.state_dict())
    x = _images(2)
    with torch.no_grad():
        logits = model(x)
        manual = model.net((x - model.mean) / model.std)
        assert torch.allclose(logits, manual)
        model.mean.fill_(0.0)
        assert not torch.allclose(model(x), logits)


def test_custom_mean_std_option():
    model = build_classifier("resnet_small", 10, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert model.std.flatten().tolist() == [0.25, 0.25, 0.25]
    with pytest.raises(KdlabError, match="3 values"):
        build_classifier("resnet_small", 10, mean=[0.5, 0.5])


def test_unknown_arch_suggests_closest():
    with pytest.raises(KdlabError, match="did you mean 'preact_resnet18'") as info:
        build_classifier("preact_resnet_18", 10)
    assert "wrn-<depth>-<widen>" in str(info.value)
    with pytest.raises(KdlabError, match="did you mean 'resnet_small'"):
        build_classifier("resnet-small", 10)
    with pytest.raises(KdlabError, match="wrn-34-10"):
        build_classifier("wrn34", 10)


def test_invalid_wrn_depth():
    with pytest.raises(KdlabError, match="6n\\+4"):
        build_classifier("wrn-35-10", 10)
    with pytest.raises(KdlabError, match="6n\\+4"):
        WideResNet(depth=4, widen_factor=1)


def test_unknown_option_suggests_closest():
    with pytest.raises(KdlabError, match="did you mean 'width'") as info:
        build_classifier("resnet_small", 10, widht=32)
    assert "blocks_per_stage" in str(info.value)
    with pytest.raises(KdlabError, match="unknown option 'width' for architecture preact_resnet18"):
        build_classifier("preact_resnet18", 10, width=32)
    with pytest.raises(KdlabError, match="width"):
        build_classifier("resnet_small", 10, width=0)
    model = build_classifier("wrn-16-1", 10, dropout=0.3)
    assert model.net.dropout == 0.3


def test_available_architectures_parse():
    names = available_architectures()
    assert "wrn-16-4" in names and "preact_resnet18" in names and "resnet_small" in names
    model = build_classifier("wrn-10-1", 10)  # smallest valid WRN: one block per group
    assert len(model.net.stage1) == 1
