"""The one exception type that reaches users as a friendly, one-line message."""


class KdlabError(Exception):
    """A problem with the user's input (recipe, file, checkpoint, option).

    The CLI prints ``str(error)`` on one line and exits with code 2, no traceback.
    The message should name the problem and the fix.
    """


class Diverged(KdlabError):
    """The training loss became non-finite. Fatal for a run; in a tuning grid (``kdlab ablate --tune``) or a
    declared study it is a result — that value (seed) diverges — recorded as a flagged row while the other runs go
    on. ``run_dir``: the run's directory, whose run.json names the code that trained it."""

    run_dir = None  # set where the divergence is raised (kdlab.runs.run)


class ReportedElsewhere(KdlabError):
    """An error another process of a multi-process run reports (:mod:`kdlab.runtime.distributed`): this process exits
    with the same code without printing it again."""


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """``" (did you mean 'pgd'?)"`` for the closest candidate, or ``""`` when none is close enough."""
    import difflib

    names = [str(c) for c in candidates]
    match = difflib.get_close_matches(str(name).strip().lower(), names, n=1, cutoff=cutoff)
    return f" (did you mean '{match[0]}'?)" if match else ""
