"""SynthPEDES rows: every image and caption of a split, drawn from its own random stream.

Rows are plain dicts (PNG bytes, caption, ids, noise spans) in the common corpus schema, so the
generator needs no `datasets`; the builder in `data/builders/synth_pedes.py` writes them to the
cache. Ids are positional and every stream is keyed on (split, person, shot, caption), so any
range of persons can be generated alone, in any order, by any process, with the same result.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from .captions import write_caption
from .config import SynthPedesConfig
from .drawing import draw_pedestrian
from .identities import sample_identities
from .streams import split_stream, stream_rng


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def generate_examples(
    config: SynthPedesConfig, split: str, person_ranges: Sequence[tuple[int, int]] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of `split` as `(caption_id, row)`, for the persons in `person_ranges` ([start, stop) pairs).

    One row per caption; ids are positional (image_id = person_id * images_per_id + k,
    caption_id = image_id * captions_per_image + j), so they are stable across runs and shards.
    """
    stream = split_stream(split)
    people = sample_identities(config)[split]
    per_id, per_image = config.num_images_per_id(split), config.captions_per_image
    noise_rate = config.noise_rate if split == "train" else 0.0
    for start, stop in person_ranges if person_ranges is not None else [(0, len(people))]:
        if not 0 <= start <= stop <= len(people):
            raise ValueError(
                f"person range [{start}, {stop}) is outside the {len(people)} {split} identities"
            )
        for person_id in range(start, stop):
            person = people[person_id]
            for k in range(per_id):
                image_id = person_id * per_id + k
                draw_rng = stream_rng(config.seed, stream, person_id, k, 0)
                image = draw_pedestrian(person, draw_rng, config.height, config.width, config.occlusion_rate)
                png = _png_bytes(image)
                for j in range(per_image):
                    noise_rng = stream_rng(config.seed, stream, person_id, k, 2 + 2 * j)
                    noisy = noise_rng.random() < noise_rate
                    caption_rng = stream_rng(config.seed, stream, person_id, k, 1 + 2 * j)
                    caption, spans = write_caption(
                        person, caption_rng, noise_rng if noisy else None, config.noise_profile
                    )
                    caption_id = image_id * per_image + j
                    yield (
                        caption_id,
                        {
                            "image": {"bytes": png, "path": None},
                            "caption": caption,
                            "person_id": person_id,
                            "image_id": image_id,
                            "caption_id": caption_id,
                            "image_path": f"synth/{split}/{person_id:06d}_{k}.png",
                            "noise_spans": spans,
                        },
                    )


__all__ = ["generate_examples"]
