"""The size and difficulty of a SynthPEDES corpus, validated where it is made.

The `datasets` builder extends this dataclass into its builder config, so every field here is
also a builder-config field and a cache key; keeping it free of `datasets` lets the generator
run (and be tested) without the builder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .streams import split_stream

# The kinds of planted noise, which `noise.noise_planter` plants: "default" mixes accessories, backgrounds
# and wrong colours (the corpora made before profiles existed); "confusable" says only wrong things about
# the person, in the words that describe people, as an MLLM captioner's hallucinations do.
NOISE_PROFILES = ("default", "confusable")


@dataclass
class SynthPedesConfig:
    """Size and difficulty of a SynthPEDES corpus (each field is also a builder-config field).

    `images_per_id` is for train; `test_images_per_id` for test and val (their gallery is the
    split's unique images). `val` is a held-out split drawn like `test` (its own identities, clean
    captions, the same sibling and occlusion rates) for choosing settings and checkpoints, so that
    `test` is read once; `num_val_ids=None` draws as many val identities as test ones.
    `sibling_rate` is the share of identities made by changing exactly one attribute of an earlier
    identity of the same split, so that retrieval has to read every attribute. `noise_rate` is the
    share of train captions given planted noise and `noise_profile` (one of `NOISE_PROFILES`) its kind.

    The defaults are the embedded default's corpus (measured on the val split, README "Embedded
    default"): 3,000 training identities (more identities teach more than more views of each) with
    2 photos each, so that its 700 steps pass over every caption about 3.7 times and GASS-guided
    masks (read from the previous pass) drive most of them; images drawn at the 96 x 32 the `small`
    model sees.
    """

    num_train_ids: int = 3000
    num_test_ids: int = 100
    num_val_ids: int | None = None
    images_per_id: int = 2
    test_images_per_id: int = 2
    captions_per_image: int = 2
    noise_rate: float = 0.5
    noise_profile: str = "default"
    sibling_rate: float = 0.3
    occlusion_rate: float = 0.15
    height: int = 96
    width: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = ("num_train_ids", "num_test_ids", "num_val_ids", "images_per_id", "test_images_per_id",
                 "captions_per_image")
        for name in (*sizes, "height", "width"):
            value = getattr(self, name)
            if name == "num_val_ids" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SynthPedesConfig.{name} must be a positive int, got {value!r}")
        for name in ("noise_rate", "sibling_rate", "occlusion_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"SynthPedesConfig.{name} must be a number in [0, 1], got {value!r}")
        if self.height < 32 or self.width < 16:
            raise ValueError(
                f"SynthPedesConfig needs height >= 32 and width >= 16 to draw a pedestrian, "
                f"got height={self.height!r}, width={self.width!r}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SynthPedesConfig.seed must be a non-negative int, got {self.seed!r}")
        if self.noise_profile not in NOISE_PROFILES:
            raise ValueError(
                f"SynthPedesConfig.noise_profile must be one of {NOISE_PROFILES}, got {self.noise_profile!r}"
            )

    def num_ids(self, split: str) -> int:
        split_stream(split)
        if split == "val" and self.num_val_ids is not None:
            return self.num_val_ids
        return self.num_train_ids if split == "train" else self.num_test_ids

    def num_images_per_id(self, split: str) -> int:
        return self.images_per_id if split_stream(split) == 0 else self.test_images_per_id


def synth_config_fields() -> tuple[str, ...]:
    """Names of the `SynthPedesConfig` fields (what `load_synth_pedes` accepts as overrides)."""
    return tuple(f.name for f in dataclasses.fields(SynthPedesConfig))


__all__ = ["NOISE_PROFILES", "SynthPedesConfig", "synth_config_fields"]
