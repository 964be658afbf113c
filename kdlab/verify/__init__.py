"""``kdlab verify``: check a committed results folder as a reviewer would (:mod:`kdlab.verify.checks`), with the
ablation commands planned, not run (:mod:`kdlab.verify.commands`)."""
