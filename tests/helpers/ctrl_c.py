"""Ctrl-C, as a user would press it, at a chosen point: after an epoch of a named run, or in an attack batch."""

from __future__ import annotations

import kdlab.robustness.accuracy


def epochs_shown(monkeypatch, stop: tuple[str, int] | None = None) -> list[tuple[str, int]]:
    """Record (run name, epoch) of every finished epoch the console shows; raise KeyboardInterrupt (as Ctrl-C
    would) once epoch ``stop[1]`` of run ``stop[0]`` has been checkpointed."""
    from kdlab.runs import console

    shown: list[tuple[str, int]] = []
    original = console.RichReporter.epoch_done

    def epoch_done(self, epoch, metrics):
        original(self, epoch, metrics)
        shown.append((self.title, epoch))
        if stop == (self.title, epoch):
            raise KeyboardInterrupt

    monkeypatch.setattr(console.RichReporter, "epoch_done", epoch_done)
    return shown


def advised_args(output: str, args: list) -> list:
    """The command the Ctrl-C line advises: the same arguments, plus --resume where it says so."""
    line = next(line for line in output.splitlines() if line.startswith("interrupted"))
    return [*args, "--resume"] if "--resume" in line else list(args)


def interrupt_at(monkeypatch, call: int) -> list:
    """``run_attack`` raises KeyboardInterrupt at its ``call``-th call (one call per attack batch)."""
    real, calls = kdlab.robustness.accuracy.run_attack, []

    def run_attack(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(kdlab.robustness.accuracy, "run_attack", run_attack)
    return calls
