"""Our `occlusion_taylor` token score: the first-order effect of masking each token, checked against the
derivative taken by finite differences, and how it behaves inside a training step."""

from __future__ import annotations

import copy

import pytest
import torch

from gadms_hf import GADMSConfig, GADMSModel
from gadms_hf.gass import GASSScorer
from gadms_hf.occlusion_taylor import OcclusionTaylorScorer, masked_minmax

from .conftest import random_images

CAPTIONS = [
    "A woman with long black hair wears a red jacket, blue jeans and white shoes.",
    "A man in a grey hoodie.",
    "backpack",
    "",
]


def _model(**overrides) -> GADMSModel:
    torch.manual_seed(0)
    fields = {"num_identities": 8, "token_score": "occlusion_taylor", "gass_normalization": "sample", **overrides}
    config = GADMSConfig.tiny(**fields)
    return GADMSModel(config).train()


def _inputs(processor, captions: list[str] = CAPTIONS) -> dict[str, torch.Tensor]:
    encoded = processor(text=captions, images=random_images(len(captions)), return_tensors="pt")
    return {key: encoded[key] for key in ("pixel_values", "input_ids", "attention_mask")}


def _cosine_with_token_moved(model: GADMSModel, inputs, image_embeds, row: int, position: int, step: float):
    """The caption's cosine with its image when token `position` moves `step` of the way towards `<|mask|>`."""
    embedding = model.text_model.embeddings.token_embedding
    mask_vector = embedding.weight[model.config.mask_token_id]

    def move(module, args, output):
        output = output.clone()
        output[row, position] = output[row, position] + step * (mask_vector - output[row, position])
        return output

    hook = embedding.register_forward_hook(move)
    try:
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    finally:
        hook.remove()
    return torch.nn.functional.cosine_similarity(text.pooler_output[row], image_embeds[row], dim=-1)


def test_masking_effect_is_the_derivative_towards_the_mask_in_float64(processor):
    model = _model().double().eval()
    inputs = _inputs(processor, CAPTIONS[:2])
    inputs["pixel_values"] = inputs["pixel_values"].double()
    with torch.no_grad():
        image_embeds = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    eos = model.eos_positions(inputs["input_ids"])
    effect = model.gass(model.text_model, model.text_projection, inputs["input_ids"], inputs["attention_mask"],
                        image_embeds, eos, scaled=False)
    step = 1e-6
    checked = 0
    with torch.no_grad():
        for row in range(2):
            for position in range(1, int(eos[row])):
                forward = _cosine_with_token_moved(model, inputs, image_embeds, row, position, step)
                backward = _cosine_with_token_moved(model, inputs, image_embeds, row, position, -step)
                # moving towards the mask changes S by -effect per unit step, to first order
                expected = -(forward - backward) / (2 * step)
                torch.testing.assert_close(effect[row, position], expected, rtol=1e-6, atol=1e-9)
                checked += 1
    assert checked >= 10
    scores = model.gass(model.text_model, model.text_projection, inputs["input_ids"], inputs["attention_mask"],
                        image_embeds, eos)
    assert torch.all(scores[:, 0] == 0) and torch.all(scores[torch.arange(2), eos] == 0)


def test_masked_minmax_per_row_and_over_the_batch():
    x = torch.tensor([[9.0, -1.0, 3.0, 1.0, 9.0], [0.0, 2.0, 2.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    valid = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    per_row = masked_minmax(x, valid, per_row=True)
    torch.testing.assert_close(per_row[0], torch.tensor([0.0, 0.0, 1.0, 0.5, 0.0]))
    assert torch.equal(per_row[1], torch.zeros(5)), "a flat row scales to zeros, not NaN"
    assert torch.equal(per_row[2], torch.zeros(5)), "a row without words scales to zeros"
    batch = masked_minmax(x, valid, per_row=False)
    torch.testing.assert_close(batch[0], torch.tensor([0.0, 0.0, 1.0, 0.5, 0.0]))
    torch.testing.assert_close(batch[1], torch.tensor([0.0, 0.75, 0.75, 0.0, 0.0]))
    assert torch.equal(masked_minmax(x, torch.zeros_like(valid), per_row=False), torch.zeros_like(x))


@pytest.mark.parametrize("normalization", ["sample", "batch"])
def test_scores_in_a_training_step(processor, normalization):
    """A training forward fills `gass_scores` from our score: words only, in [0, 1], per caption or per batch;
    no parameter gradient written and the loss the same as without scoring."""
    model = _model(gass_normalization=normalization)
    assert isinstance(model.gass, OcclusionTaylorScorer)
    inputs = _inputs(processor)
    out = model(**inputs, return_loss=True)
    scores = out.gass_scores
    assert all(p.grad is None for p in model.parameters()), "scoring wrote a parameter gradient"
    eos = model.eos_positions(inputs["input_ids"])
    words = GASSScorer.valid_tokens(inputs["input_ids"], eos).bool()
    assert torch.all(scores[~words] == 0) and scores.min() >= 0 and scores.max() <= 1
    if normalization == "sample":
        for row in range(2):  # captions with several words reach both ends of [0, 1]
            assert scores[row][words[row]].min() == 0 and scores[row][words[row]].max() == 1
    else:
        assert scores[words].min() == 0 and scores[words].max() == 1
        assert sum(bool(scores[row][words[row]].max() == 1) for row in range(3)) == 1
    unscored = GADMSModel(GADMSConfig.tiny(num_identities=8, use_gass=False, masking="random")).train()
    unscored.load_state_dict(model.state_dict())
    assert torch.equal(out.loss, unscored(**inputs, return_loss=True).loss)
    # frozen towers (LoRA-style fine-tuning): the score needs no parameter gradient
    frozen = copy.deepcopy(model).requires_grad_(False)
    torch.testing.assert_close(frozen(**inputs, return_loss=True).gass_scores, scores, rtol=0, atol=0)


def test_config_field_is_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match="token_score='occlusion'"):
        GADMSConfig.tiny(token_score="occlusion")
    model = _model()
    model.save_pretrained(tmp_path)
    loaded = GADMSModel.from_pretrained(tmp_path)
    assert loaded.config.token_score == "occlusion_taylor" and isinstance(loaded.gass, OcclusionTaylorScorer)
    assert GADMSConfig.tiny().token_score == "gass" and isinstance(GADMSModel(GADMSConfig.tiny()).gass, GASSScorer)


def test_scores_under_cpu_bf16_autocast(processor):
    """Mixed precision (as on a GPU in bf16) keeps the scores finite, in range and ordered as in float32."""
    model = _model()
    inputs = _inputs(processor, CAPTIONS[:2])
    exact = model(**inputs, return_loss=True).gass_scores
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(**inputs, return_loss=True).gass_scores
    assert low.dtype == torch.float32 and torch.isfinite(low).all() and low.min() >= 0 and low.max() <= 1
    words = exact > 0
    ranks = lambda x: x.argsort().argsort().float()  # noqa: E731
    agreement = torch.corrcoef(torch.stack([ranks(exact[words]), ranks(low[words])]))[0, 1]
    assert agreement > 0.8, f"bf16 reordered the tokens (rank correlation {agreement:.2f})"
