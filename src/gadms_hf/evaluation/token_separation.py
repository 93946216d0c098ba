"""How well a model's GASS token scores tell planted caption noise from the words that describe the person.

SynthPEDES records which caption tokens are planted noise (`gadms_hf.data.synth`), so on it GASS can be
scored against the truth: AUROCs of attribute vs noise tokens, and the same for an occlusion reference (what
the model itself relies on), with the rank correlation of the two, and both on colour words alone (true vs
planted wrong colours: the words a small model grounds first). `scripts/bench_quality.py` reports these
for every trained GA-DMS model; they live here so that any evaluation (a notebook, the README's figures)
measures token separation the same way.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import torch
from numpy.typing import ArrayLike

from ..data.synth import COLOUR_WORDS, colour_noise_spans, token_attribute_flags, token_noise_flags
from ..modeling_gadms import GADMSModel
from ..processing_gadms import GADMSProcessor


def auroc(positive: ArrayLike, negative: ArrayLike) -> float:
    """Probability that a random positive scores above a random negative (ties count 1/2).

    Mann-Whitney U from average ranks: AUROC = (sum of positive ranks - n_p (n_p + 1) / 2) / (n_p n_n).
    """
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if positive.size == 0 or negative.size == 0:
        raise ValueError(f"AUROC needs both classes, got {positive.size} positives and {negative.size} negatives")
    values = np.concatenate([positive, negative])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < values.size:  # average rank (1-based) over each run of tied values
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    n_pos, n_neg = positive.size, negative.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Rank correlation (average ranks for ties); 0 when either side is constant."""
    def ranks(values: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]

    rx, ry = ranks(np.asarray(x, dtype=np.float64)), ranks(np.asarray(y, dtype=np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _occlusion_scores(model: GADMSModel, ids: torch.Tensor, attention_mask: torch.Tensor, eos: torch.Tensor,
                      image_embeds: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """How much the cosine with the own image drops when each word token alone becomes `<|mask|>` (B, T).

    A model-agnostic reference for GASS: whatever the model relies on shows up here, so if occlusion cannot
    tell noise from attributes either, the model has not learnt the difference and no token score can.
    """
    def cosine(input_ids: torch.Tensor) -> torch.Tensor:
        text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return torch.nn.functional.cosine_similarity(text, image_embeds, dim=-1)

    base = cosine(ids)
    drops = torch.zeros(ids.shape, dtype=torch.float32)
    for position in range(1, int(eos.max())):
        occluded, rows = ids.clone(), position < eos
        occluded[rows, position] = mask_token_id
        drops[:, position] = (base - cosine(occluded)).float().cpu() * rows.cpu()
    return drops


HISTOGRAM_BINS = 20


def token_separation(model: GADMSModel, processor: GADMSProcessor, corpus: datasets.Dataset, max_captions: int,
                     batch_size: int = 64) -> dict[str, Any]:
    """AUROCs of GASS scores (and of the occlusion reference) for planted noise tokens vs the rest.

    On up to `max_captions` noisy training captions. `auroc` (the target): attribute tokens (colour, garment,
    hair, bag, hat, gender words of the clean text, `token_attribute_flags`) are positives and planted noise
    tokens (`token_noise_flags`) negatives. `auroc_all_words` takes every non-noise word token as positive,
    function words included. `occlusion_auroc` is the same attribute-vs-noise AUROC for the occlusion drop.
    `histograms` holds the GASS score counts of attribute and noise tokens over `HISTOGRAM_BINS` bins of [0, 1].
    `colour_auroc` and `colour_occlusion_auroc` narrow both sides to colours: the true colour words against the
    wrong ones (`colour_noise_spans`), the one kind of noise a model that tells people apart by colour grounds
    (None when the scored captions hold no wrong colour).
    """
    noisy = [i for i, spans in enumerate(corpus["noise_spans"]) if spans][:max_captions]
    if not noisy:
        raise ValueError("the training corpus has no caption with planted noise (noise_rate=0?): no AUROC")
    model.eval()
    device = next(model.parameters()).device
    keys = ("attribute", "other", "noise", "occ_attr", "occ_noise", "all_gass", "all_occ", "colour", "occ_colour",
            "wrong_colour", "occ_wrong_colour")
    values: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    for begin in range(0, len(noisy), batch_size):
        rows = corpus.select(noisy[begin:begin + batch_size])[:]
        batch = processor(text=list(rows["caption"]), images=list(rows["image"]), return_tensors="pt")
        batch = {key: value.to(device) for key, value in batch.items()}
        ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            image_embeds = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        eos = model.eos_positions(ids)
        scores = model.gass(model.text_model, model.text_projection, ids, attention_mask, image_embeds,
                            eos).float().cpu().numpy()
        with torch.no_grad():
            drops = _occlusion_scores(model, ids, attention_mask, eos, image_embeds,
                                      model.config.mask_token_id).numpy()
        for i, (caption, spans) in enumerate(zip(rows["caption"], rows["noise_spans"])):
            words = slice(1, int(eos[i]))
            noise = np.asarray(token_noise_flags(processor.tokenizer, caption, spans), dtype=bool)[words]
            attribute = np.asarray(token_attribute_flags(processor.tokenizer, caption, spans), dtype=bool)[words]
            values["attribute"].append(scores[i, words][attribute])
            values["other"].append(scores[i, words][~attribute & ~noise])
            values["noise"].append(scores[i, words][noise])
            values["occ_attr"].append(drops[i, words][attribute])
            values["occ_noise"].append(drops[i, words][noise])
            values["all_gass"].append(scores[i, words])
            values["all_occ"].append(drops[i, words])
            colour = np.asarray(token_attribute_flags(processor.tokenizer, caption, spans, words=COLOUR_WORDS),
                                dtype=bool)[words]
            wrong = np.asarray(token_noise_flags(processor.tokenizer, caption, colour_noise_spans(caption, spans)),
                               dtype=bool)[words]
            for key, flags in (("colour", colour), ("wrong_colour", wrong)):
                values[key].append(scores[i, words][flags])
                values["occ_" + key].append(drops[i, words][flags])
    pooled = {key: np.concatenate(parts) for key, parts in values.items()}
    has_colours = pooled["colour"].size > 0 and pooled["wrong_colour"].size > 0
    return {
        "auroc": auroc(pooled["attribute"], pooled["noise"]),
        "auroc_all_words": auroc(np.concatenate([pooled["attribute"], pooled["other"]]), pooled["noise"]),
        "occlusion_auroc": auroc(pooled["occ_attr"], pooled["occ_noise"]),
        "colour_auroc": auroc(pooled["colour"], pooled["wrong_colour"]) if has_colours else None,
        "colour_occlusion_auroc": auroc(pooled["occ_colour"], pooled["occ_wrong_colour"]) if has_colours else None,
        # Does GASS follow what the model relies on, whatever the token? (Spearman over every word token.)
        "gass_occlusion_spearman": spearman(pooled["all_gass"], pooled["all_occ"]),
        "captions": len(noisy), "attribute_tokens": int(pooled["attribute"].size),
        "other_tokens": int(pooled["other"].size), "noise_tokens": int(pooled["noise"].size),
        "colour_tokens": int(pooled["colour"].size), "wrong_colour_tokens": int(pooled["wrong_colour"].size),
        "mean_attribute_score": float(pooled["attribute"].mean()), "mean_noise_score": float(pooled["noise"].mean()),
        "zero_score_share": float(np.mean(np.concatenate([pooled["attribute"], pooled["noise"]]) == 0)),
        # Counts over HISTOGRAM_BINS equal bins of [0, 1]: the score distributions a reader would rather see.
        "histograms": {kind: np.histogram(pooled[kind], bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0].tolist()
                       for kind in ("attribute", "noise")},
    }


__all__ = ["HISTOGRAM_BINS", "auroc", "spearman", "token_separation"]
