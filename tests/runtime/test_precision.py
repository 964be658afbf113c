"""train.precision (bf16 / fp16 autocast, the fp16 gradient scaler), eval.precision, channels-last and compile:
what they change, that fp32 stays the default, and that run keys of existing recipes do not move."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.methods.kd import KDSettings
from kdlab.config.recipe import keyed_settings, validate_recipe
from kdlab.config.schema_doc import render
from kdlab.config.sections import AdversarialSpec, TrainSpec
from kdlab.data.classification import ImageSet, iterate_batches
from kdlab.errors import KdlabError
from kdlab.methods.kd import KD
from kdlab.methods.supervised import SupervisedTraining
from kdlab.models.files import safe_load
from kdlab.robustness.accuracy import evaluate_robustness
from kdlab.robustness.training_attacks import pgd_maximise
from kdlab.runtime.acceleration import compile_errors, prepare_models
from kdlab.train.engine import DataSource, fit
from tests.helpers.tiny_training import STEPS, source, tiny_net


def fit_spec(method, tmp_path, **train_options):
    spec = TrainSpec(epochs=3, lr=0.05, **train_options)
    return fit(method, source(), spec, seed=1, run_dir=tmp_path, validate=None, select="",
               export_best=lambda path: None)


class Recorded(nn.Module):
    """Wraps a network and records the dtype of its output and whether autocast was on."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        out = self.net(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out


def test_bf16_training_runs_on_cpu_under_autocast_teacher_included(tmp_path):
    torch.manual_seed(0)
    student, teacher = Recorded(tiny_net(4)), Recorded(tiny_net(8))
    method = KD(student, teacher, KDSettings(), image_shape=(3, 8, 8))
    result = fit_spec(method, tmp_path, precision="bf16")
    assert student.seen[-1] == (True, torch.bfloat16) and teacher.seen[-1] == (True, torch.bfloat16)
    assert all(math.isfinite(row["loss"]) for row in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert 0.0 <= result.history[-1]["train_acc"] <= 100.0
    assert all(parameter.dtype == torch.float32 for parameter in method.parameters())  # fp32 master weights


def separable_source() -> DataSource:
    """Two classes told apart by brightness (dark: [0, 0.5), bright: [0.5, 1)), 10 batches of 16."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(160) % 2
    images = (torch.rand(160, 3, 8, 8, generator=generator) * 0.5 + 0.5 * labels.view(-1, 1, 1, 1)) * 255
    train = ImageSet(images.to(torch.uint8), labels)
    return DataSource(batches=lambda g: iterate_batches(train, 16, g, shuffle=True, augment=True, drop_last=True),
                      batches_per_epoch=10, batch_size=lambda batch: len(batch[1]))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_adversarial_training_learns_like_fp32(tmp_path, precision):
    """A sensible accuracy: FGSM-RS training on an easy task reaches over 90 % in three epochs, within a few
    points of the same run in fp32 (measured: 96.9 % for all three)."""
    accuracy = {}
    for name in ("fp32", precision):
        torch.manual_seed(0)
        method = SupervisedTraining(tiny_net(), AdversarialSpec(method="fgsm-rs", eps=2 / 255))
        history = fit(method, separable_source(), TrainSpec(epochs=3, lr=0.05, precision=name), seed=1,
                      run_dir=tmp_path / name, validate=None, select="", export_best=lambda path: None).history
        accuracy[name] = history[-1]["train_acc"]
    assert accuracy[precision] >= 90.0 and abs(accuracy[precision] - accuracy["fp32"]) <= 5.0, accuracy


def test_fp16_uses_a_gradient_scaler_whose_state_is_saved(tmp_path):
    torch.manual_seed(0)
    method = SupervisedTraining(tiny_net(), AdversarialSpec())
    result = fit_spec(method, tmp_path, precision="fp16")
    assert all(math.isfinite(row["loss"]) for row in result.history)
    scaler = safe_load(tmp_path / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] == 3 * STEPS % 2000  # one update per step


def test_fp32_leaves_no_autocast_and_no_scaler(tmp_path):
    torch.manual_seed(0)
    student = Recorded(tiny_net())
    fit_spec(SupervisedTraining(student, AdversarialSpec()), tmp_path)
    assert set(student.seen) == {(False, torch.float32)}
    assert "scaler" not in safe_load(tmp_path / "last.pt")


def test_fp16_inner_maximisation_scales_its_objective_so_small_gradients_still_move_the_input():
    """Input gradients of about 1e-9 underflow to zero in fp16; scaled by 2**10 they survive. Without the scale
    the sign step would be 0 everywhere and x' would stay at the start."""
    model = nn.Linear(16, 2)
    with torch.no_grad():
        model.weight.fill_(1e-4)
        model.weight[1].fill_(-1e-4)
        model.bias.zero_()
    images, labels = torch.full((4, 16), 0.5), torch.zeros(4, dtype=torch.long)

    def objective(x):
        return F.cross_entropy(model(x), labels) * 1e-5

    with torch.autocast("cpu", dtype=torch.float16):
        moved = pgd_maximise(objective, images, eps=0.1, alpha=0.05, steps=1, generator=torch.Generator(),
                             start="none")
    assert torch.allclose(moved, images - 0.05)  # ascent lowers the true class's logit: x moves down by alpha


def test_eval_precision_bf16_runs_the_attack_under_autocast_and_fp32_does_not():
    torch.manual_seed(0)
    net = Recorded(tiny_net())
    images, labels = torch.rand(6, 3, 8, 8), torch.randint(0, 3, (6,))
    for precision, expected in (("fp32", (False, torch.float32)), ("bf16", (True, torch.bfloat16))):
        net.seen.clear()
        (result,) = evaluate_robustness(net, images, labels, ["pgd"], batch_size=6, precision=precision)
        assert set(net.seen) == {expected} and 0.0 <= result.accuracy <= 100.0


def test_channels_last_converts_the_trained_modules_and_the_teacher():
    student, teacher = tiny_net(4), tiny_net(8)
    method = KD(student, teacher, KDSettings(), image_shape=(3, 8, 8))
    prepare_models(method, [student, teacher], TrainSpec(channels_last=True))
    weights = [p for p in [*method.parameters(), *teacher.parameters()] if p.ndim == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    untouched = tiny_net(4)
    prepare_models(untouched, [untouched], TrainSpec())
    assert not untouched.net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_compiles_the_networks_in_place_and_keeps_their_state_dict_keys(monkeypatch):
    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda module, *a, **k: compiled.append(module))
    student, teacher = tiny_net(4), tiny_net(8)
    method = KD(student, teacher, KDSettings(), image_shape=(3, 8, 8))
    keys = list(method.state_dict())
    prepare_models(method, [student, teacher], TrainSpec(compile=True))
    assert compiled == [student, teacher] and list(method.state_dict()) == keys


def test_a_compile_failure_is_one_line_naming_the_setting():
    from torch._dynamo.exc import TorchDynamoException

    expected = r"train.compile: torch.compile failed on this model \(backend failed: no C\+\+ compiler\); set"
    with pytest.raises(KdlabError, match=expected), compile_errors(True):
        raise TorchDynamoException("backend failed: no C++ compiler\nlong traceback")
    with pytest.raises(RuntimeError), compile_errors(False):
        raise RuntimeError("not translated when compile is off")


TRAIN = {"model": {"arch": "resnet_small"}, "data": {"dataset": "embedded"}}


def test_speed_options_keep_existing_run_keys_and_enter_the_key_only_when_they_change_numbers():
    base = validate_recipe(TRAIN).key()
    defaults = {"precision": "fp32", "channels_last": False, "compile": False, "log_every": 7}
    assert validate_recipe({**TRAIN, "train": defaults, "eval": {"precision": "fp32"}}).key() == base
    changed = [{"train": {"precision": "bf16"}}, {"train": {"channels_last": True}}, {"train": {"compile": True}},
               {"eval": {"precision": "bf16"}}]
    keys = {validate_recipe({**TRAIN, **option}).key() for option in changed}
    assert len(keys) == 4 and base not in keys


def test_cache_keys_of_sections_leave_out_new_options_at_their_defaults():
    """The teacher-evaluation cache of ablations is keyed by the data and eval sections: new options at their
    defaults must not rename it (the old key had neither)."""
    plain = validate_recipe(TRAIN)
    assert "precision" not in keyed_settings(plain.eval, "eval") and "workers" not in keyed_settings(plain.data, "data")
    assert set(keyed_settings(plain.eval, "eval")) == set(plain.eval.model_dump()) - {"precision"}
    bf16 = validate_recipe({**TRAIN, "eval": {"precision": "bf16"}})
    assert keyed_settings(bf16.eval, "eval")["precision"] == "bf16"


@pytest.mark.parametrize("option, message", [
    ({"train": {"precision": "fp8"}}, "train.precision: unknown value 'fp8'"),
    ({"eval": {"precision": "fp16"}}, "eval.precision: unknown value 'fp16'"),
    ({"train": {"log_every": 0}}, "train.log_every"),
    ({"data": {"workers": 2}}, "data.workers sets the reader processes of streaming detection data"),
])
def test_speed_options_are_validated_with_one_line(option, message):
    with pytest.raises(KdlabError, match=message) as error:
        validate_recipe({**TRAIN, **option})
    assert "\n" not in str(error.value)


def test_kdlab_schema_train_documents_the_speed_options():
    text = render("train")
    for key in ("train.log_every", "train.precision", "train.channels_last", "train.compile"):
        assert key in text, key
    assert "fp32" in text and "bf16" in text and "fp16" in text
    assert "eval.precision" in render("eval") and "data.workers" in render("data")
