"""``python -m kdlab ...`` (and ``torchrun --nproc_per_node=N -m kdlab distill RECIPE``): the kdlab command line."""

from kdlab.cli.main import app

app(prog_name="kdlab")
