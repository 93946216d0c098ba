"""Write a converted model as a self-contained Hub directory: safetensors, processor, model card.

Everything is written to a sibling temporary directory first and moved into place only when
complete, so a failure leaves the output directory untouched (absent, or as empty as it was).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..modeling_gadms import GADMSModel
from ..processing_gadms import GADMSProcessor, make_image_processor
from ..tokenizer import build_clip_tokenizer
from .openai_clip import ConversionReport


def check_output_dir(output_dir: str | Path) -> Path:
    """Refuse a directory that already has content, before any slow work is done."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(
            f"output_dir {output_dir} exists and is not an empty directory; choose a new one"
        )
    return output_dir


def save_converted(
    model: GADMSModel,
    report: ConversionReport,
    output_dir: str | Path,
    card_template: str | Path | None = None,
) -> Path:
    """Save `model`, its `GADMSProcessor` and a README into `output_dir`.

    The README is rendered from `card_template`, by default the bundled `model_cards/converted.md`
    (src/gadms_hf/model_cards links to the repository's model_cards/ and ships in the wheel).
    """
    output_dir = check_output_dir(output_dir)
    if card_template is None:
        template_text = (resources.files("gadms_hf") / "model_cards" / "converted.md").read_text(
            encoding="utf-8"
        )
    elif Path(card_template).is_file():
        template_text = Path(card_template).read_text(encoding="utf-8")
    else:
        raise FileNotFoundError(f"model card template {card_template} does not exist")
    height, width = model.config.image_size
    processor = GADMSProcessor(
        make_image_processor(height, width),
        build_clip_tokenizer(),
        max_length=model.config.text_config.max_position_embeddings,
    )
    card = ModelCard.from_template(
        ModelCardData(library_name="transformers", tags=["gadms", "text-based-person-retrieval", "clip"]),
        template_str=template_text,
        **asdict(report),
    )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        card.save(staging / "README.md")
        if output_dir.exists():
            output_dir.rmdir()
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


__all__ = ["check_output_dir", "save_converted"]
