"""Where and how the work runs: device copies, multi-process groups, per-sample randomness, precision."""
