"""One unit for perturbation sizes: recipes and the command line parse eps and step sizes the same way."""

import pytest

from kdlab.config.recipe import validate_recipe
from kdlab.config.units import EpsError, eps_255, format_eps, parse_eps, parse_eps_list
from kdlab.errors import KdlabError
from tests.helpers.failfast import assert_one_line_error, files_under, invoke, write_recipe

BASE = {"model": {"arch": "resnet_small"}}


@pytest.mark.parametrize("text, value", [("8/255", 0.03137254901960784), ("2/255", 0.00784313725490196),
                                         ("0.031", 0.031), ("1", 1.0), (0, 0.0), (0.5, 0.5)])
def test_fractions_and_decimals(text, value):
    assert parse_eps(text) == pytest.approx(value, abs=1e-15)


@pytest.mark.parametrize("value, suggestion", [(8, "8/255"), ("8", "8/255"), (16.0, "16/255"), ("2.5", "2.5/255")])
def test_a_value_above_one_suggests_n_over_255(value, suggestion):
    with pytest.raises(EpsError) as error:
        parse_eps(value, "--eps")
    assert f"write {suggestion}" in str(error.value) and str(error.value).startswith("--eps ")


@pytest.mark.parametrize("value", ["8/0", "-1/255", "-0.1", "nan", "x", None, True])
def test_junk_is_refused(value):
    with pytest.raises(KdlabError):
        parse_eps(value)


@pytest.mark.parametrize("field", [("train", "adversarial", "eps"), ("train", "adversarial", "alpha"),
                                   ("eval", "eps"), ("eval", "alpha")])
@pytest.mark.parametrize("value, accepted", [("8/255", 8 / 255), (0.5, 0.5), ("1.5", None), (8, None)])
def test_recipe_and_command_line_agree(field, value, accepted):
    raw = {**BASE}
    node = raw
    for key in field[:-1]:
        node[key] = {}
        node = node[key]
    node[field[-1]] = value
    if accepted is None:
        with pytest.raises(KdlabError) as error:
            validate_recipe(raw)
        assert ".".join(field) in str(error.value) and "/255" in str(error.value)
        with pytest.raises(KdlabError):
            parse_eps(value, "--eps")
    else:
        recipe = validate_recipe(raw)
        section = recipe
        for key in field:
            section = getattr(section, key)
        assert section == pytest.approx(accepted, abs=1e-15) == parse_eps(value)


def test_formatting_in_units_of_one_255th():
    assert [format_eps(e) for e in (0.0, 8 / 255, 2 / 255, 16 / 255, None)] == ["0", "8/255", "2/255", "16/255", "-"]
    assert format_eps(0.5) == "127.5/255"  # every size reads in the same unit
    assert eps_255(8 / 255) == 8.0 and eps_255(0.01) == 2.55
    assert parse_eps_list("0, 4/255,8/255") == pytest.approx([0, 4 / 255, 8 / 255])


def test_recipe_eps_in_pixel_units_fails_before_anything_is_written(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\ntrain: {epochs: 1, adversarial: {method: pgd, eps: 8}}")
    assert_one_line_error(invoke("train", recipe), "train.adversarial.eps: 8", "write 8/255")
    assert files_under(tmp_path / "out") == []


def test_set_override_eps_in_pixel_units_is_refused(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\ntrain: {epochs: 1}")
    assert_one_line_error(invoke("train", recipe, "--set", "eval.eps=4"), "eval.eps: 4", "write 4/255")
    assert files_under(tmp_path / "out") == []


def test_eval_eps_in_pixel_units_names_the_option(tmp_path):
    out = tmp_path / "eval.csv"
    assert_one_line_error(invoke("eval", tmp_path, "--eps", "8", "--out", out), "--eps 8", "write 8/255")
    assert_one_line_error(invoke("eval", tmp_path, "--alpha", "2", "--out", out), "--alpha 2", "write 2/255")
    assert_one_line_error(invoke("eval", tmp_path, "--eps-sweep", "0,8", "--out", out), "--eps-sweep 8")
    assert not out.exists()


def test_unknown_attack_fails_at_recipe_load_with_a_suggestion(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\neval: {attacks: [clean, pgdd]}")
    assert_one_line_error(invoke("train", recipe), "eval.attacks", "unknown attack 'pgdd'", "did you mean 'pgd'")
    assert files_under(tmp_path / "out") == []


def test_unknown_attack_on_the_command_line_gets_a_suggestion(tmp_path):
    out = tmp_path / "eval.csv"
    assert_one_line_error(invoke("eval", tmp_path, "--attack", "pdg", "--out", out), "'pdg'", "did you mean 'pgd'")
    assert not out.exists()


def test_durations_read_h_mm_ss_and_unknown_reads_dashes():
    from kdlab.config.units import format_clock

    assert [format_clock(s) for s in (0, 59.4, 61, 3599.6, 3600, 90061)] == [
        "0:00:00", "0:00:59", "0:01:01", "1:00:00", "1:00:00", "25:01:01"]
    assert format_clock(-5) == "0:00:00"
    assert [format_clock(s) for s in (None, float("inf"), float("nan"))] == ["-:--:--"] * 3
