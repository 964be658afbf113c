"""Shared by the resume tests: interrupt a run after an epoch (as Ctrl-C would), then resume it."""

import pytest
import torch

from kdlab.runs.run import run_recipe
from kdlab.train.reporter import Reporter


class StopAfter(Reporter):
    """Raises KeyboardInterrupt once epoch ``epoch`` has been checkpointed."""

    def __init__(self, epoch):
        self.epoch = epoch

    def epoch_done(self, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def interrupted_then_resumed(recipe, stop_epoch: int):
    """Run ``recipe``, kill it after ``stop_epoch``, resume it; return the resumed outcome."""
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, reporter_factory=lambda name: StopAfter(stop_epoch))
    return run_recipe(recipe, resume=True)


def best_weights_equal(first, second) -> bool:
    a = torch.load(first.run_dir / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(second.run_dir / "best.pt", weights_only=True)["state_dict"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
