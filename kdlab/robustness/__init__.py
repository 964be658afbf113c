"""Adversarial robustness: attacks, both PGD loops, the still-standing step, robust accuracy, sanity checks."""
