"""Caption templates: benchmark captions rewritten by an instruction LLM into attribute patterns.

WebPerson's captions follow templates so that two captions of one image differ in wording and
order while covering the same attributes (docs/method.md §10.3). An instruction LLM rewrites seed
captions (a benchmark's train split) into templates such as "A [gender] with [hairstyle] wears
a [colored top] ..."; the outputs are parsed, de-duplicated, and a diverse subset is kept.

Diversity selection (our choice, documented): each template becomes a hashed TF-IDF vector of
its word unigrams and bigrams (a placeholder counts as one word), these are clustered with
spherical k-means into `num_templates` clusters, and the member closest to each centroid is
kept. The paper clusters sentence embeddings; n-gram vectors need no second model, are exactly
reproducible, and capture what matters here: sentence structure and placeholder order.
"""

from __future__ import annotations

import json
import os
import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import CurationSetupError
from .hf_loading import load_pretrained, resolve_device, resolve_dtype

PLACEHOLDER = re.compile(r"\[([^\[\]]{1,40})\]")

TEMPLATE_INSTRUCTION = (
    "You turn descriptions of pedestrians into reusable templates. Replace every concrete attribute "
    "(gender, age, hairstyle, each garment together with its colour, footwear, bags, accessories, "
    "objects held, action) by a short placeholder in square brackets, such as [colored top], "
    "[colored bottom], [colored shoes] or [hairstyle]. Keep the sentence structure and every other word. "
    "Add no features: each placeholder must stand for something the description mentions, and nothing "
    "the description does not mention may appear. Answer with the template alone, on one line."
)

IN_CONTEXT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "The man is wearing a dark blue jacket over a grey hooded sweatshirt, black trousers and white "
        "running shoes. He has short black hair and carries a black backpack.",
        "The [gender] is wearing a [colored outerwear] over a [colored top], [colored bottom] and "
        "[colored shoes]. [pronoun] has [hairstyle] and carries a [colored bag].",
    ),
    (
        "A young woman with long brown hair tied in a ponytail. She wears a white T-shirt with a red logo, "
        "a knee-length black skirt and brown sandals, and holds a phone in her right hand.",
        "A [age] [gender] with [hairstyle]. [pronoun] wears a [colored top] with [pattern], a [colored bottom] "
        "and [colored shoes], and holds [held object].",
    ),
    (
        "This person is walking forward. The person wears glasses, a yellow short-sleeved shirt, grey "
        "shorts and black sneakers.",
        "This person is [action]. The person wears [accessory], a [colored top], [colored bottom] and "
        "[colored shoes].",
    ),
)

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "A [gender] with [hairstyle] is wearing a [colored top], [colored bottom] and [colored shoes].",
    "The [gender] wears a [colored outerwear] over a [colored top], with [colored bottom] and "
    "[colored shoes], and carries a [colored bag].",
    "This [age] [gender] has [hairstyle] and is dressed in a [colored top] and [colored bottom]; "
    "[pronoun] is [action].",
    "A person in a [colored top] and [colored bottom], wearing [colored shoes] and [accessory].",
    "The pedestrian is a [gender] with [hairstyle], wearing a [colored top] with [pattern], "
    "[colored bottom] and [colored shoes].",
    "A [gender] [action], dressed in a [colored outerwear], [colored bottom] and [colored shoes], "
    "with a [colored bag].",
    "A [gender] with [hairstyle] and [headwear], in a [colored top], [colored bottom] and [colored shoes].",
    "The [gender] has [hairstyle]. [pronoun] wears a [colored top], [colored bottom] and [colored shoes], "
    "and holds [held object].",
    "A [age] [gender] wearing [accessory], a [colored dress] and [colored shoes], [action].",
    "This pedestrian wears a [colored top] tucked into [colored bottom], [colored shoes], and carries "
    "a [colored bag].",
    "A [gender] in a [colored outerwear] and [colored bottom] is [action]; [pronoun] has [hairstyle] "
    "and wears [colored shoes].",
    "The person, a [gender] with [hairstyle], is wearing a [colored top], [colored bottom] and "
    "[colored shoes].",
)


@dataclass
class TemplateArguments:
    """Arguments of `write_templates` (the `templates` command of scripts/curate_webperson.py)."""

    seed_captions: str = field(
        metadata={"help": "captions to rewrite: a .txt (one a line) or a benchmark .json (CUHK-PEDES style)"}
    )
    output_file: str = field(default="templates.json", metadata={"help": "where to write the templates"})
    template_model: str = field(
        default="Qwen/Qwen2.5-72B-Instruct", metadata={"help": "instruction LLM (transformers causal LM)"}
    )
    split: str = field(default="train", metadata={"help": "benchmark .json split to take captions from"})
    max_seed_captions: int = field(
        default=5000, metadata={"help": "rewrite at most this many seed captions (random sample); 0 = all"}
    )
    num_templates: int = field(default=1000, metadata={"help": "keep this many diverse templates"})
    template_batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    max_new_tokens: int = field(default=128, metadata={"help": "generation limit per template"})
    device: str = field(
        default="auto", metadata={"help": "'auto' (all visible GPUs via device_map, else CPU) or a device"}
    )
    dtype: str = field(default="auto", metadata={"help": "auto | bfloat16 | float16 | float32"})
    seed: int = field(default=0, metadata={"help": "seed for caption sampling and k-means"})


def load_seed_captions(path: str, split: str = "train") -> list[str]:
    """Captions from a text file (one a line) or a benchmark JSON: a list of strings, or of records
    with `captions` (and `split`, filtered to `split`) as in CUHK-PEDES, ICFG-PEDES and RSTPReid."""
    if not os.path.isfile(path):
        raise CurationSetupError(f"the seed caption file {path!r} does not exist")
    if not path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            captions = [line.strip() for line in handle if line.strip()]
    else:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
        if not isinstance(records, list):
            raise CurationSetupError(f"{path!r} must hold a JSON list, got {type(records).__name__}")
        captions = []
        for i, record in enumerate(records):
            if isinstance(record, str):
                captions.append(record)
            elif isinstance(record, dict) and isinstance(record.get("captions"), list):
                if record.get("split", split) == split:
                    captions += [str(c) for c in record["captions"]]
            else:
                raise CurationSetupError(
                    f"{path!r} record {i} is neither a caption string nor an object with a 'captions' list"
                )
    captions = [" ".join(c.split()) for c in captions if c.strip()]
    if not captions:
        raise CurationSetupError(f"no seed caption found in {path!r} (split {split!r})")
    return captions


def template_messages(caption: str) -> list[dict[str, str]]:
    """The chat for one rewrite: instruction, three worked examples, then the caption."""
    messages = [{"role": "system", "content": TEMPLATE_INSTRUCTION}]
    for example, template in IN_CONTEXT_EXAMPLES:
        messages.append({"role": "user", "content": f"Description: {example}"})
        messages.append({"role": "assistant", "content": template})
    messages.append({"role": "user", "content": f"Description: {caption}"})
    return messages


def parse_template(text: str, max_words: int = 80) -> str | None:
    """The template in an LLM answer, cleaned, or None when the answer holds no usable template.

    Takes the first non-empty line, drops a "Template:" label and quotes, lower-cases the
    placeholders and requires at least one placeholder, balanced brackets and 4 to `max_words` words.
    """
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(template\s*:\s*)", "", line, flags=re.IGNORECASE).strip().strip("\"'`").strip()
    line = " ".join(line.split())
    if not PLACEHOLDER.search(line) or line.count("[") != line.count("]"):
        return None
    if PLACEHOLDER.sub("", line).count("[") or not 4 <= len(line.split()) <= max_words:
        return None
    return PLACEHOLDER.sub(lambda m: "[" + " ".join(m.group(1).lower().split()) + "]", line)


def dedup_key(template: str) -> str:
    """Case, spacing and punctuation do not make two templates different."""
    return " ".join(re.sub(r"[^\w\[\]\s]", " ", template.lower()).split())


def _words(template: str) -> list[str]:
    return re.findall(r"\[[^\]]+\]|[a-z']+", template.lower())


def ngram_vectors(templates: list[str], dim: int = 512) -> np.ndarray:
    """L2-normalised hashed TF-IDF vectors of word unigrams and bigrams, shape (len(templates), dim)."""
    counts = np.zeros((len(templates), dim), dtype=np.float32)
    for row, template in enumerate(templates):
        words = _words(template)
        for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            counts[row, zlib.crc32(gram.encode()) % dim] += 1.0
    document_frequency = (counts > 0).sum(axis=0)
    idf = np.log((1.0 + len(templates)) / (1.0 + document_frequency)) + 1.0
    vectors = counts * idf
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _assign(vectors: np.ndarray, centers: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    labels = np.empty(len(vectors), dtype=np.int64)
    best = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        sims = vectors[start : start + chunk] @ centers.T
        labels[start : start + chunk] = sims.argmax(axis=1)
        best[start : start + chunk] = sims.max(axis=1)
    return labels, best


def select_diverse(templates: list[str], k: int, seed: int = 0, iterations: int = 25) -> list[str]:
    """`k` representative templates: spherical k-means (k-means++ start) on n-gram vectors, the member
    nearest each centroid, returned in input order. All of them when there are at most `k`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(templates) <= k:
        return list(templates)
    vectors = ngram_vectors(templates)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(templates)))]
    closest = vectors @ vectors[chosen[0]]
    for _ in range(1, k):
        weights = np.clip(1.0 - closest, 0.0, None) ** 2
        if weights.sum() <= 0:  # fewer distinct vectors than k: fill with unused rows
            chosen.append(int(np.setdiff1d(np.arange(len(templates)), chosen)[0]))
        else:
            chosen.append(int(rng.choice(len(templates), p=weights / weights.sum())))
        closest = np.maximum(closest, vectors @ vectors[chosen[-1]])
    centers = vectors[chosen].copy()
    labels = None
    for _ in range(iterations):
        new_labels, _ = _assign(vectors, centers)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for cluster in range(k):
            members = vectors[labels == cluster]
            if len(members):
                mean = members.sum(axis=0)
                centers[cluster] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    sims = (vectors * centers[labels]).sum(axis=1)
    picks = set()
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        if len(members):
            picks.add(int(members[np.argmax(sims[members])]))
    return [templates[i] for i in sorted(picks)]


def build_templates(
    outputs: list[str], num_templates: int, seed: int = 0
) -> tuple[list[str], dict[str, int]]:
    """Parse LLM answers, drop unusable ones and duplicates, keep a diverse `num_templates`."""
    stats = Counter(answers=len(outputs))
    unique: dict[str, str] = {}
    for text in outputs:
        template = parse_template(text)
        if template is None:
            stats["unusable"] += 1
        elif dedup_key(template) in unique:
            stats["duplicates"] += 1
        else:
            unique[dedup_key(template)] = template
    selected = select_diverse(list(unique.values()), num_templates, seed=seed) if unique else []
    stats["unique"] = len(unique)
    stats["kept"] = len(selected)
    return selected, {key: stats[key] for key in ("answers", "unusable", "duplicates", "unique", "kept")}


def load_templates(path: str | None) -> list[str]:
    """Templates from a .json (a list, or {"templates": [...]}) or a text file (one a line);
    `None` gives the package's hand-written `DEFAULT_TEMPLATES`."""
    if path is None:
        return list(DEFAULT_TEMPLATES)
    if not os.path.isfile(path):
        raise CurationSetupError(f"the templates file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        if path.endswith(".json"):
            data = json.load(handle)
            templates = data.get("templates") if isinstance(data, dict) else data
            if not isinstance(templates, list):
                raise CurationSetupError(
                    f"{path!r} must hold a JSON list of templates or {{'templates': [...]}}"
                )
        else:
            templates = [line for line in handle]
    templates = [" ".join(str(t).split()) for t in templates if str(t).strip()]
    bad = [t for t in templates if not PLACEHOLDER.search(t)]
    if bad:
        raise CurationSetupError(f"{len(bad)} template(s) in {path!r} have no [placeholder], e.g. {bad[0]!r}")
    if not templates:
        raise CurationSetupError(f"the templates file {path!r} holds no template")
    return templates


class TemplateWriter:
    """An instruction LLM (transformers causal LM with a chat template) that rewrites captions."""

    def __init__(self, model_name: str, device: str = "auto", dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = load_pretrained(
            AutoTokenizer.from_pretrained, model_name, "template model tokenizer"
        )
        if self.tokenizer.chat_template is None:
            raise CurationSetupError(f"the template model {model_name!r} has no chat template")
        placement = resolve_device(device)
        # "auto" spreads a 72B model over every visible GPU; an explicit device keeps it on that one.
        device_map = "auto" if device == "auto" and placement.startswith("cuda") else placement
        self.model = load_pretrained(
            AutoModelForCausalLM.from_pretrained,
            model_name,
            "template model",
            dtype=resolve_dtype(dtype, placement),
            device_map=device_map,
        ).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.inference_mode()
    def rewrite(self, captions: list[str], batch_size: int = 8, max_new_tokens: int = 128) -> list[str]:
        """One raw answer per caption (greedy decoding: a template is a deterministic rewrite)."""
        answers = []
        for start in tqdm(range(0, len(captions), batch_size), desc="templates", unit="batch"):
            prompts = [
                self.tokenizer.apply_chat_template(
                    template_messages(c), add_generation_prompt=True, tokenize=False
                )
                for c in captions[start : start + batch_size]
            ]
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = inputs.to(self.model.device)
            generated = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            answers += self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return answers


def write_templates(args: TemplateArguments) -> dict[str, Any]:
    """Seed captions -> LLM rewrites -> parsed, de-duplicated, diverse templates in `args.output_file`."""
    if args.num_templates < 1:
        raise CurationSetupError(f"num_templates must be >= 1, got {args.num_templates}")
    captions = load_seed_captions(args.seed_captions, args.split)
    if 0 < args.max_seed_captions < len(captions):
        captions = random.Random(args.seed).sample(captions, args.max_seed_captions)
    writer = TemplateWriter(args.template_model, device=args.device, dtype=args.dtype)
    answers = writer.rewrite(
        captions, batch_size=args.template_batch_size, max_new_tokens=args.max_new_tokens
    )
    templates, stats = build_templates(answers, args.num_templates, seed=args.seed)
    report = {
        "templates": templates,
        "model": args.template_model,
        "seed_captions": args.seed_captions,
        **stats,
    }
    directory = os.path.dirname(os.path.abspath(args.output_file))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{args.output_file}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
    os.replace(tmp, args.output_file)
    return report


__all__ = [
    "TemplateArguments",
    "TemplateWriter",
    "write_templates",
    "load_seed_captions",
    "template_messages",
    "parse_template",
    "dedup_key",
    "ngram_vectors",
    "select_diverse",
    "build_templates",
    "load_templates",
    "DEFAULT_TEMPLATES",
    "IN_CONTEXT_EXAMPLES",
    "TEMPLATE_INSTRUCTION",
    "PLACEHOLDER",
]
