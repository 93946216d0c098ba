"""SynthPEDES noise profiles: the default stays what it was; "confusable" plants exact, contradicting
attribute words at the configured rate."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re

import numpy as np
import pytest

from gadms_hf.data.corpus import load_corpus
from gadms_hf.data.synth import (
    ATTRIBUTE_WORDS,
    COLOUR_WORDS,
    NOISE_PROFILES,
    SynthPedesConfig,
    colour_noise_spans,
    generate_examples,
    sample_identities,
    synth_config_fields,
    token_attribute_flags,
    token_noise_flags,
    write_caption,
)
from gadms_hf.data.synth.vocabulary import BAG_WORDS as _BAG_WORDS
from gadms_hf.data.synth.vocabulary import BOTTOM_WORDS as _BOTTOM_WORDS
from gadms_hf.data.synth.vocabulary import COLOUR_PALETTES as _COLOUR_PALETTES
from gadms_hf.data.synth.vocabulary import HAT_WORDS as _HAT_WORDS
from gadms_hf.data.synth.vocabulary import SHOE_WORDS as _SHOE_WORDS
from gadms_hf.data.synth.vocabulary import TOP_WORDS as _TOP_WORDS
from gadms_hf.training.arguments import DataArguments
from gadms_hf.training.components import synth_overrides

SMALL = dict(num_train_ids=40, num_test_ids=2, images_per_id=1, test_images_per_id=1, seed=11)
CANONICAL = {"gray": "grey", "blond": "blonde"}
ADDED = re.compile(r"(carrying|wearing) (an?) (\w+) (.+)")
GARMENT_TYPES = {
    "top_type": {noun: kind for kind, nouns in _TOP_WORDS.items() for noun in nouns},
    "bottom_type": {noun: kind for kind, nouns in _BOTTOM_WORDS.items() for noun in nouns},
}
ITEM_TYPES = {
    "bag": {noun: kind for kind, nouns in _BAG_WORDS.items() for noun in nouns},
    "hat": {noun: kind for kind, nouns in _HAT_WORDS.items() for noun in nouns},
}
# The item a colour word describes, by the noun that follows it ("red rucksack").
NOUN_OF = {
    **{noun: "top_colour" for noun in GARMENT_TYPES["top_type"]},
    **{noun: "bottom_colour" for noun in GARMENT_TYPES["bottom_type"]},
    **{noun: "shoes_colour" for noun in _SHOE_WORDS},
    **{noun: "bag_colour" for noun in ITEM_TYPES["bag"]},
    **{noun: "hat_colour" for noun in ITEM_TYPES["hat"]},
}


def rows(config: SynthPedesConfig, split: str = "train") -> list[dict]:
    return [row for _, row in generate_examples(config, split)]


def canonical(colour: str) -> str:
    return CANONICAL.get(colour, colour)


def coloured_item(caption: str, start: int, end: int) -> str | None:
    """The attribute of the colour word at [start, end): the item named right after it, or a top named
    before it ("a jacket in purple"); None for anything else (the hair)."""
    for noun in sorted(NOUN_OF, key=len, reverse=True):
        if re.match(rf" {re.escape(noun)}\b", caption[end:]):
            return NOUN_OF[noun]
    if any(caption[:start].endswith(f"{noun} in ") for noun in GARMENT_TYPES["top_type"]):
        return "top_colour"
    return None


def restore(caption: str, spans: list[list[int]]) -> tuple[re.Pattern, list[str]]:
    """Undo the noise using only the spans: drop added clauses with their ", " or " She is ... ." wrapper
    (last first, so that a clause added to an added sentence goes before it) and turn replaced words into
    groups. Returns the pattern the clean caption must match (an article may turn into the other) and the
    replaced words, in order."""
    replaced: list[tuple[int, int]] = []
    for start, end in sorted(spans, reverse=True):
        if not ADDED.fullmatch(caption[start:end]):
            replaced.insert(0, (start, end))
            continue
        if caption[start - 2 : start] == ", ":
            caption, cut = caption[: start - 2] + caption[end:], end - start + 2
        else:
            lead = re.search(r" (She|He) is $", caption[:start])
            assert lead is not None and caption[end] == ".", (caption, caption[start:end])
            caption, cut = caption[: lead.start()] + caption[end + 1 :], end + 1 - lead.start()
        replaced = [(a - cut, b - cut) for a, b in replaced]  # the words found so far lie after the cut
    pattern, cursor = "", 0
    for start, end in [*replaced, (len(caption), len(caption))]:
        pattern += "(?:an?|An?)".join(map(re.escape, re.split(r"\b(?:an?|An?)\b", caption[cursor:start])))
        pattern += "(.+?)" if start < len(caption) else ""
        cursor = end
    return re.compile(pattern), [caption[a:b] for a, b in replaced]


@pytest.fixture(scope="module")
def confusable() -> tuple[list[dict], list[dict], list]:
    """Every train caption noisy with the confusable profile, the same captions clean, and the identities."""
    noisy = rows(SynthPedesConfig(**SMALL, noise_rate=1.0, noise_profile="confusable"))
    clean = rows(SynthPedesConfig(**SMALL, noise_rate=0.0, noise_profile="confusable"))
    return noisy, clean, sample_identities(SynthPedesConfig(**SMALL))["train"]


def test_default_profile_is_unchanged():
    """Captions and spans pinned from the code before noise profiles existed (commit bbf9f7a)."""
    digests = {
        1.0: "0238311c84cae7c5f61a4418e1442d27d33a6efec868983c9cb6c6c75ceca5dc",
        0.5: "6615491dfd0c19cc8f29ce509aea95a559f5c05f99918274302ea7eaeb8606e2",
    }
    for rate, digest in digests.items():
        for config in (SynthPedesConfig(**SMALL, noise_rate=rate),
                       SynthPedesConfig(**SMALL, noise_rate=rate, noise_profile="default")):
            pairs = [[row["caption"], row["noise_spans"]] for row in rows(config)]
            assert hashlib.sha256(json.dumps(pairs).encode()).hexdigest() == digest, rate
    first = rows(SynthPedesConfig(**SMALL, noise_rate=1.0))[:3]
    assert [(row["caption"], row["noise_spans"]) for row in first] == [
        (
            "A young woman, a beige hat, black trainers, a red rucksack, a white t-shirt, long blond hair, "
            "a pair of blue denim jeans.",
            [[62, 67], [82, 87]],
        ),
        (
            "This is a woman with long black hair. She is wearing a blue short-sleeved shirt, blue jeans and "
            "black shoes, carrying a red rucksack, pushing a bicycle. She also wears a beige sun hat.",
            [[134, 151]],
        ),
        (
            "The gentleman in a jacket in purple and a pair of green shorts. His hair is medium-length and "
            "black. He is wearing blue trainers, walking on a busy street.",
            [[130, 154]],
        ),
    ]


def test_confusable_spans_are_exact_and_removing_them_gives_the_clean_caption(confusable, tokenizer):
    noisy, clean, _ = confusable
    counts = []
    for row, reference in zip(noisy, clean):
        caption, spans = row["caption"], row["noise_spans"]
        counts.append(len(spans))
        for start, end in spans:
            text = caption[start:end]
            assert text == text.strip() and not caption[start - 1].isalnum(), (caption, text)
            assert not caption[end : end + 1].isalnum(), (caption, text)
        pattern, replaced = restore(caption, spans)
        match = pattern.fullmatch(reference["caption"])
        assert match is not None, (caption, reference["caption"])
        for wrong, truth in zip(replaced, match.groups()):
            assert wrong != truth and len(truth.split()) <= 2, (caption, wrong, truth)
        # Token truth: the noise flags are exactly the planted words, and none of them is an attribute.
        ids = tokenizer(caption)["input_ids"]
        noise = token_noise_flags(tokenizer, caption, spans)
        attribute = token_attribute_flags(tokenizer, caption, spans)
        planted = [token for token, flag in zip(ids, noise) if flag]
        words = [tokenizer(caption[a:b], add_special_tokens=False)["input_ids"] for a, b in spans]
        assert planted == [token for word in words for token in word], caption
        assert not any(a and n for a, n in zip(attribute, noise)), caption
    # One item (70%) or two (30%) per noisy caption.
    assert set(counts) == {1, 2} and 0.5 < counts.count(1) / len(counts) < 0.9, counts


def test_confusable_words_come_from_the_vocabulary_and_contradict_the_identity(confusable):
    noisy, clean, people = confusable
    kinds = {"colour": 0, "garment": 0, "absent": 0}
    for row, reference in zip(noisy, clean):
        person = people[row["person_id"]]
        pattern, replaced = restore(row["caption"], row["noise_spans"])
        truths = iter(pattern.fullmatch(reference["caption"]).groups())
        for start, end in row["noise_spans"]:
            text = row["caption"][start:end]
            added = ADDED.fullmatch(text)
            if added:  # a bag or hat of the vocabulary that the person does not have
                verb, _, colour, noun = added.groups()
                item = "bag" if verb == "carrying" else "hat"
                assert noun in ITEM_TYPES[item], text
                assert canonical(colour) in _COLOUR_PALETTES[f"{item}_colour"], text
                assert getattr(person, f"{item}_type") == "none", (text, person)
                assert all(word in ATTRIBUTE_WORDS for word in f"{colour} {noun}".split())
                kinds["absent"] += 1
                continue
            truth = next(truths)
            assert all(word in ATTRIBUTE_WORDS for word in text.split()), text
            if canonical(text) in {c for palette in _COLOUR_PALETTES.values() for c in palette}:
                # a wrong colour, of its palette, for an item the person wears or carries (never the hair)
                attribute = coloured_item(row["caption"], start, end)
                assert attribute is not None, row["caption"]
                assert canonical(text) in _COLOUR_PALETTES[attribute], row["caption"]
                assert canonical(text) != canonical(truth) == getattr(person, attribute), (text, truth)
                kinds["colour"] += 1
            else:  # a garment noun of another type of the same slot
                slot = next(s for s, nouns in GARMENT_TYPES.items() if truth in nouns)
                assert GARMENT_TYPES[slot][truth] == getattr(person, slot), (truth, person)
                assert text in GARMENT_TYPES[slot], text
                assert GARMENT_TYPES[slot][text] != getattr(person, slot), (text, person)
                assert "skirt" not in {GARMENT_TYPES[slot][text], getattr(person, slot)}  # grammar stays
                kinds["garment"] += 1
    assert min(kinds.values()) >= 10, kinds


def test_confusable_rate_is_honoured_and_only_train_is_noisy():
    config = SynthPedesConfig(num_train_ids=200, num_test_ids=20, images_per_id=1, test_images_per_id=1,
                              captions_per_image=2, noise_rate=0.3, noise_profile="confusable")
    train = rows(config)
    share = sum(bool(row["noise_spans"]) for row in train) / len(train)
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(train)), share
    # The same captions are noisy as with the default profile: the profile changes only what is planted.
    default = rows(dataclasses.replace(config, noise_profile="default"))
    assert [bool(r["noise_spans"]) for r in train] == [bool(r["noise_spans"]) for r in default]
    clean = dataclasses.replace(config, num_train_ids=50, noise_rate=0.0)
    assert not any(row["noise_spans"] for row in rows(clean))
    every = dataclasses.replace(config, num_train_ids=5, noise_rate=1.0)
    for split in ("test", "val"):
        assert not any(row["noise_spans"] for row in rows(every, split)), split


def test_noise_profile_is_a_config_field_everywhere(tmp_path):
    assert "noise_profile" in synth_config_fields() and NOISE_PROFILES == ("default", "confusable")
    for bad in ("hallucinated", None):
        with pytest.raises(ValueError, match="noise_profile"):
            SynthPedesConfig(noise_profile=bad)
    with pytest.raises(ValueError, match="noise_profile"):
        load_corpus("synth-pedes", split="train", cache_dir=tmp_path, noise_profile="Confusable")
    person = sample_identities(SynthPedesConfig(**SMALL))["train"][0]
    with pytest.raises(ValueError, match="noise_profile"):
        write_caption(person, np.random.default_rng(0), noise_profile="background")
    small = dict(num_train_ids=4, num_test_ids=2, images_per_id=1, test_images_per_id=1, noise_rate=1.0)
    built = load_corpus("synth-pedes", split="train", cache_dir=tmp_path, noise_profile="confusable", **small)
    expected = rows(SynthPedesConfig(**small, noise_profile="confusable"))
    assert built["caption"] == [r["caption"] for r in expected]
    assert built["noise_spans"] == [r["noise_spans"] for r in expected]
    # The default profile, built in the same cache, is another entry with its own captions.
    default = load_corpus("synth-pedes", split="train", cache_dir=tmp_path, **small)
    assert default["caption"] == [r["caption"] for r in rows(SynthPedesConfig(**small))] != built["caption"]
    # The training CLI's --synth_config reaches it as a plain string.
    overrides = synth_overrides(DataArguments(synth_config="noise_profile=confusable,noise_rate=0.4"))
    assert overrides == {"noise_profile": "confusable", "noise_rate": 0.4}


def test_colour_flags_pick_the_true_and_the_wrong_colour_words(tokenizer, confusable):
    """The colour AUROC's two sides: colour words outside every span, and the spans that are one colour word."""
    caption = "A woman wearing a red jacket and black trousers, carrying a blue rucksack."
    wrong = [caption.index("red"), caption.index("red") + 3]
    absent = [caption.index("carrying"), len(caption) - 1]
    assert colour_noise_spans(caption, [wrong, absent]) == [wrong]
    ids = tokenizer(caption, padding="max_length", max_length=77, truncation=True)["input_ids"]

    def words(flags: list[bool]) -> list[str]:
        return [tokenizer.decode([ids[i]]).strip() for i, flag in enumerate(flags) if flag]

    assert words(token_attribute_flags(tokenizer, caption, [wrong, absent], words=COLOUR_WORDS)) == ["black"]
    assert words(token_noise_flags(tokenizer, caption, colour_noise_spans(caption, [wrong, absent]))) == ["red"]
    assert COLOUR_WORDS <= ATTRIBUTE_WORDS
    with pytest.raises(ValueError, match="not a \\[start, end\\) range"):
        colour_noise_spans(caption, [[5, 500]])
    # On generated confusable rows every span it leaves out is a clause (several words) or a garment noun: no
    # wrong colour is missed (a colour spelt in a way COLOUR_WORDS lacks would land here).
    nouns = {phrase for table in (_TOP_WORDS, _BOTTOM_WORDS) for options in table.values() for phrase in options}
    picked = [row["caption"][start:end] for row in confusable[0]
              for start, end in colour_noise_spans(row["caption"], row["noise_spans"])]
    others = [row["caption"][start:end] for row in confusable[0] for start, end in row["noise_spans"]
              if [start, end] not in colour_noise_spans(row["caption"], row["noise_spans"])]
    assert picked and others
    assert all(" " in text.strip() or text.lower() in nouns for text in others), [
        text for text in others if " " not in text.strip() and text.lower() not in nouns]
