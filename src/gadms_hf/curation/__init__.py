"""WebPerson-style data curation: person filter, caption templates, VLM captions, Parquet shards.

See `scripts/curate_webperson.py` for the command line and `pipeline.run_curation` for the API.
"""

from .captioning import Captioner, CaptionerConfig
from .errors import CurationSetupError
from .person_filter import PersonFilter, PersonFilterConfig
from .pipeline import PipelineArguments, run_curation
from .report import CurationStats, RejectReason, format_report
from .templates import DEFAULT_TEMPLATES, TemplateArguments, TemplateWriter, load_templates, write_templates

__all__ = [
    "Captioner",
    "CaptionerConfig",
    "CurationSetupError",
    "CurationStats",
    "DEFAULT_TEMPLATES",
    "PersonFilter",
    "PersonFilterConfig",
    "PipelineArguments",
    "RejectReason",
    "TemplateArguments",
    "TemplateWriter",
    "format_report",
    "load_templates",
    "run_curation",
    "write_templates",
]
