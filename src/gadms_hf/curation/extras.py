"""The optional packages of curation, imported when first needed.

`ultralytics` (the YOLO person filter) and `opencv-python` (image decoding) are the `curation`
extra, not core dependencies: the model, data and training parts never use them. Importing them
here, at first use, keeps `import gadms_hf.curation` (and the templates sub-command) working
without them, and turns their absence into one message that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = 'pip install "gadms-hf[curation]"'
_DISTRIBUTIONS = {"cv2": "opencv-python", "ultralytics": "ultralytics"}


def import_curation_extra(module: str) -> ModuleType:
    """`module` (one of the curation extra's), or an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"curation needs {_DISTRIBUTIONS[module]} (module {module!r} cannot be imported: {error}); "
            f"install the curation extra: {INSTALL_HINT}",
            name=module,
        ) from error


__all__ = ["INSTALL_HINT", "import_curation_extra"]
