"""SynthPEDES: determinism, splits, schema, planted noise and its token alignment, the builder."""

from __future__ import annotations

import io
import re
from collections import Counter

import datasets
import numpy as np
import pytest
from PIL import Image

from gadms_hf.data.builders.synth_pedes import (
    SYNTH_PEDES_FEATURES,
    SynthPedes,
    generate_synth_pedes,
    load_synth_pedes,
)
from gadms_hf.data.synth import (
    COLOURS,
    HAIR_COLOURS,
    NOISE_ACCESSORIES,
    NOISE_BACKGROUNDS,
    SynthPedesConfig,
    draw_pedestrian,
    generate_examples,
    sample_identities,
    token_attribute_flags,
    token_noise_flags,
    write_caption,
)

SMALL = dict(num_train_ids=8, num_test_ids=4, images_per_id=2, test_images_per_id=2)
COLOUR_WORDS = set(COLOURS) | set(HAIR_COLOURS) | {"gray", "blond"}
CANONICAL = {"gray": "grey", "blond": "blonde"}
HALLUCINATED_ITEM = re.compile(
    r"(carrying an? \w+ (backpack|shoulder bag|handbag)|wearing an? \w+ (cap|hat))"
)


def rows(config: SynthPedesConfig, split: str) -> list[dict]:
    return [row for _, row in generate_examples(config, split)]


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="noise_rate"):
        SynthPedesConfig(noise_rate=1.5)
    with pytest.raises(ValueError, match="num_train_ids"):
        SynthPedesConfig(num_train_ids=0)
    with pytest.raises(ValueError, match="height"):
        SynthPedesConfig(height=8)
    with pytest.raises(ValueError, match="unknown SynthPEDES option"):
        load_synth_pedes("train", num_training_ids=3)
    with pytest.raises(ValueError, match="unknown SynthPEDES split"):
        load_synth_pedes("validation")


def test_identities_are_distinct_disjoint_consistent_and_include_near_twins():
    people = sample_identities(SynthPedesConfig())
    train_keys = [p.key() for p in people["train"]]
    test_keys = [p.key() for p in people["test"]]
    assert (len(train_keys), len(test_keys)) == (3000, 100)
    assert len(set(train_keys)) == len(train_keys) and len(set(test_keys)) == len(test_keys)
    assert not set(train_keys) & set(test_keys)
    assert all(p.bottom_type != "skirt" for p in people["train"] if p.gender == "man")
    assert all((p.bag_type == "none") == (p.bag_colour is None) for p in people["train"])
    # Near twins: identities that differ in exactly one captioned attribute, within a split.
    twins = sum(any(sum(a != b for a, b in zip(k, other)) == 1 for other in test_keys) for k in test_keys)
    assert twins >= 10


def test_same_seed_same_bytes_other_seed_other_data():
    config = SynthPedesConfig(**SMALL, seed=3)
    first, second = rows(config, "train"), rows(config, "train")
    assert [r["image"]["bytes"] for r in first] == [r["image"]["bytes"] for r in second]
    assert [(r["caption"], r["noise_spans"]) for r in first] == [
        (r["caption"], r["noise_spans"]) for r in second
    ]
    other = rows(SynthPedesConfig(**SMALL, seed=4), "train")
    assert [r["image"]["bytes"] for r in first] != [r["image"]["bytes"] for r in other]


def test_shards_and_noise_rate_do_not_change_images_or_clean_wording():
    noisy = rows(SynthPedesConfig(**SMALL, noise_rate=1.0), "train")
    clean = rows(SynthPedesConfig(**SMALL, noise_rate=0.0), "train")
    sharded = [
        row
        for _, row in generate_examples(SynthPedesConfig(**SMALL, noise_rate=1.0), "train", [(5, 8), (0, 5)])
    ]
    assert [r["image"]["bytes"] for r in noisy] == [r["image"]["bytes"] for r in clean]
    assert sorted(sharded, key=lambda r: r["caption_id"]) == noisy
    assert all(r["noise_spans"] for r in noisy) and not any(r["noise_spans"] for r in clean)


def test_ids_counts_paths_and_image_size():
    config = SynthPedesConfig(**SMALL, height=96, width=32)
    train = rows(config, "train")
    assert len(train) == 8 * 2 * 2
    assert [r["caption_id"] for r in train] == list(range(len(train)))
    assert sorted({r["image_id"] for r in train}) == list(range(16))
    assert sorted({r["person_id"] for r in train}) == list(range(8))
    assert train[5]["image_path"] == "synth/train/000001_0.png"  # caption 5 = image 2 = person 1, shot 0
    image = Image.open(io.BytesIO(train[0]["image"]["bytes"]))
    assert (image.format, image.size, image.mode) == ("PNG", (32, 96), "RGB")
    # The two captions of an image share its bytes and ids; images of one person differ.
    assert train[0]["image"]["bytes"] == train[1]["image"]["bytes"] != train[2]["image"]["bytes"]


def test_noise_rate_is_roughly_as_configured_and_test_is_clean():
    config = SynthPedesConfig(num_train_ids=100, num_test_ids=20, images_per_id=4, noise_rate=0.3)
    train = rows(config, "train")
    rate = np.mean([bool(r["noise_spans"]) for r in train])
    assert abs(rate - 0.3) < 0.05, rate
    assert not any(r["noise_spans"] for r in rows(config, "test"))
    kinds = Counter(
        "colour" if r["caption"][a:b] in COLOUR_WORDS else "phrase"
        for r in train
        for a, b in r["noise_spans"]
    )
    assert kinds["colour"] > 20 and kinds["phrase"] > 100


def _strip_planted(caption: str, spans: list[list[int]]) -> tuple[str, list[str]]:
    """Undo the noise using only the spans: drop planted phrases (with their ", " or "She is ... ."
    wrapper) and replace wrong colour words by a placeholder; returns the text and those colours."""
    colours = []
    for start, end in sorted(spans, reverse=True):
        text = caption[start:end]
        if text in COLOUR_WORDS:
            colours.insert(0, text)
            caption = caption[:start] + "<colour>" + caption[end:]
        elif caption[start - 2 : start] == ", ":
            caption = caption[: start - 2] + caption[end:]
        else:
            lead = re.search(r"(^| )(She|He) is $", caption[:start])
            assert lead is not None and caption[end] == ".", (caption, text)
            caption = caption[: lead.start()] + caption[end + 1 :]
    return caption.strip(), colours


def test_noise_spans_cover_exactly_the_planted_text():
    config = SynthPedesConfig(num_train_ids=60, num_test_ids=4, images_per_id=2, noise_rate=1.0)
    people = sample_identities(config)["train"]
    noisy = rows(config, "train")
    clean = rows(SynthPedesConfig(num_train_ids=60, num_test_ids=4, images_per_id=2, noise_rate=0.0), "train")
    for row, reference in zip(noisy, clean):
        caption, spans = row["caption"], row["noise_spans"]
        for start, end in spans:
            text = caption[start:end]
            assert text == text.strip() and (start == 0 or not caption[start - 1].isalnum())
            assert not caption[end : end + 1].isalnum()
            planted = text in NOISE_ACCESSORIES or text in NOISE_BACKGROUNDS or text in COLOUR_WORDS
            assert planted or HALLUCINATED_ITEM.fullmatch(text), text
            if HALLUCINATED_ITEM.fullmatch(text):
                person = people[row["person_id"]]
                assert (person.bag_type if "carrying" in text else person.hat_type) == "none"
        restored, colours = _strip_planted(caption, spans)
        restored_words, clean_words = restored.split(), reference["caption"].split()
        assert len(restored_words) == len(clean_words), (caption, reference["caption"])
        placeholders = [(r, c) for r, c in zip(restored_words, clean_words) if "<colour>" in r]
        # Outside the wrong colours, only an article may differ ("a red" -> "an orange").
        changed = [{r, c} for r, c in zip(restored_words, clean_words) if r != c and "<colour>" not in r]
        assert all(pair == {"a", "an"} for pair in changed), (caption, reference["caption"])
        for (_, true_word), wrong in zip(placeholders, colours):
            true_colour = re.sub(r"\W", "", true_word)
            assert CANONICAL.get(wrong, wrong) != CANONICAL.get(true_colour, true_colour)


def test_write_caption_is_clean_without_noise_rng():
    person = sample_identities(SynthPedesConfig(**SMALL))["train"][0]
    caption, spans = write_caption(person, np.random.default_rng(1))
    assert spans == [] and caption.endswith(".") and caption[0].isupper()
    assert not any(p in caption for p in NOISE_ACCESSORIES + NOISE_BACKGROUNDS)


@pytest.mark.parametrize(
    ("caption", "noise"),
    [
        ("A woman in a red jacket, holding an umbrella.", ["holding an umbrella"]),
        (
            "A  man wears  gray jeans.  He is standing next to a parked car.",
            ["gray", "standing next to a parked car"],
        ),
        ("The girl's T-shirt is pink, wearing sunglasses!", ["wearing sunglasses"]),
    ],
)
def test_token_noise_flags_mark_the_tokens_of_the_spans(tokenizer, caption, noise):
    spans = [[caption.index(text), caption.index(text) + len(text)] for text in noise]
    flags = token_noise_flags(tokenizer, caption, spans)
    encoding = tokenizer(caption, padding="max_length", truncation=True, max_length=77)
    assert len(flags) == 77 and not flags[0]
    flagged = [token for token, flag in zip(encoding["input_ids"], flags) if flag]
    assert tokenizer.decode(flagged).split() == " ".join(noise).lower().split()
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert not any(flag for token, flag in zip(encoding["input_ids"], flags) if token in special)


def test_token_noise_flags_on_generated_captions(tokenizer):
    config = SynthPedesConfig(num_train_ids=40, num_test_ids=4, images_per_id=2, noise_rate=1.0)
    longest = 0
    for row in rows(config, "train"):
        caption, spans = row["caption"], row["noise_spans"]
        ids = tokenizer(caption)["input_ids"]
        longest = max(longest, len(ids))
        flags = token_noise_flags(tokenizer, caption, spans)
        flagged = [token for token, flag in zip(ids, flags) if flag]
        expected = " ".join(caption[a:b] for a, b in spans).lower().split()
        assert tokenizer.decode(flagged).split() == expected, caption
    assert longest <= 77  # captions are never truncated, so every planted token is visible


def test_token_noise_flags_reject_bad_spans_and_respect_truncation(tokenizer):
    with pytest.raises(ValueError, match="noise span"):
        token_noise_flags(tokenizer, "a man.", [[3, 99]])
    caption = "a man " * 60 + "holding an umbrella."
    start = caption.index("holding")
    flags = token_noise_flags(tokenizer, caption, [[start, start + 19]], max_length=77)
    assert len(flags) == 77 and not any(flags)  # the span lies past the truncation point


def test_token_attribute_flags_mark_described_attributes_outside_noise(tokenizer):
    caption = "A young woman with long blonde hair wears a red t-shirt. She is wearing a blue scarf."
    noise = caption.index("wearing a blue scarf")
    flags = token_attribute_flags(tokenizer, caption, [[noise, noise + len("wearing a blue scarf")]])
    ids = tokenizer(caption, padding="max_length", truncation=True, max_length=77)["input_ids"]
    flagged = tokenizer.decode([token for token, flag in zip(ids, flags) if flag]).split()
    # "young" is not an attribute; "blue" is a colour but inside the planted span; t-shirt is three tokens.
    assert flagged == ["woman", "long", "blonde", "hair", "red", "t", "-", "shirt"]
    with pytest.raises(ValueError, match="noise span"):
        token_attribute_flags(tokenizer, "a man.", [[0, 99]])


def test_attribute_and_noise_flags_partition_generated_captions(tokenizer):
    """On generated captions no token is both, every clean caption has attribute tokens, and every colour
    word of the drawing's palette outside the noise is an attribute token."""
    config = SynthPedesConfig(num_train_ids=30, num_test_ids=4, images_per_id=2, noise_rate=0.5)
    colours = {tokenizer.convert_tokens_to_ids(f"{c}</w>") for c in COLOURS}
    for row in rows(config, "train"):
        caption, spans = row["caption"], row["noise_spans"]
        attribute = token_attribute_flags(tokenizer, caption, spans)
        noise = token_noise_flags(tokenizer, caption, spans)
        ids = tokenizer(caption, padding="max_length", truncation=True, max_length=77)["input_ids"]
        assert not any(a and n for a, n in zip(attribute, noise)), caption
        assert sum(attribute) >= 5, caption  # hair, top, bottom, shoes: colour + noun each
        for token, a, n in zip(ids, attribute, noise):
            if token in colours and not n:
                assert a, (caption, tokenizer.decode([token]))


def test_images_show_the_top_colour():
    """Attributes are legible: the top, the largest garment, is the image's dominant bright colour."""
    bright = ("red", "blue", "green", "yellow")

    def chromaticity(rgb: np.ndarray) -> np.ndarray:  # brightness-free, so lighting does not matter
        rgb = np.asarray(rgb, dtype=float)
        return rgb / (rgb.sum(-1, keepdims=True) + 1e-6)

    people = [
        p
        for p in sample_identities(SynthPedesConfig())["train"]
        if p.top_colour in bright
        and not {p.bottom_colour, p.shoes_colour, p.bag_colour, p.hat_colour} & set(bright)
    ][:30]
    hits = 0
    for index, person in enumerate(people):
        pixels = chromaticity(
            np.asarray(draw_pedestrian(person, np.random.default_rng(index))).reshape(-1, 3)
        )
        area = {name: (np.abs(pixels - chromaticity(COLOURS[name])).sum(1) < 0.08).sum() for name in bright}
        hits += max(area, key=area.get) == person.top_colour
    assert len(people) == 30 and hits >= 27, hits


def test_builder_round_trip(tmp_path):
    builder = SynthPedes(cache_dir=str(tmp_path), **SMALL)
    builder.download_and_prepare()
    train, test = builder.as_dataset("train"), builder.as_dataset("test")
    assert train.features == SYNTH_PEDES_FEATURES
    assert isinstance(train.features["image"], datasets.Image)
    assert (len(train), len(test)) == (8 * 2 * 2, 4 * 2 * 2)
    expected = rows(SynthPedesConfig(**SMALL), "train")
    assert train["caption"] == [r["caption"] for r in expected]
    assert train["noise_spans"] == [r["noise_spans"] for r in expected]
    assert (
        train.cast_column("image", datasets.Image(decode=False))[3]["image"]["bytes"]
        == expected[3]["image"]["bytes"]
    )
    assert test["caption_id"] == list(range(len(test))) and not any(test["noise_spans"])
    assert test[0]["image"].size == (32, 96)
    # The public loaders read the same cache; another config builds elsewhere.
    assert load_synth_pedes("test", cache_dir=tmp_path, **SMALL)["caption"] == test["caption"]
    corpus = generate_synth_pedes(SynthPedesConfig(**SMALL, seed=1), cache_dir=tmp_path)
    assert set(corpus) == {"train", "test", "val"} and corpus["train"]["caption"] != train["caption"]


def test_val_split_is_held_out_like_test_and_leaves_train_and_test_unchanged(tmp_path):
    """val: its own identities (disjoint from train and test), clean captions, test's images per identity;
    its size (default: test's) changes no train or test image or caption."""
    sizes = dict(num_train_ids=6, num_test_ids=3, images_per_id=2, test_images_per_id=2, noise_rate=1.0)
    people = sample_identities(SynthPedesConfig(**sizes))
    assert len(people["val"]) == 3
    keys = {split: {p.key() for p in group} for split, group in people.items()}
    assert not keys["val"] & keys["train"] and not keys["val"] & keys["test"]
    val = list(generate_examples(SynthPedesConfig(**sizes), "val"))
    assert len(val) == 3 * 2 * 2 and all(row["noise_spans"] == [] for _, row in val)
    for split in ("train", "test"):
        default = list(generate_examples(SynthPedesConfig(**sizes), split))
        more_val = list(generate_examples(SynthPedesConfig(**sizes, num_val_ids=5), split))
        assert [(k, r["caption"], r["image"]["bytes"]) for k, r in default] == [
            (k, r["caption"], r["image"]["bytes"]) for k, r in more_val
        ]
    assert load_synth_pedes("val", cache_dir=tmp_path, **sizes).num_rows == 12

