"""Packaging that pyproject.toml alone cannot say: the repository's recipes/ folder (the one copy of every shipped
recipe) is installed inside the package as kdlab/recipes, so `kdlab distill quickstart` works after a plain
`pip install` with no checkout (kdlab/config/shipped.py reads it there, or from recipes/ in a checkout)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["kdlab*"]), "kdlab.recipes"],
    package_dir={"kdlab.recipes": "recipes"},
)
