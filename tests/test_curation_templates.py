"""Caption templates: prompt, parsing, de-duplication, diversity selection, and the LLM loop."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from gadms_hf.curation.errors import CurationSetupError
from gadms_hf.curation.templates import (
    DEFAULT_TEMPLATES,
    IN_CONTEXT_EXAMPLES,
    TemplateArguments,
    TemplateWriter,
    build_templates,
    dedup_key,
    load_seed_captions,
    load_templates,
    parse_template,
    select_diverse,
    template_messages,
    write_templates,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory):
    """A random 2-layer Qwen2 chat model with a byte-level BPE tokenizer built offline."""
    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llm")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_prompt_has_instruction_three_examples_then_the_caption():
    messages = template_messages("A man in a red coat.")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert "Add no features" in messages[0]["content"]
    assert messages[-1]["content"].endswith("A man in a red coat.")
    # the worked examples must themselves be valid templates
    assert all(parse_template(template) == template for _, template in IN_CONTEXT_EXAMPLES)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "A [Gender] with [hair  style] wears a [colored top].",
            "A [gender] with [hair style] wears a [colored top].",
        ),
        (
            'Template: "The [gender] is [action] in a [colored top]."\nExtra line',
            "The [gender] is [action] in a [colored top].",
        ),
        (
            "\n\n  The person wears a [colored top] and [colored shoes].",
            "The person wears a [colored top] and [colored shoes].",
        ),
        ("A man wears a red coat and black shoes.", None),  # nothing abstracted
        ("A [gender] wears [colored top and black shoes.", None),  # unbalanced
        ("[gender] [top]", None),  # too short to be a sentence pattern
        ("", None),
    ],
)
def test_parse_template(answer, expected):
    assert parse_template(answer) == expected


def test_dedup_key_ignores_case_spacing_and_punctuation():
    assert dedup_key("A [gender] wears a [colored top].") == dedup_key("a  [Gender] wears a [colored top]")
    assert dedup_key("A [gender] wears a [colored top].") != dedup_key("A [gender] wears [colored shoes].")


def test_select_diverse_keeps_one_template_per_phrasing_family():
    families = {
        "wear": [
            f"The [gender] wears a [colored top] and [colored bottom] {x}." for x in ("today", "now", "here")
        ],
        "hair": [
            f"A [gender] with [hairstyle] is [action] {x} the road." for x in ("along", "across", "beside")
        ],
        "bag": [
            f"This pedestrian carries a [colored bag] on the {x} shoulder." for x in ("left", "right", "back")
        ],
    }
    templates = [t for group in families.values() for t in group]
    picked = select_diverse(templates, k=3, seed=0)
    assert len(picked) == 3
    assert sorted(next(f for f, group in families.items() if t in group) for t in picked) == [
        "bag",
        "hair",
        "wear",
    ]
    assert select_diverse(templates, k=3, seed=0) == picked  # reproducible
    assert select_diverse(templates[:2], k=5) == templates[:2]  # fewer than k: all, in order
    with pytest.raises(ValueError, match="k must be"):
        select_diverse(templates, k=0)


def test_build_templates_counts_what_it_dropped():
    answers = [
        "A [gender] wears a [colored top].",
        "a [gender] wears a [colored top]",  # duplicate after normalisation
        "No template here.",
        "The [gender] is [action] with a [colored bag].",
    ]
    templates, stats = build_templates(answers, num_templates=10)
    assert templates == [
        "A [gender] wears a [colored top].",
        "The [gender] is [action] with a [colored bag].",
    ]
    assert stats == {"answers": 4, "unusable": 1, "duplicates": 1, "unique": 2, "kept": 2}


def test_seed_captions_from_text_and_benchmark_json(tmp_path):
    text = tmp_path / "seeds.txt"
    text.write_text("A man in a coat.\n\n  A woman   in a dress. \n")
    assert load_seed_captions(str(text)) == ["A man in a coat.", "A woman in a dress."]
    benchmark = tmp_path / "reid_raw.json"
    benchmark.write_text(
        json.dumps(
            [
                {"split": "train", "captions": ["train one", "train two"], "file_path": "a.jpg", "id": 1},
                {"split": "test", "captions": ["test one"], "file_path": "b.jpg", "id": 2},
            ]
        )
    )
    assert load_seed_captions(str(benchmark)) == ["train one", "train two"]
    assert load_seed_captions(str(benchmark), split="test") == ["test one"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": 3}]))
    with pytest.raises(CurationSetupError, match="record 0"):
        load_seed_captions(str(bad))
    with pytest.raises(CurationSetupError, match="no seed caption"):
        load_seed_captions(str(benchmark), split="val")


def test_load_templates_forms_and_errors(tmp_path):
    assert load_templates(None) == list(DEFAULT_TEMPLATES)
    assert all(parse_template(t) == t for t in DEFAULT_TEMPLATES)
    listed = tmp_path / "t.json"
    listed.write_text(json.dumps({"templates": ["A [gender] wears a [colored top]."], "model": "x"}))
    assert load_templates(str(listed)) == ["A [gender] wears a [colored top]."]
    plain = tmp_path / "t.txt"
    plain.write_text("A [gender] wears a [colored top].\n\nThe [gender] is [action].\n")
    assert len(load_templates(str(plain))) == 2
    plain.write_text("A [gender] wears a [colored top].\nno placeholder at all\n")
    with pytest.raises(CurationSetupError, match="no \\[placeholder\\]"):
        load_templates(str(plain))
    with pytest.raises(CurationSetupError, match="does not exist"):
        load_templates(str(tmp_path / "missing.json"))


def test_template_writer_runs_the_chat_model_in_batches(tiny_llm_dir):
    writer = TemplateWriter(tiny_llm_dir, device="cpu")
    captions = ["A man in a red coat.", "A woman with a long black ponytail and a white bag.", "A child."]
    answers = writer.rewrite(captions, batch_size=2, max_new_tokens=6)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert writer.tokenizer.padding_side == "left"


def test_write_templates_end_to_end(tiny_llm_dir, tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(f"A person number {i} in a coat." for i in range(5)))
    out = tmp_path / "templates.json"
    args = TemplateArguments(
        seed_captions=str(seeds),
        output_file=str(out),
        template_model=tiny_llm_dir,
        max_seed_captions=3,
        max_new_tokens=4,
        device="cpu",
    )
    report = write_templates(args)
    saved = json.loads(out.read_text())
    assert saved["answers"] == 3  # max_seed_captions sampled
    assert saved["answers"] == saved["unusable"] + saved["duplicates"] + saved["unique"]
    assert saved["templates"] == report["templates"]


def test_unloadable_template_model_is_one_clear_error(tmp_path):
    with pytest.raises(
        CurationSetupError, match="cannot load the template model tokenizer 'no-such-org/no-such-llm'"
    ):
        TemplateWriter("no-such-org/no-such-llm", device="cpu")
