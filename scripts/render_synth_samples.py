#!/usr/bin/env python
"""Draw a sheet of SynthPEDES training samples with their captions; planted noise is printed in red.

    python scripts/render_synth_samples.py                       # -> docs/synth_pedes_samples.png
    python scripts/render_synth_samples.py --identities 6 --output /tmp/sheet.png

Each row is one identity, each cell one of its images with its captions, so the sheet shows what
varies between shots (view, pose, scene, light) and what does not (the attributes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from gadms_hf.data.builders.synth_pedes import generate_synth_pedes
from gadms_hf.data.synth import SynthPedesConfig

INK, NOISE_INK, PAPER = (20, 20, 20), (215, 25, 30), (255, 255, 255)


def _runs(caption: str, spans: list[list[int]]) -> list[tuple[str, bool]]:
    """The caption cut at span boundaries into (text, is_noise) runs."""
    runs, position = [], 0
    for start, end in sorted(spans):
        runs += [(caption[position:start], False), (caption[start:end], True)]
        position = end
    return [run for run in [*runs, (caption[position:], False)] if run[0]]


def _draw_caption(
    draw: ImageDraw.ImageDraw,
    caption: str,
    spans: list[list[int]],
    origin: tuple[int, int],
    width: int,
    font: ImageFont.FreeTypeFont,
) -> int:
    """Word-wrap `caption` into `width` pixels from `origin`, noise in red; returns the y below it."""
    x0, y = origin
    x, line_height = x0, int(font.size * 1.3)
    for text, noise in _runs(caption, spans):
        for word in text.replace(" ", " \0").split("\0"):  # keep each word's trailing space
            if not word:
                continue
            advance = draw.textlength(word, font=font)
            overflows = x + draw.textlength(word.rstrip(), font=font) > x0 + width
            if overflows and x > x0 and word[0] not in ",.!?":  # never start a line with punctuation
                x, y = x0, y + line_height
            draw.text((x, y), word, fill=NOISE_INK if noise else INK, font=font)
            x += advance
    return y + line_height


def render(identities: int, images_per_id: int, scale: int, seed: int, output: Path) -> None:
    config = SynthPedesConfig(
        num_train_ids=identities, num_test_ids=1, images_per_id=images_per_id, noise_rate=0.5, seed=seed
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        train = generate_synth_pedes(config, cache_dir=cache_dir)["train"]
        rows = list(train)
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 13)
    title_font = ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold"), 16)
    image_w, image_h = config.width * scale, config.height * scale
    text_w, pad = 250, 10
    cell_w, cell_h = image_w + text_w + 3 * pad, image_h + 2 * pad
    header = 34
    sheet = Image.new("RGB", (cell_w * images_per_id, header + cell_h * identities), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (pad, 8),
        f"SynthPEDES train samples ({config.height}x{config.width}, shown x{scale}): "
        "one identity per row; planted noise in red",
        fill=INK,
        font=title_font,
    )
    by_image: dict[int, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image_id"], []).append(row)
    for image_id, captions in sorted(by_image.items()):
        person_id, k = captions[0]["person_id"], image_id % images_per_id
        left, top = k * cell_w, header + person_id * cell_h
        picture = captions[0]["image"].convert("RGB").resize((image_w, image_h), Image.Resampling.NEAREST)
        sheet.paste(picture, (left + pad, top + pad))
        y = top + pad
        for row in captions:
            y = _draw_caption(
                draw, row["caption"], row["noise_spans"], (left + image_w + 2 * pad, y), text_w, font
            )
            y += 6
        draw.text(
            (left + image_w + 2 * pad, top + cell_h - pad - 14),
            captions[0]["image_path"],
            fill=(130,) * 3,
            font=font,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours without dithering: a fraction of the size, and the flat-colour drawings lose nothing.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        output, optimize=True
    )
    print(
        f"wrote {output} ({output.stat().st_size / 1024:.0f} KiB, {len(by_image)} images, {len(rows)} captions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--identities", type=int, default=5, help="rows: identities to show")
    parser.add_argument("--images-per-id", type=int, default=3, help="columns: images per identity")
    parser.add_argument("--scale", type=int, default=2, help="pixel magnification of the 192x64 images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("docs/synth_pedes_samples.png"))
    args = parser.parse_args()
    render(args.identities, args.images_per_id, args.scale, args.seed, args.output)


if __name__ == "__main__":
    main()
