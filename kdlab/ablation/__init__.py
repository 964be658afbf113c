"""Ablations: grids of cells, their execution (local pool or Slurm), tuning and their tables."""
