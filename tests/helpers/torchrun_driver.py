"""``kdlab`` under torchrun with a failure injected, for tests/runtime/test_distributed.py (not a test module).

``KDLAB_TEST_FAIL=RANK:STEP``: that rank raises a KdlabError in its STEP-th training step (counted over the
run's DistributedDataParallel forward calls), as a rank-local failure (a NaN loss, a full disk) would.
"""

import os

from torch.nn.parallel import DistributedDataParallel

from kdlab.cli.main import app
from kdlab.errors import KdlabError

rank_text, _, step_text = os.environ.get("KDLAB_TEST_FAIL", ":").partition(":")
if rank_text:
    original = DistributedDataParallel.forward
    calls = {"steps": 0}

    def failing_forward(self, *args, **kwargs):
        calls["steps"] += 1
        if os.environ["RANK"] == rank_text and calls["steps"] == int(step_text):
            raise KdlabError(f"injected failure on rank {rank_text} at step {step_text}")
        return original(self, *args, **kwargs)

    DistributedDataParallel.forward = failing_forward

app(prog_name="kdlab")
