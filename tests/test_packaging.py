"""The package metadata builds without a setuptools warning (none of them stays harmless for long)."""

from __future__ import annotations

import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution
from setuptools.warnings import SetuptoolsWarning

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_builds_metadata_without_setuptools_warnings(monkeypatch):
    monkeypatch.chdir(ROOT)  # setuptools resolves README.md and src/ from the working directory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distribution = apply_configuration(Distribution(), str(ROOT / "pyproject.toml"))
    ours = [f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught
            if issubclass(w.category, SetuptoolsWarning)]
    assert ours == []
    assert distribution.metadata.license_expression == "Apache-2.0"
    assert distribution.get_name() == "gadms-hf"
