"""Options that several commands share, each declared once (flag, default, help) and used as a parameter's
default: ``--set``, ``--resume``, ``--force`` and ``--threads``; and what ``--threads`` does."""

from __future__ import annotations

import typer

SET_HELP = "Override a recipe key, e.g. --set train.epochs=5 (repeatable; type-checked like the file)."
THREADS_HELP = "Torch CPU threads (default: one per core). On a machine shared with other jobs use 1 per process."

# kdlab train, distill and check
OVERRIDES = typer.Option([], "--set", help=SET_HELP)
# kdlab train and distill
RESUME = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint.")
FORCE = typer.Option(False, "--force", help="Discard an existing run with the same recipe and retrain.")
# kdlab train, distill, eval and check (kdlab ablate's --threads counts per cell: its own option)
THREADS = typer.Option(None, "--threads", min=1, help=THREADS_HELP)


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (None: torch's default, one thread per core)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
