"""SynthPEDES: a procedural pedestrian corpus with captions whose noise tokens are known.

GA-DMS is about captions that say more than the image shows. Real corpora never tell which
words those are; this one plants them on purpose and records where, so that GASS scores can be
checked against ground truth and the whole method can run, learn and be measured on a laptop
with no download. Everything is drawn with PIL + numpy and is a pure function of the seed:
every image and caption has its own random stream, so results do not depend on sharding or on
the order of generation, and changing `noise_rate` changes only the planted noise.

This package is the generator alone, one module per concept: `config` (corpus size), `streams`
(random streams), `identities`, `drawing`, `vocabulary` and `captions`, `noise` (the profiles),
`examples` (rows as plain dicts) and `token_truth`. It never imports `datasets`: caching and
loading are the builder's, `gadms_hf.data.builders.synth_pedes`.
"""

from .captions import write_caption
from .config import NOISE_PROFILES, SynthPedesConfig, synth_config_fields
from .drawing import draw_pedestrian
from .examples import generate_examples
from .identities import COLOURS, HAIR_COLOURS, PedestrianIdentity, sample_identities
from .noise import NOISE_ACCESSORIES, NOISE_BACKGROUNDS
from .streams import SPLITS
from .token_truth import (
    ATTRIBUTE_WORDS,
    COLOUR_WORDS,
    colour_noise_spans,
    token_attribute_flags,
    token_noise_flags,
    truth_scores,
)

__all__ = [
    "ATTRIBUTE_WORDS",
    "COLOURS",
    "COLOUR_WORDS",
    "HAIR_COLOURS",
    "NOISE_ACCESSORIES",
    "NOISE_BACKGROUNDS",
    "NOISE_PROFILES",
    "SPLITS",
    "PedestrianIdentity",
    "SynthPedesConfig",
    "colour_noise_spans",
    "draw_pedestrian",
    "generate_examples",
    "sample_identities",
    "synth_config_fields",
    "token_attribute_flags",
    "token_noise_flags",
    "truth_scores",
    "write_caption",
]
