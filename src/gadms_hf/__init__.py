"""gadms-hf: GA-DMS text-based person retrieval on Hugging Face transformers."""

from .configuration_gadms import GADMSConfig
from .processing_gadms import GADMSProcessor

__version__ = "0.1.0"

__all__ = ["GADMSConfig", "GADMSProcessor", "__version__"]
