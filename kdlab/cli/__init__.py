"""The kdlab command line: parse, call one function, print. No experiment logic lives here.

One module per command group, and the app that registers them (this ``__init__`` imports none of them):

- :mod:`kdlab.cli.main`: the Typer ``app`` (``--version``, ``-h``), every command registered in help order
- :mod:`kdlab.cli.run`: ``kdlab train``, ``kdlab distill``
- :mod:`kdlab.cli.evaluate`: ``kdlab eval``
- :mod:`kdlab.cli.ablate`: ``kdlab ablate``
- :mod:`kdlab.cli.check`: ``kdlab check``, ``kdlab inspect``
- :mod:`kdlab.cli.report`: ``kdlab table``, ``kdlab report``
- :mod:`kdlab.cli.recipes`: ``kdlab recipes``, ``kdlab recipes copy``, ``kdlab schema``
- :mod:`kdlab.cli.command`: how every command behaves (help layout, one-line errors, Ctrl-C advice)
- :mod:`kdlab.cli.options`, :mod:`kdlab.cli.ablation_flags`: options several commands share, declared once
"""
