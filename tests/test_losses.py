"""SDM, InfoNCE, ID and MIM losses (docs/method.md §6) against values worked out by hand in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gadms_hf.losses import gather_with_grad, global_identities, id_loss, infonce_loss, mim_loss, sdm_loss

# Three images, three captions; images 0 and 1 show the same person (identity 5).
IMAGES = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]])  # unit axes once normalised
TEXTS = np.array([[0.6, 0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.6, 0.8]])  # already unit length
PERSON_IDS = np.array([5, 5, 9])


def _log_softmax_rows(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _hand_sdm(scale: float, epsilon: float) -> float:
    """KL(p_i || q_i) = sum_j p_ij (log p_ij - log(q_ij + eps)), row mean, both directions summed."""
    cosine = np.array([[0.6, 0.8, 0.0], [0.8, 0.6, 0.6], [0.0, 0.0, 0.8]])  # S_ij = cos(image i, text j)
    # Identity labels y_ij (rows 0 and 1 share identity 5), each row normalised to a distribution.
    q = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    total = 0.0
    for similarity in (cosine, cosine.T):  # image->text rows, then text->image rows
        log_p = _log_softmax_rows(scale * similarity)
        rows = [
            sum(np.exp(log_p[i, j]) * (log_p[i, j] - np.log(q[i, j] + epsilon)) for j in range(3))
            for i in range(3)
        ]
        total += sum(rows) / 3
    return total


def _tensor(array: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(array, dtype=dtype)


def test_hand_example_cosines_are_what_the_test_assumes():
    images = IMAGES / np.linalg.norm(IMAGES, axis=1, keepdims=True)
    np.testing.assert_allclose(images @ TEXTS.T, [[0.6, 0.8, 0.0], [0.8, 0.6, 0.6], [0.0, 0.0, 0.8]])
    # At scale 50 every softmax row is nearly one-hot, so in each direction two rows cost about ln 2
    # (half the target mass missed) and the third about 0: the loss is close to 4 ln(2) / 3.
    assert _hand_sdm(50.0, 1e-8) == pytest.approx(0.9237444718, rel=1e-9)
    assert _hand_sdm(50.0, 1e-8) == pytest.approx(4 * np.log(2) / 3, abs=1e-3)


@pytest.mark.parametrize("scale", [50.0, 5.0])
def test_sdm_matches_hand_value_with_a_shared_identity(scale):
    loss = sdm_loss(_tensor(IMAGES), _tensor(TEXTS), torch.tensor(PERSON_IDS), scale)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(_hand_sdm(scale, 1e-8), rel=1e-6)


def test_sdm_epsilon_and_identities_matter():
    images, texts = _tensor(IMAGES), _tensor(TEXTS)
    shared = sdm_loss(images, texts, torch.tensor(PERSON_IDS), 5.0, epsilon=1e-4)
    assert shared.item() == pytest.approx(_hand_sdm(5.0, 1e-4), rel=1e-6)
    distinct = sdm_loss(images, texts, torch.tensor([0, 1, 2]), 5.0)
    assert abs(distinct.item() - _hand_sdm(5.0, 1e-8)) > 1e-2


def test_sdm_float32_inputs_and_gradients_reach_both_sides():
    images = _tensor(IMAGES, torch.float32).requires_grad_(True)
    texts = _tensor(TEXTS, torch.float32).requires_grad_(True)
    loss = sdm_loss(images, texts, torch.tensor(PERSON_IDS), 50.0)
    assert loss.item() == pytest.approx(_hand_sdm(50.0, 1e-8), rel=1e-4)
    loss.backward()
    assert images.grad.abs().sum() > 0 and texts.grad.abs().sum() > 0


def test_infonce_matches_hand_value():
    scale = 10.0
    images = IMAGES / np.linalg.norm(IMAGES, axis=1, keepdims=True)
    logits = scale * images @ TEXTS.T
    diagonal = np.arange(3)
    image_to_text = -_log_softmax_rows(logits)[diagonal, diagonal].mean()
    text_to_image = -_log_softmax_rows(logits.T)[diagonal, diagonal].mean()
    loss = infonce_loss(_tensor(IMAGES), _tensor(TEXTS), scale)
    assert loss.item() == pytest.approx((image_to_text + text_to_image) / 2, rel=1e-6)


def test_identity_aware_infonce_matches_hand_value():
    """Two texts of one person are both targets of that person's image (half the mass each)."""
    scale = 10.0
    images = IMAGES / np.linalg.norm(IMAGES, axis=1, keepdims=True)
    texts = TEXTS / np.linalg.norm(TEXTS, axis=1, keepdims=True)
    logits = scale * images @ texts.T
    identities = np.array([4, 4, 9])
    target = (identities[:, None] == identities[None, :]).astype(float)
    target /= target.sum(axis=1, keepdims=True)
    image_to_text = -(target * _log_softmax_rows(logits)).sum(axis=1).mean()
    text_to_image = -(target * _log_softmax_rows(logits.T)).sum(axis=1).mean()
    loss = infonce_loss(_tensor(IMAGES), _tensor(TEXTS), scale, torch.tensor(identities))
    assert loss.item() == pytest.approx((image_to_text + text_to_image) / 2, rel=1e-6)
    # one item per identity: exactly CLIP's loss
    unique = infonce_loss(_tensor(IMAGES), _tensor(TEXTS), scale, torch.tensor([7, 1, 3]))
    assert unique.item() == pytest.approx(infonce_loss(_tensor(IMAGES), _tensor(TEXTS), scale).item(), rel=1e-12)


def test_id_loss_matches_hand_value():
    weight = np.array([[0.5, -1.0, 0.2], [0.1, 0.3, -0.4], [-0.2, 0.0, 0.9], [1.0, 0.5, 0.5]])
    bias = np.array([0.1, 0.0, -0.1, 0.2])
    classifier = torch.nn.Linear(3, 4).double()
    with torch.no_grad():
        classifier.weight.copy_(_tensor(weight))
        classifier.bias.copy_(_tensor(bias))
    labels = np.array([3, 3, 1])

    def cross_entropy(features: np.ndarray) -> float:
        log_p = _log_softmax_rows(features @ weight.T + bias)
        return -log_p[np.arange(3), labels].mean()

    expected = cross_entropy(IMAGES) + cross_entropy(TEXTS)  # un-normalised embeddings, both modalities
    loss = id_loss(classifier, _tensor(IMAGES), _tensor(TEXTS), torch.tensor(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_mim_loss_is_cross_entropy_over_labelled_rows():
    """The fused vocabulary layer + cross-entropy equals the hand value of the explicit logits, whatever the
    chunking of the vocabulary."""
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    weight = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # logits rows below
    bias = torch.zeros(3, dtype=torch.float64)
    targets = torch.tensor([0, 2])
    first = 2.0 - np.log(np.exp(2.0) + 1 + np.exp(-1.0))  # logits (2, 0, -1), target 0
    second = 0.0 - np.log(1 + np.e + 1)  # logits (0, 1, 0), target 2
    for chunk in (1, 2, 3, 8):
        loss = mim_loss(hidden, weight, bias, targets, chunk_size=chunk)
        assert loss.item() == pytest.approx(-(first + second) / 2, rel=1e-12)


@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_mim_loss_gradients_equal_the_unfused_head(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(9, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(300, 16, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(300, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 300, (9,))
    fused = mim_loss(hidden, weight, bias, targets, chunk_size=chunk)
    fused_grads = torch.autograd.grad(fused, (hidden, weight, bias))
    plain = torch.nn.functional.cross_entropy(hidden @ weight.t() + bias, targets)
    plain_grads = torch.autograd.grad(plain, (hidden, weight, bias))
    assert fused.item() == pytest.approx(plain.item(), rel=1e-12)
    for mine, reference in zip(fused_grads, plain_grads):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-12)


def test_mim_loss_under_bfloat16_autocast_stays_close_and_float32():
    torch.manual_seed(0)
    hidden = torch.randn(32, 64, requires_grad=True)
    weight = (0.05 * torch.randn(5000, 64)).requires_grad_(True)
    targets = torch.randint(0, 5000, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = mim_loss(hidden, weight, None, targets, chunk_size=1000)
    assert fused.dtype == torch.float32
    plain = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-2)
    fused.backward()
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32


def test_mim_loss_without_labels_is_zero_and_keeps_the_graph():
    hidden = torch.zeros(0, 4, requires_grad=True)
    weight = torch.zeros(7, 4, requires_grad=True)
    loss = mim_loss(hidden, weight, None, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert hidden.grad is not None and weight.grad is not None


def test_losses_keep_float64():
    images, texts, ids = _tensor(IMAGES), _tensor(TEXTS), torch.tensor(PERSON_IDS)
    classifier = torch.nn.Linear(3, 10).double()
    losses = [
        sdm_loss(images, texts, ids, 50.0),
        infonce_loss(images, texts, 50.0),
        id_loss(classifier, images, texts, ids),
        mim_loss(texts, torch.eye(3, dtype=torch.float64), None, torch.tensor([0, 1, 2])),
    ]
    assert [loss.dtype for loss in losses] == [torch.float64] * 4


def test_single_process_gather_and_identities():
    embeds = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(embeds) is embeds
    assert torch.equal(global_identities(None, 3, torch.device("cpu")), torch.arange(3))
    ids = torch.tensor([4, 4, 1])
    assert torch.equal(global_identities(ids, 3, torch.device("cpu")), ids)
