"""An ablation's table as Markdown (kdlab.report.tables over the rows kdlab.ablation.table writes): correct
mean ± std, paper numbers, paired differences, tuned values at the edge of their grid."""

import math

import pandas as pd
import pytest

from kdlab.errors import KdlabError
from kdlab.report.paper import PAPER_NUMBERS
from kdlab.report.tables import default_baseline, default_paper, markdown_table, paired_differences, summarise


def test_mean_and_sample_std_over_seeds():
    frame = pd.DataFrame({"cell": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0],
                          "clean_acc": [50.0, 52.0, 57.0, 40.0], "pgd_acc": [10.0, 10.0, 13.0, 5.0]})
    summary = summarise(frame).set_index("cell")
    assert summary.loc["a", "clean_acc_mean"] == pytest.approx(53.0)
    assert summary.loc["a", "clean_acc_std"] == pytest.approx(math.sqrt(((3**2) + 1 + 4**2) / 2))
    assert summary.loc["a", "pgd_acc_std"] == pytest.approx(math.sqrt((1 + 1 + 4) / 2))
    assert math.isnan(summary.loc["b", "clean_acc_std"]) and summary.loc["b", "seeds"] == 1
    text = markdown_table(frame)
    assert "| a | 3 | 53.00 ± 3.61 | 11.00 ± 1.73 |" in text and "| b | 1 | 40.00 | 5.00 |" in text


def test_paper_numbers_sit_beside_kdlabs():
    frame = pd.DataFrame({"cell": ["mixacm", "kd-only"], "seed": [0, 0], "clean_acc": [60.0, 61.0],
                          "pgd_acc": [20.0, 2.0]})
    text = markdown_table(frame, paper="mixacm-components")
    assert "| mixacm | 1 | 60.00 | 20.00 | 56.65 |" in text and "| kd-only | 1 | 61.00 | 2.00 | — |" in text
    # the supplement does not name its attack: the column must not claim PGD; first author Awais
    assert "| cell | seeds | clean | PGD | paper (robust, attack unstated) |" in text
    assert "Paper column: Awais et al., MixACM" in text and "Muhammad" not in text
    # every reference column was read from its paper: none is marked unverified
    assert all("unverified" not in entry["label"].lower() + entry["source"].lower()
               for entry in PAPER_NUMBERS.values())


def test_paper_column_is_chosen_by_the_tables_contents():
    components = pd.DataFrame({"kind": ["components"], "cell": ["mixacm"], "seed": [0], "pgd_acc": [1.0]})
    feature_losses = pd.DataFrame({"kind": ["grid"] * 2, "cell": ["kind=l1", "kind=ssim"], "seed": [0, 0],
                                   "AP": [1.0, 2.0]})
    ssim_parts = pd.DataFrame({"kind": ["grid"], "cell": ["components=cs"], "seed": [0], "AP": [1.0]})
    assert default_paper(components) == "mixacm-components"
    assert default_paper(feature_losses) is None  # the SSIM paper's tables could not be read here
    assert default_paper(ssim_parts) is None


def test_paired_differences_subtract_the_baseline_seed_by_seed():
    frame = pd.DataFrame({"kind": ["grid"] * 6, "cell": ["kind=none"] * 3 + ["kind=ssim"] * 3,
                          "seed": [0, 1, 2, 0, 1, 2], "AP": [40.0, 50.0, 45.0, 42.0, 51.0, 45.0]})
    deltas = paired_differences(frame, "kind=none", "AP")
    assert deltas["kind=ssim"].mean == pytest.approx(1.0)  # (2 + 1 + 0) / 3
    # sample std 1, n = 3: half-width t_{0.975,2} · 1 / sqrt(3) = 4.303 / 1.732 = 2.484
    assert deltas["kind=ssim"].low == pytest.approx(1.0 - 2.484, abs=1e-3)
    assert deltas["kind=ssim"].high == pytest.approx(1.0 + 2.484, abs=1e-3)
    assert deltas["kind=ssim"].pairs == 3 and not deltas["kind=ssim"].separated
    text = markdown_table(frame, baseline=default_baseline(frame))
    assert "Δ AP vs kind=none (paired, 95 % CI)" in text and "| +1.00 [-1.48, +3.48] not separated |" in text
    assert "± 5.00 | — |" in text  # the baseline's own row: 45 ± 5, no difference with itself
    with pytest.raises(KdlabError, match="baseline cell 'kind=l9' is not in the table: choose one of kind=none"):
        paired_differences(frame, "kind=l9", "AP")

    # two baselines (no feature loss and the best rival): one paired column each, same seeds paired
    rival = pd.concat([frame, pd.DataFrame({"kind": ["grid"] * 3, "cell": ["kind=pkd"] * 3, "seed": [0, 1, 2],
                                            "AP": [41.0, 52.0, 46.0], "wall_seconds": [60.0, 90.0, 120.0]})])
    text = markdown_table(rival, baseline=["kind=none", "kind=pkd"], correction="none")  # the intervals alone
    assert "| Δ AP vs kind=none (paired, 95 % CI) | Δ AP vs kind=pkd (paired, 95 % CI) |" in text
    # ssim − pkd by seed: +1, −1, −1: mean −1/3, std 2/sqrt(3), half-width 4.303 · (2/sqrt(3)) / sqrt(3) = 2.869;
    # pkd − none: +1, +2, +1: mean 4/3, std 1/sqrt(3), half-width 1.434; wall 90 ± 30 s (pkd alone records it)
    assert "| kind=ssim | 3 | 46.00 ± 4.58 | — | +1.00 [-1.48, +3.48] not separated | -0.33 [-3.20, +2.54] not " \
           "separated |" in text
    assert "| kind=pkd | 3 | 46.33 ± 5.51 | 90 ± 30 | +1.33 [-0.10, +2.77] not separated | — |" in text
    assert "| cell | seeds | AP | wall s |" in text

    components = pd.DataFrame({"kind": ["components"] * 3, "cell": ["teacher", "student-ce", "acm"],
                               "seed": [0, 0, 0], "clean_acc": [40.0, 48.0, 40.0], "pgd_acc": [23.0, 0.0, 11.0]})
    text = markdown_table(components, baseline=default_baseline(components))
    assert "| teacher | 1 | 40.00 | 23.00 | — |" in text  # the shared teacher is not a paired run
    assert "| acm | 1 | 40.00 | 11.00 | +11.00 (1 seed: no interval) |" in text
    with pytest.raises(KdlabError, match="choose a student cell as --baseline"):
        paired_differences(components, "teacher", "pgd_acc")


def test_a_tuned_value_at_the_edge_of_its_grid_is_marked(tmp_path):
    from kdlab.report.tables import render, tuning_edges

    (tmp_path / "t-val.csv").write_text(
        'cell,seed,AP\n"kind=ssim,weight=0.2",0,1\n"kind=ssim,weight=2",0,2\n"kind=ssim,weight=20",0,3\n'
        '"kind=l2,weight=0.2",0,2\n"kind=l2,weight=2",0,3\n"kind=l2,weight=20",0,1\n'
        '"kind=mgd,weight=2e-6",0,3\n"kind=mgd,weight=2e-5",0,2\n"kind=mgd,weight=2e-4",0,1\n')
    frame = pd.DataFrame({"kind": ["grid"] * 3, "cell": ["kind=ssim", "kind=l2", "kind=mgd"], "seed": [0] * 3,
                          "AP": [50.0, 49.0, 48.0], "tuned": ["weight=20", "weight=2", "weight=2e-6"],
                          "tuned_on": ["t-val.csv"] * 3})
    assert tuning_edges(frame, tmp_path) == {"kind=ssim": ["largest"], "kind=mgd": ["smallest"]}
    frame.to_csv(tmp_path / "t-tuned.csv", index=False)
    markdown, _ = render(tmp_path / "t-tuned.csv")
    text = markdown.read_text()
    assert "| kind=ssim | 1 | weight=20 (largest tried) |" in text and "| kind=l2 | 1 | weight=2 |" in text
    assert "| kind=mgd | 1 | weight=2e-6 (smallest tried) |" in text and "a wider grid might" in text
    assert tuning_edges(frame.assign(tuned_on="missing.csv"), tmp_path) == {}  # no tuning table: nothing marked


def test_a_tuned_value_chosen_with_a_collapsed_tuning_seed_is_marked_in_the_final_table(tmp_path):
    from kdlab.report.tables import render

    (tmp_path / "t-val.csv").write_text(
        "cell,seed,pgd_acc,flag,tune_stop\n"
        '"m,weight=10",0,11,,interior\n"m,weight=10",1,12,,interior\n'
        '"m,weight=100",0,10,"collapsed: robust accuracy meaningless (predicts class 2 for 100% of 500 images)",'
        'interior\n"m,weight=100",1,20,,interior\n"m,weight=1000",0,9,,interior\n"m,weight=1000",1,9,,interior\n'
        '"k,weight=1",0,5,,bound\n"k,weight=1",1,5,,bound\n')
    frame = pd.DataFrame({"kind": ["grid"] * 2, "cell": ["m", "k"], "seed": [0, 0], "pgd_acc": [14.0, 4.0],
                          "tuned": ["weight=100", "weight=1"], "tuned_on": ["t-val.csv"] * 2})
    frame.to_csv(tmp_path / "t.csv", index=False)
    text = render(tmp_path / "t.csv")[0].read_text()
    assert "| m | 1 | weight=100 (⚠ collapsed on 1 of 2 tuning seeds) |" in text
    assert "| k | 1 | weight=1 (search stopped: bound) |" in text
