"""The one exception the curation tools raise for problems found before any work starts."""

from __future__ import annotations


class CurationSetupError(ValueError):
    """Bad input, output or model argument, reported once and before any image is processed.

    A curation run over millions of web images must fail fast: a model that cannot be loaded
    (offline, misspelt name) or an empty input has to stop the run with one clear message,
    not after hours or once per image.
    """


__all__ = ["CurationSetupError"]
