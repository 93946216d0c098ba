"""The cross-modal MIM block and head (docs/method.md §6): inputs, invariances, and a memory footprint
proportional to the number of labelled positions (never batch x 77 x vocabulary)."""

from __future__ import annotations

import pytest
import torch

from gadms_hf import GADMSConfig, GADMSModel
from gadms_hf.cross_modal import GADMSCrossModalHead

from .conftest import CAPTIONS, random_images

MASK_ID = 49408
# (caption, position) pairs to mask and label; caption 2 has none.
LABELLED = [(0, 2), (0, 5), (1, 1), (3, 3), (3, 4)]


def _training_inputs(processor) -> dict[str, torch.Tensor]:
    encoded = processor(text=CAPTIONS, images=random_images(len(CAPTIONS)), return_tensors="pt")
    ids = encoded["input_ids"]
    mim_ids, labels = ids.clone(), torch.full_like(ids, -100)
    for row, position in LABELLED:
        labels[row, position] = ids[row, position]
        mim_ids[row, position] = MASK_ID
    return dict(
        pixel_values=encoded["pixel_values"],
        input_ids=ids,
        attention_mask=encoded["attention_mask"],
        mim_input_ids=mim_ids,
        mim_labels=labels,
        person_ids=torch.tensor([0, 0, 1, 2]),
    )


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


@pytest.fixture
def model() -> GADMSModel:
    torch.manual_seed(0)
    return GADMSModel(GADMSConfig.tiny(num_identities=8)).train()


def test_head_runs_on_labelled_positions_only(model, processor):
    inputs = _training_inputs(processor)
    seen = []
    head = model.cross_modal.mlm_head
    handle = head.dense.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        out = model(**inputs, return_loss=True)
    finally:
        handle.remove()
    width, vocab = model.config.projection_dim, model.config.text_config.vocab_size
    assert len(seen) == 1
    head_in = seen[0]
    assert head_in.shape == (len(LABELLED), width)
    with torch.no_grad():
        logits = head(head_in)
    assert logits.shape == (len(LABELLED), vocab)
    # The loss is the cross-entropy of exactly those rows against the original ids, in row-major order.
    targets = torch.tensor([int(inputs["input_ids"][row, position]) for row, position in LABELLED])
    expected = torch.nn.functional.cross_entropy(logits.double(), targets)
    assert out.mim_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_no_batch_by_length_by_vocabulary_tensor(model, processor):
    """Every tensor with a vocabulary axis, among module outputs and tensors saved for backward,
    is no larger than the weight matrices or the k labelled logits."""
    inputs = _training_inputs(processor)
    vocab = model.config.text_config.vocab_size
    batch, length = inputs["input_ids"].shape
    largest = {"rows": 0}

    def note(tensor: torch.Tensor) -> torch.Tensor:
        if vocab in tensor.shape:
            largest["rows"] = max(largest["rows"], tensor.numel() // vocab)
        return tensor

    def note_output(module, args, output) -> None:
        for tensor in _tensors(output):
            note(tensor)

    handles = [m.register_forward_hook(note_output) for m in model.modules()]
    try:
        with torch.autograd.graph.saved_tensors_hooks(note, lambda tensor: tensor):
            out = model(**inputs, return_loss=True)
        out.loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    allowed = max(len(LABELLED), model.config.projection_dim, model.config.text_config.hidden_size)
    assert 0 < largest["rows"] <= allowed < batch * length
    assert model.cross_modal.mlm_head.fc.weight.grad is not None


def test_head_sees_projected_text_and_all_projected_image_tokens(model, processor):
    inputs = _training_inputs(processor)
    seen = {}
    head = model.cross_modal
    real = head.labelled_states

    def spy(*args):  # records what the model hands the head, then runs the real method
        seen["args"] = args
        return real(*args)

    head.labelled_states = spy
    try:
        model(**inputs, return_loss=True)
    finally:
        del head.labelled_states
    text_states, image_states, labels = seen["args"]
    with torch.no_grad():
        hidden = model.text_model(input_ids=inputs["mim_input_ids"], attention_mask=inputs["attention_mask"])
        vision = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        image_tokens = model.visual_projection(model.vision_model.post_layernorm(vision))
    patches = (96 // 16) * (32 // 16)
    assert image_states.shape == (4, 1 + patches, model.config.projection_dim)  # CLS and every patch
    torch.testing.assert_close(text_states, model.text_projection(hidden.last_hidden_state))
    torch.testing.assert_close(image_states, image_tokens)
    assert torch.equal(labels, inputs["mim_labels"])


def test_cross_modal_head_structure_and_invariances():
    torch.manual_seed(0)
    head = GADMSCrossModalHead(width=128, depth=2, vocab_size=50).eval()
    assert head.cross_attn.num_heads == 2 and len(head.blocks) == 2
    assert all(block.attn.num_heads == 2 for block in head.blocks)
    text, image = torch.randn(2, 6, 128), torch.randn(2, 9, 128)
    labels = torch.full((2, 6), -100)
    labels[0, 1], labels[1, 4], labels[1, 5] = 7, 3, 0
    with torch.no_grad():
        logits, targets = head(text, image, labels)
        assert logits.shape == (3, 50) and targets.tolist() == [7, 3, 0]
        # Position-wise head: a row does not depend on which other positions are labelled.
        only = torch.full_like(labels, -100)
        only[1, 4] = 3
        torch.testing.assert_close(head(text, image, only)[0][0], logits[1])
        # Both inputs are layer-normed first (and the cross-attention has no residual from the raw text).
        torch.testing.assert_close(head(3.0 * text, 0.5 * image, labels)[0], logits, rtol=1e-4, atol=1e-4)
        # Every image token, CLS (0) and the last patch alike, is attended to.
        for token in (0, 8):
            changed = image.clone()
            changed[:, token] += torch.randn(128)
            assert (head(text, changed, labels)[0] - logits).abs().max() > 1e-4
        # No label: no logits at all, not a full (batch, length, vocab) tensor.
        empty, no_targets = head(text, image, torch.full_like(labels, -100))
        assert empty.shape == (0, 50) and no_targets.shape == (0,)


@pytest.mark.parametrize("depth", [1, 2])
def test_labelled_positions_only_equal_every_position(depth):
    """The last block runs at the labelled positions alone; it must give what the full encoding gives."""
    torch.manual_seed(depth)
    head = GADMSCrossModalHead(width=128, depth=depth, vocab_size=50).double()
    text, image = torch.randn(3, 7, 128, dtype=torch.float64), torch.randn(3, 9, 128, dtype=torch.float64)
    labels = torch.full((3, 7), -100)
    labels[0, [1, 2, 6]], labels[2, 0] = torch.tensor([4, 9, 0]), 3  # row 1 has none, rows differ in count
    text.requires_grad_(True)
    logits, targets = head(text, image, labels)
    selected = labels != -100
    expected = head.mlm_head(head.encode(text, image)[selected])
    torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
    assert targets.tolist() == [4, 9, 0, 3]
    grad, expected_grad = (torch.autograd.grad(out.square().sum(), text)[0] for out in (logits, expected))
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_mim_without_labelled_positions_is_zero_not_nan(model, processor):
    inputs = _training_inputs(processor)
    inputs["mim_labels"] = torch.full_like(inputs["mim_labels"], -100)
    out = model(**inputs, return_loss=True)
    assert out.mim_loss.item() == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()
