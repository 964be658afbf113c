"""Two ablations that must agree: the same table rows (less what differs by machine and time) and runs with equal
weights and per-epoch losses. Shared by the submitit and the real-Slurm tests (each against the local pool)."""

import pandas as pd
import torch

# columns that differ between two equal studies: when and where they ran, and how they were started
VOLATILE = ["plan", "wall_seconds", "train_seconds", "images_per_s", "run_dir", "command"]


def rows(table):
    frame = pd.read_csv(table).drop(columns=VOLATILE)
    return frame.astype(object).where(frame.notna(), None).to_dict("records")  # NaN != NaN


def weights(run_dir):
    return torch.load(run_dir / "best.pt", weights_only=True)["state_dict"]


def same_runs(first, second):
    """Every run directory of ``first`` (a runs folder) has a twin in ``second`` with equal weights and losses."""
    names = sorted(path.name for path in first.iterdir() if (path / "summary.json").is_file())
    assert names and names == sorted(path.name for path in second.iterdir() if (path / "summary.json").is_file())
    for name in names:
        a, b = weights(first / name), weights(second / name)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name
        columns = ["epoch", "lr", "loss", "train_acc"]
        assert (pd.read_csv(first / name / "metrics.csv")[columns].to_dict("records")
                == pd.read_csv(second / name / "metrics.csv")[columns].to_dict("records")), name
