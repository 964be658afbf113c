"""Data: one module per dataset with its loader (and, where the plan check must read them, its sizes).

What each dataset is (task, classes, image size, split sizes, statistics) is a row of the facts table,
:mod:`kdlab.config.datasets`; :mod:`kdlab.data.loaders` registers which module reads each row. Classification:
:mod:`~kdlab.data.cifar`, :mod:`~kdlab.data.imagefolder`, :mod:`~kdlab.data.embedded`, held in memory as
:mod:`~kdlab.data.classification` sets, their images chosen by :mod:`~kdlab.data.splits`, decoded by
:mod:`~kdlab.data.decode`, augmented by :mod:`~kdlab.data.augment`; detection: :mod:`kdlab.data.detection`. Split
sizes too small for a recipe are refused by :mod:`~kdlab.data.sizes`.
"""
