"""Turn the demo's arguments into a `SearchEngine`, or into one sentence that says what to fix.

Every way the set-up can fail (no model yet, a folder of another model type, a Hub id that cannot be
reached, a gallery that is not there or holds no readable image) becomes a `SetupError` whose message
the page shows instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoProcessor

from ..modeling_gadms import GADMSModel
from ..search.gallery import Gallery, open_gallery
from .engine import SearchEngine

DEFAULT_MODEL = "outputs/pretrain-synth"  # where `make demo` saves its model
DEFAULT_GALLERY = "synth-pedes:test"  # the demo model's held-out identities, with captions

NO_MODEL = (
    f"No model to search with: {DEFAULT_MODEL} does not exist yet. Run `make demo` (8 to 11 minutes on 2 CPU cores) "
    "to train the demo model there, then start this page again, or pass --model_name_or_path with a GA-DMS "
    "model folder or Hub id."
)


class SetupError(Exception):
    """The demo cannot start searching; the message says why and what to do."""


def load_engine(
    model_name_or_path: str | None = None,
    gallery: str | Gallery | None = None,
    data_dir: str | None = None,
    top_k: int = 8,
    batch_size: int = 64,
) -> SearchEngine:
    """Load the model and processor, open (and index) the gallery, and build the engine."""
    if model_name_or_path is None:
        if not Path(DEFAULT_MODEL).is_dir():
            raise SetupError(NO_MODEL)
        model_name_or_path = DEFAULT_MODEL
    try:
        model = GADMSModel.from_pretrained(model_name_or_path).eval()
        model.to("cuda" if torch.cuda.is_available() else "cpu")  # a GPU Space; the gallery stays on the CPU
        processor = AutoProcessor.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as error:
        raise SetupError(f"Cannot load the model {model_name_or_path!r}: {error}") from error
    if not getattr(getattr(processor, "tokenizer", None), "is_fast", False) or not hasattr(processor, "image_processor"):
        raise SetupError(
            f"{model_name_or_path!r} has no GA-DMS processor (a fast CLIP tokenizer and an image processor); "
            "save one next to the model with processor.save_pretrained(folder)"
        )
    if not isinstance(gallery, Gallery):
        spec = gallery or DEFAULT_GALLERY
        try:
            gallery = open_gallery(spec, model, processor, data_dir=data_dir, batch_size=batch_size)
        except (OSError, ValueError) as error:
            raise SetupError(f"Cannot open the gallery {spec!r}: {error}") from error
    if not len(gallery):
        listed = "; ".join(f"{name}: {why}" for name, why in gallery.skipped[:5])
        more = f" (and {len(gallery.skipped) - 5} more)" if len(gallery.skipped) > 5 else ""
        raise SetupError(
            f"The gallery {gallery.description} has no readable image"
            + (f"; skipped {len(gallery.skipped)} unreadable file(s): {listed}{more}" if listed else "")
            + ". Pass --gallery with a folder of photos (.jpg, .png, ...) or a corpus split such as synth-pedes:test."
        )
    return SearchEngine(model, processor, gallery, top_k=top_k)


__all__ = ["DEFAULT_GALLERY", "DEFAULT_MODEL", "NO_MODEL", "SetupError", "load_engine"]
