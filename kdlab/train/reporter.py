"""The reporter protocol: the callbacks through which the training loop tells the outside how a run progresses.

:func:`kdlab.train.engine.fit` calls a :class:`Reporter` when training starts, every ``train.log_every`` steps,
after every epoch and when training ends. The base class reports nothing (tests, ablation workers); the console's
progress bar (:mod:`kdlab.runs.console`), the experiment trackers (:mod:`kdlab.runs.trackers`), the expected-time
note (:mod:`kdlab.runs.estimate`) and a cluster job's log lines (:mod:`kdlab.ablation.cluster_job`) subclass it.
"""

from __future__ import annotations

from typing import Any


class Reporter:
    """Progress callbacks; the default reports nothing (tests, ablation workers)."""

    def fit_started(self, epochs: int, batches_per_epoch: int, start_epoch: int) -> None: ...

    def step_done(self, epoch: int, step: int, terms: dict[str, float], images: int) -> None:
        """Called every ``train.log_every`` steps and after an epoch's last step: ``terms`` are the mean loss
        terms since the previous call, ``images`` the images trained since then."""

    def epoch_done(self, epoch: int, metrics: dict[str, Any]) -> None: ...

    def fit_finished(self) -> None: ...
