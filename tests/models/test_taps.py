import pytest
import torch

from kdlab.errors import KdlabError
from kdlab.models.registry import build_classifier
from kdlab.models.taps import FeatureTaps, resolve_tap

torch.set_num_threads(1)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_classifier("resnet_small", 10, width=8).eval()


def _x(batch=2):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


def test_resolve_tap_int_path_and_digit_string(model):
    assert resolve_tap(model, 1) == "net.stem"
    assert resolve_tap(model, 3) == "net.stage2"
    assert resolve_tap(model, "3") == "net.stage2"
    assert resolve_tap(model, "net.stage3.0.conv1") == "net.stage3.0.conv1"


def test_features_equal_manual_submodule_outputs(model):
    x = _x()
    with torch.no_grad(), FeatureTaps(model, [1, 2, "net.stage2", 4]) as taps:
        logits = model(x)
    with torch.no_grad():
        stem = model.net.stem((x - model.mean) / model.std)
        s1 = model.net.stage1(stem)
        s2 = model.net.stage2(s1)
        s3 = model.net.stage3(s2)
        assert torch.allclose(model.net.head(s3), logits)
    assert torch.allclose(taps.features[1], stem)
    assert torch.allclose(taps.features[2], s1)
    assert torch.allclose(taps.features["net.stage2"], s2)
    assert torch.allclose(taps[4], s3)
    assert taps.paths == {1: "net.stem", 2: "net.stage1", "net.stage2": "net.stage2", 4: "net.stage3"}
    assert _no_hooks(model)


def test_features_follow_the_last_forward(model):
    with torch.no_grad(), FeatureTaps(model, [2]) as taps:
        model(_x(2))
        first = taps.features[2]
        model(_x(3))
        assert taps.features[2].shape[0] == 3
        assert first.shape[0] == 2


def test_hooks_removed_even_after_exception(model):
    with pytest.raises(ValueError, match="boom"), FeatureTaps(model, [2, 3, "net.stage3"]):
        assert not _no_hooks(model)
        assert model.net.stage1._forward_hooks
        model(_x())
        raise ValueError("boom")
    assert _no_hooks(model)


def test_unknown_block_lists_the_blocks(model):
    with pytest.raises(KdlabError) as info:
        resolve_tap(model, 9)
    message = str(info.value)
    assert "unknown block 9" in message
    assert "model resnet_small has blocks 1 (net.stem), 2 (net.stage1), 3 (net.stage2), 4 (net.stage3)" in message
    with pytest.raises(KdlabError, match="unknown module path 'net.stage7'.*1 \\(net.stem\\)"):
        resolve_tap(model, "net.stage7")
    with pytest.raises(KdlabError, match="block index"):
        resolve_tap(model, 2.0)


def test_bad_key_registers_no_hooks(model):
    with pytest.raises(KdlabError, match="unknown block 0"), FeatureTaps(model, [2, 0]):
        pass  # pragma: no cover
    assert _no_hooks(model)


def test_detached_taps_carry_no_grad(model):
    model.train()
    x = _x()
    with FeatureTaps(model, [2, 3], detach=True) as taps:
        logits = model(x)
    assert logits.requires_grad
    assert not taps.features[2].requires_grad and taps.features[2].grad_fn is None
    with FeatureTaps(model, [2, 3]) as live:
        model(x)
    assert live.features[3].requires_grad
    live.features[3].pow(2).mean().backward()
    assert model.net.stage2[0].conv1.weight.grad is not None
    assert model.net.stage3[0].conv1.weight.grad is None  # downstream of the tap: untouched


def test_taps_on_a_plain_module_by_path():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    x = torch.ones(1, 4)
    with torch.no_grad(), FeatureTaps(net, ["1"]) as taps:  # no blocks(): "1" is the path of the ReLU
        net(x)
    assert taps.paths == {"1": "1"}
    assert torch.equal(taps.features["1"], torch.relu(net[0](x)))
    with pytest.raises(KdlabError, match="no numbered blocks"):
        resolve_tap(net, 2)
    assert _no_hooks(net)
