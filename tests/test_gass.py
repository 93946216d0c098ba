"""GASS token scores (docs/method.md §3) against an independent brute-force reference.

The reference runs the text tower once per caption with eager attention and
`output_attentions=True` (the attention probabilities of the forward itself, not recomputed ones),
differentiates the image-text cosine towards the captured pre-`out_proj` activations of
that one caption, and spells the formula of docs/method.md §3 out with loops: pooling, linear
interpolation, cosines, min-max scaling and the attention renormalisation.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from gadms_hf import GADMSConfig, GADMSModel

from .conftest import random_images

EOS_ID = 49407
# Different lengths, a one-word caption, an empty one (no word token: all-zero scores) and one
# truncated to 77 tokens (end-of-text in the last, partial, pooling window).
GASS_CAPTIONS = [
    "A woman with long black hair wears a red jacket, blue jeans and white shoes.",
    "A man in a grey hoodie.",
    "backpack",
    "",
    " ".join(
        ["The man wears a dark blue cotton coat with white stripes, grey trousers and brown boots."] * 5
    ),
]


REFERENCE_ATTENTION = "gass_reference_eager"


def _exact_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention whose softmax stays in the input dtype: transformers' "eager" runs it in
    float32 even for a float64 model, which would cap the reference at ~1e-7."""
    weights = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = weights.softmax(dim=-1)
    return (weights @ value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(REFERENCE_ATTENTION, _exact_eager_attention)
AttentionMaskInterface.register(REFERENCE_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _model(normalization: str = "batch", seed: int = 0, **overrides) -> GADMSModel:
    torch.manual_seed(seed)
    model = GADMSModel(GADMSConfig.tiny(num_identities=8, gass_normalization=normalization, **overrides))
    return model.train()


def _inputs(processor, captions: list[str] = GASS_CAPTIONS, seed: int = 0) -> dict[str, torch.Tensor]:
    encoded = processor(text=captions, images=random_images(len(captions), seed=seed), return_tensors="pt")
    return {key: encoded[key] for key in ("pixel_values", "input_ids", "attention_mask")}


def _train_step_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]):
    """The training forward (losses and, in training mode, GASS scores)."""
    return model(**inputs, return_loss=True)


def _first_eos(ids: torch.Tensor) -> int:
    return int((ids == EOS_ID).nonzero()[0])


def _pooled(x: torch.Tensor, window: int) -> torch.Tensor:
    """(T, D): means of consecutive windows (the last partial one on its own), linearly
    interpolated back to T with half-pixel centres (the align_corners=False convention)."""
    length = x.shape[0]
    means = [x[start : start + window].mean(dim=0) for start in range(0, length, window)]
    count = len(means)
    rows = []
    for i in range(length):
        source = max((i + 0.5) * count / length - 0.5, 0.0)
        low = math.floor(source)
        high = min(low + 1, count - 1)
        weight = source - low
        rows.append((1 - weight) * means[low] + weight * means[high])
    return torch.stack(rows)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def _capture(attention: torch.nn.Module, index: int, store: dict) -> list:
    """Hooks storing one layer's q/k/v projections and the out_proj input under (index, name)."""

    def keep(name: str):
        return lambda module, args, output: store.__setitem__((index, name), output)

    handles = [
        getattr(attention, name).register_forward_hook(keep(name)) for name in ("q_proj", "k_proj", "v_proj")
    ]
    handles.append(
        attention.out_proj.register_forward_pre_hook(
            lambda module, args: store.__setitem__((index, "a"), args[0])
        )
    )
    return handles


def reference_unnormalised(
    model: GADMSModel,
    inputs: dict[str, torch.Tensor],
    image_embeds: torch.Tensor,
    num_layers: int,
    windows: tuple[int, ...] = (1, 2),
) -> torch.Tensor:
    """ReLU(sum_l m_l) per caption (B, T), float64, one separate text forward per caption.

    `model` must use an eager attention so that the forward returns attention probabilities.
    """
    text_model = model.text_model
    layers = text_model.encoder.layers
    chosen = range(len(layers) - num_layers, len(layers))
    batch, length = inputs["input_ids"].shape
    result = torch.zeros(batch, length, dtype=torch.float64)
    for b in range(batch):
        ids, mask = inputs["input_ids"][b : b + 1], inputs["attention_mask"][b : b + 1]
        captured: dict[tuple[int, str], torch.Tensor] = {}
        handles = [
            handle for index in chosen for handle in _capture(layers[index].self_attn, index, captured)
        ]
        try:
            out = text_model(input_ids=ids, attention_mask=mask, output_attentions=True)
        finally:
            for handle in handles:
                handle.remove()
        assert out.attentions is not None and len(out.attentions) == len(layers)
        e = _first_eos(ids[0])
        similarity = _cosine(model.text_projection(out.last_hidden_state[0, e]), image_embeds[b].detach())
        grads = torch.autograd.grad(similarity, [captured[(index, "a")] for index in chosen])

        total = torch.zeros(length, dtype=torch.float64)
        for index, grad in zip(chosen, grads):
            g = grad[0, e].double()
            q, k, v = (
                captured[(index, name)][0].detach().double() for name in ("q_proj", "k_proj", "v_proj")
            )
            q_pool = sum(_pooled(q, w) for w in windows) / len(windows)
            k_pool = sum(_pooled(k, w) for w in windows) / len(windows)
            c = torch.stack([_cosine(q_pool[e], k_pool[i]) for i in range(length)])
            c = (c - c.min()) / (c.max() - c.min())
            attention = out.attentions[index][0, :, e, :].detach().double().mean(dim=0)
            valid = range(1, e)
            attention_sum = sum(attention[i] for i in valid)
            for i in valid:
                raw = (g * v[i]).sum() * c[i]
                total[i] += raw * attention[i] / attention_sum
        result[b] = torch.relu(total)
    return result


def reference_normalise(raw: torch.Tensor, normalization: str) -> torch.Tensor:
    """Min-max to [0, 1] over the whole batch or per caption; a flat slice becomes zeros."""

    def scale(x: torch.Tensor) -> torch.Tensor:
        span = x.max() - x.min()
        return (x - x.min()) / span if span > 0 else torch.zeros_like(x)

    if normalization == "batch":
        return scale(raw)
    return torch.stack([scale(row) for row in raw])


def _reference(model: GADMSModel, inputs, normalization: str) -> torch.Tensor:
    """Reference scores for `inputs` from a float64 eager copy of `model` (left untouched)."""
    double = copy.deepcopy(model).double().requires_grad_(True)  # frozen models: the graph needs grads
    double.set_attn_implementation(REFERENCE_ATTENTION)
    inputs = {**inputs, "pixel_values": inputs["pixel_values"].double()}
    image_embeds = double.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    config = double.config
    raw = reference_unnormalised(
        double, inputs, image_embeds, config.gass_num_layers, tuple(config.gass_pool_windows)
    )
    return reference_normalise(raw, normalization)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected).abs().max() / expected.abs().max())


def test_reference_attention_is_transformers_eager(processor):
    model, inputs = _model(), _inputs(processor, GASS_CAPTIONS[:2])
    outputs = []
    for implementation in ("eager", REFERENCE_ATTENTION):
        model.set_attn_implementation(implementation)
        outputs.append(
            model.text_model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_attentions=True
            )
        )
    eager, reference = outputs
    assert len(reference.attentions) == model.config.text_config.num_hidden_layers
    for expected, actual in zip(eager.attentions, reference.attentions):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    # Causal: the first start-token query sees only itself.
    assert torch.all(reference.attentions[0][:, :, 0, 1:] == 0)


@pytest.mark.parametrize("normalization", ["batch", "sample"])
def test_gass_matches_brute_force_in_float64(processor, normalization):
    model = _model(normalization).double()
    inputs = _inputs(processor)
    inputs["pixel_values"] = inputs["pixel_values"].double()
    scores = _train_step_outputs(model, inputs).gass_scores
    expected = _reference(model, inputs, normalization)

    assert scores.shape == (len(GASS_CAPTIONS), 77) and _first_eos(inputs["input_ids"][4]) == 76
    assert _relative_error(scores, expected) < 1e-6
    # The empty caption has no word token: zeros, not NaN; so do start, end and padding.
    assert torch.equal(scores[3], torch.zeros(77, dtype=scores.dtype))
    for row, ids in zip(scores, inputs["input_ids"]):
        e = _first_eos(ids)
        assert row[0] == 0 and torch.all(row[e:] == 0)
    # Non-trivial: both long captions have several positive tokens and the maximum is 1.
    assert scores.max() == 1.0 and ((scores[:2] > 0).sum(dim=1) >= 3).all()
    if normalization == "sample":
        assert (scores[:2].amax(dim=1) == 1.0).all()


def test_gass_is_exact_in_float64(processor):
    model = _model().double()
    inputs = _inputs(processor, GASS_CAPTIONS[:2])
    inputs["pixel_values"] = inputs["pixel_values"].double()
    assert (
        _relative_error(_train_step_outputs(model, inputs).gass_scores, _reference(model, inputs, "batch"))
        < 1e-12
    )


@pytest.mark.parametrize("normalization", ["batch", "sample"])
def test_gass_matches_brute_force_in_float32(processor, normalization):
    model = _model(normalization)
    inputs = _inputs(processor)
    scores = _train_step_outputs(model, inputs).gass_scores
    assert scores.dtype == torch.float32
    assert _relative_error(scores, _reference(model, inputs, normalization)) < 1e-3


def test_all_flat_batch_gives_zeros_not_nan(processor):
    for normalization in ("batch", "sample"):
        scores = _train_step_outputs(_model(normalization), _inputs(processor, ["", ""])).gass_scores
        assert torch.equal(scores, torch.zeros_like(scores)), normalization


def test_sample_normalisation_ignores_the_rest_of_the_batch(processor):
    model = _model("sample")
    alone = _train_step_outputs(model, _inputs(processor, GASS_CAPTIONS[:1], seed=1)).gass_scores
    others = ["An old man wearing a brown hat, a green coat and dark trousers.", GASS_CAPTIONS[1]]
    inputs = _inputs(processor, GASS_CAPTIONS[:1] + others, seed=2)
    inputs["pixel_values"][0] = _inputs(processor, GASS_CAPTIONS[:1], seed=1)["pixel_values"][0]
    together = _train_step_outputs(model, inputs).gass_scores
    torch.testing.assert_close(together[0], alone[0], rtol=0, atol=1e-6)

    # Batch normalisation is the same ranking, scaled by this caption's share of the batch maximum.
    batch_model = _model("batch")
    batch_scores = _train_step_outputs(batch_model, inputs).gass_scores
    for row_batch, row_sample in zip(batch_scores, together):
        torch.testing.assert_close(row_batch / row_batch.max(), row_sample, rtol=0, atol=1e-5)
    assert (batch_scores.amax(dim=1) < 1).any()


def test_gass_touches_no_gradient_and_not_the_loss(processor):
    inputs = _inputs(processor, GASS_CAPTIONS[:3])
    with_gass = _model()
    without = GADMSModel(GADMSConfig.tiny(num_identities=8, use_gass=False, masking="random")).train()
    without.load_state_dict(with_gass.state_dict())

    out_on = _train_step_outputs(with_gass, inputs)
    assert out_on.gass_scores is not None
    assert all(p.grad is None for p in with_gass.parameters()), "GASS wrote a parameter gradient"
    out_off = _train_step_outputs(without, inputs)
    assert out_off.gass_scores is None
    assert torch.equal(out_on.loss, out_off.loss)

    out_on.loss.backward()
    out_off.loss.backward()
    before = {name: p.grad.clone() for name, p in with_gass.named_parameters() if p.grad is not None}
    assert before, "the loss reached no parameter"
    for (name, p_on), p_off in zip(with_gass.named_parameters(), without.parameters()):
        assert (p_on.grad is None) == (p_off.grad is None), name
        if p_on.grad is not None:
            torch.testing.assert_close(p_on.grad, p_off.grad, rtol=0, atol=0, msg=name)

    # A second scoring pass with gradients already accumulated leaves them as they are.
    _train_step_outputs(with_gass, inputs)
    for name, p in with_gass.named_parameters():
        if name in before:
            assert torch.equal(p.grad, before[name]), name
        else:
            assert p.grad is None, name
    assert with_gass.training and with_gass.text_model.training


def test_gass_under_cpu_bf16_autocast_bf16_weights_and_no_grad(processor):
    model = _model()
    inputs = _inputs(processor, GASS_CAPTIONS[:3])
    exact = _train_step_outputs(model, inputs).gass_scores
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _train_step_outputs(model, inputs)
    scores = out.gass_scores
    assert torch.isfinite(scores).all() and torch.isfinite(out.loss)
    assert scores.min() >= 0 and scores.max() <= 1
    assert torch.all(scores[exact.eq(0) & scores.ne(0)] < 0.1), "bf16 lit up tokens that float32 scores 0"
    assert (scores - exact).abs().max() < 0.1 and (scores - exact).abs().mean() < 0.01

    # A training-mode forward under no_grad (e.g. a loss-only evaluation) still scores.
    with torch.no_grad():
        torch.testing.assert_close(_train_step_outputs(model, inputs).gass_scores, exact, rtol=0, atol=0)

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    low = _train_step_outputs(bf16, {**inputs, "pixel_values": inputs["pixel_values"].bfloat16()}).gass_scores
    assert torch.isfinite(low).all() and low.min() >= 0 and low.max() <= 1
    assert (low.float() - exact).abs().mean() < 0.05


@pytest.mark.parametrize("reentrant", [False, True])
def test_gass_with_gradient_checkpointing(processor, reentrant):
    inputs = _inputs(processor, GASS_CAPTIONS[:3])
    plain = _model()
    checkpointed = copy.deepcopy(plain)
    # `gradient_checkpointing_enable` is the deprecated alias of this call in transformers 5.x.
    checkpointed.activation_checkpointing_enable({"use_reentrant": reentrant})
    checkpointed.train()
    expected, out = _train_step_outputs(plain, inputs), _train_step_outputs(checkpointed, inputs)
    torch.testing.assert_close(out.gass_scores, expected.gass_scores, rtol=0, atol=1e-6)
    # Scoring left checkpointing and training mode in place: the backward recomputes the layers.
    last_layer = checkpointed.text_model.encoder.layers[-1]
    assert checkpointed.training and last_layer.training and last_layer.gradient_checkpointing
    recomputed = []
    # Watch the layer's first submodule: transformers checkpoints `forward` (the layer's own hooks stay
    # outside), and torch's non-reentrant recompute stops early, after the last tensor it needs.
    handle = last_layer.layer_norm1.register_forward_hook(
        lambda module, args, output: recomputed.append(True)
    )
    try:
        out.loss.backward()
    finally:
        handle.remove()
    assert recomputed, "no layer was recomputed: checkpointing was off for the loss"
    expected.loss.backward()
    weight = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(
        checkpointed.get_parameter(weight).grad, plain.get_parameter(weight).grad, rtol=1e-5, atol=1e-7
    )


def test_gass_with_lora_adapters_and_frozen_towers(processor):
    inputs = _inputs(processor, GASS_CAPTIONS[:3])
    base = _model()
    expected = _train_step_outputs(base, inputs).gass_scores
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=r"text_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)"
    )
    peft_model = get_peft_model(copy.deepcopy(base), lora)
    assert not peft_model.get_parameter(
        "base_model.model.text_model.embeddings.token_embedding.weight"
    ).requires_grad

    # B is zero-initialised: LoRA is the identity, so the scores are those of the base model.
    torch.testing.assert_close(
        _train_step_outputs(peft_model, inputs).gass_scores, expected, rtol=0, atol=1e-6
    )

    # Non-zero adapters: the hooks must see the adapted projections, i.e. match the merged model.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    adapted = _train_step_outputs(peft_model, inputs)
    assert all(p.grad is None for p in peft_model.parameters())
    assert (adapted.gass_scores - expected).abs().max() > 1e-2, "the adapters changed nothing"
    merged = peft_model.merge_and_unload()
    assert _relative_error(adapted.gass_scores, _reference(merged, inputs, "batch")) < 1e-3
    assert adapted.gass_scores.min() >= 0 and adapted.gass_scores.max() <= 1

    # Fully frozen model: GASS needs activations' gradients only.
    frozen = copy.deepcopy(base).requires_grad_(False)
    torch.testing.assert_close(_train_step_outputs(frozen, inputs).gass_scores, expected, rtol=0, atol=0)
