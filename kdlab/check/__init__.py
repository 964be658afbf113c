"""Checks before any work: the plan check of a recipe or ablation, and ``kdlab inspect``."""
