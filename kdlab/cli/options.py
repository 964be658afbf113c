"""Options that several commands share, each declared once (flag, default, help) and used as a parameter's
default: ``--set``, ``--resume``, ``--force`` and ``--threads`` (with ``kdlab ablate``'s per-cell form); and
what ``--threads`` does.

The thread default is one torch thread per process, not torch's one per core: on a 2-core machine shared with
other jobs, two threads trained the quickstart teacher's step 1.7 to 5.4 times slower than one, with or without
a second process of ours beside it (``benchmarks/threads_under_load.py``,
``results/benchmarks/threads-under-load-cpu.csv``, docs/commands.md). One thread also gives the same numbers on
any machine (CPU float sums depend on the thread count). A run records the count it used (``torch_threads`` in
run.json, summary.json, runs.csv).
"""

from __future__ import annotations

import typer

SET_HELP = "Override a recipe key, e.g. --set train.epochs=5 (repeatable; type-checked like the file)."

# One torch thread per process unless --threads says otherwise (the module docstring says why).
DEFAULT_THREADS = 1
THREADS_HELP = (
    "Torch CPU threads of this process. Default 1, not one per core: on a 2-core machine shared with other jobs, "
    "2 threads trained 1.7-5.4x slower than 1 (benchmarks/threads_under_load.py, docs/commands.md); 1 also "
    "repeats the same numbers on any machine. On a machine of your own, try up to its core count. kdlab check "
    "times its steps with the same count.")
CELL_THREADS_HELP = (
    "Torch CPU threads per cell. Default 1 per cell (see kdlab train --help: on a shared machine more threads "
    "per process run slower); keep --jobs x --threads at most the core count. With --executor slurm the "
    "default is the cell's allocated CPUs (cpus=).")

# kdlab train, distill and check
OVERRIDES = typer.Option([], "--set", help=SET_HELP)
# kdlab train and distill
RESUME = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint.")
FORCE = typer.Option(False, "--force", help="Discard an existing run with the same recipe and retrain.")
# kdlab train, distill, eval and check
THREADS = typer.Option(DEFAULT_THREADS, "--threads", min=1, help=THREADS_HELP)
# kdlab ablate: per cell; None until the executor is known (local: DEFAULT_THREADS; Slurm: the allocation)
CELL_THREADS = typer.Option(None, "--threads", min=1, help=CELL_THREADS_HELP,
                            show_default=f"{DEFAULT_THREADS}; slurm: the allocated CPUs")


def set_threads(threads: int) -> int:
    """Apply ``--threads`` to this process; the count set."""
    import torch

    torch.set_num_threads(threads)
    return threads


def cell_threads(threads: int | None, local: bool) -> int | None:
    """``kdlab ablate``'s per-cell thread count: ``--threads``, else :data:`DEFAULT_THREADS` for local cells and
    None (the job's allocated CPUs, :mod:`kdlab.ablation.cluster_job`) for Slurm jobs."""
    if threads is not None:
        return threads
    return DEFAULT_THREADS if local else None
