"""gadms-hf: GA-DMS text-based person retrieval on Hugging Face transformers.

Importing the package registers the "gadms" model type with the Auto classes, and marks
the classes for `auto_map` so that `save_pretrained` also writes remote code.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_gadms import GADMSConfig
from .modeling_gadms import GADMSModel, GADMSOutput, GADMSPreTrainedModel, GADMSVisionModel
from .processing_gadms import MASK_TOKEN, GADMSProcessor, make_image_processor
from .tokenizer import build_clip_tokenizer

__version__ = "0.1.0"


def register() -> None:
    """Register with the Auto classes (idempotent)."""
    AutoConfig.register(GADMSConfig.model_type, GADMSConfig, exist_ok=True)
    AutoModel.register(GADMSConfig, GADMSModel, exist_ok=True)
    AutoProcessor.register(GADMSConfig, GADMSProcessor, exist_ok=True)
    GADMSConfig.register_for_auto_class()
    GADMSModel.register_for_auto_class("AutoModel")
    GADMSProcessor.register_for_auto_class("AutoProcessor")


register()

__all__ = [
    "GADMSConfig",
    "GADMSModel",
    "GADMSOutput",
    "GADMSPreTrainedModel",
    "GADMSVisionModel",
    "GADMSProcessor",
    "MASK_TOKEN",
    "build_clip_tokenizer",
    "make_image_processor",
    "register",
    "__version__",
]
