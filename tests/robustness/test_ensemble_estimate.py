"""An ensemble's expected time is told from its first batches without splitting it: AutoAttack keeps the numbers
of one uninterrupted call (its components seed each batch, so a split would change which points share a batch)."""

import torch

from kdlab.robustness.accuracy import evaluate_robustness, evaluate_specs
from kdlab.robustness.attacks import AttackSpec


def test_autoattack_tells_each_components_time_after_its_first_batch_and_keeps_one_calls_numbers(model, data):
    images, labels = data[0][:40], data[1][:40]
    spec = AttackSpec("autoattack", eps=8 / 255, seed=0)
    events: list[tuple[str, object]] = []

    def on_estimate(what, first, seconds, total):
        events.append(("estimate", (what, first, total)))
        assert seconds >= 0

    def on_result(result):
        events.append(("result", result.attack))

    got = evaluate_specs(model, images, labels, [spec], batch_size=16, on_result=on_result, on_estimate=on_estimate)
    reference = evaluate_robustness(model, images, labels, [spec], batch_size=16)

    estimates = [value for kind, value in events if kind == "estimate"]
    # one estimate per component that attacked anything, each after that component's first batch of 16 (or fewer)
    assert estimates and all(what.startswith("autoattack@") and ":" in what for what, _, _ in estimates)
    assert estimates[0][0].endswith(":apgd-ce") and estimates[0][1] == min(16, estimates[0][2])
    assert events[-1] == ("result", "autoattack")  # told before the result, not after
    # the same numbers, point for point, as one plain call (the reference schedule)
    assert got[-1].accuracy == reference[-1].accuracy
    assert torch.equal(got[-1].robust, reference[-1].robust)
    assert got[-1].components == reference[-1].components
