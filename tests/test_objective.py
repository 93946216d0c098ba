"""The GA-DMS objective through `GADMSModel.forward` (docs/method.md §3 and §6): which losses a recipe
computes, that they are the method's formulas (docs/method.md) on the right inputs, that each reaches both towers, and
that one optimiser step on a fixed batch lowers each of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gadms_hf import GADMSConfig, GADMSModel
from gadms_hf.losses import sdm_loss

from .conftest import CAPTIONS, random_images

MASK_ID = 49408
PERSON_IDS = [0, 0, 1, 2]  # captions 0 and 1 are positives of each other


def _model(recipe: str | None = None, **overrides) -> GADMSModel:
    config = GADMSConfig.tiny(num_identities=8, **overrides)
    if recipe is not None:
        config.apply_recipe(recipe)
    torch.manual_seed(0)
    return GADMSModel(config).train()


def _training_inputs(processor) -> dict[str, torch.Tensor]:
    """Clean ids, a noise-suppressed copy (one word masked) and an informative copy with MIM labels."""
    encoded = processor(text=CAPTIONS, images=random_images(len(CAPTIONS)), return_tensors="pt")
    ids = encoded["input_ids"]
    noisy = ids.clone()
    noisy[0, 3] = MASK_ID
    mim_ids, labels = ids.clone(), torch.full_like(ids, -100)
    for row in range(len(CAPTIONS)):
        for position in (1, 4):
            labels[row, position] = ids[row, position]
            mim_ids[row, position] = MASK_ID
    return dict(
        pixel_values=encoded["pixel_values"],
        input_ids=ids,
        attention_mask=encoded["attention_mask"],
        noisy_input_ids=noisy,
        mim_input_ids=mim_ids,
        mim_labels=labels,
        person_ids=torch.tensor(PERSON_IDS),
    )


def _numpy_sdm(image: np.ndarray, text: np.ndarray, ids: np.ndarray, scale: float, epsilon: float) -> float:
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    matches = (ids[:, None] == ids[None, :]).astype(np.float64)
    log_q = np.log(matches / matches.sum(axis=1, keepdims=True) + epsilon)
    total = 0.0
    for logits in (scale * image @ text.T, scale * text @ image.T):
        log_p = logits - logits.max(axis=1, keepdims=True)
        log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        total += (np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean()
    return total


def _numpy_soft_cross_entropy(logits: np.ndarray, target: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(target * log_p).sum(axis=1).mean()


def _numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


def test_default_objective_is_the_spec_formula(processor):
    model = _model()
    inputs = _training_inputs(processor)
    out = model(**inputs, return_loss=True)
    config = model.config

    # SDM and ID use the noise-suppressed copy; GASS scores the clean caption.
    with torch.no_grad():
        noisy = model.get_text_features(
            input_ids=inputs["noisy_input_ids"], attention_mask=inputs["attention_mask"]
        )
        clean = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
    torch.testing.assert_close(out.text_features, noisy.pooler_output)
    # Pooled at the first end-of-text id, never at argmax(ids) (the mask id 49408 is larger).
    end = int((inputs["noisy_input_ids"][0] == 49407).nonzero()[0])
    assert int(inputs["noisy_input_ids"][0].argmax()) != end
    with torch.no_grad():
        hidden = model.text_model(
            input_ids=inputs["noisy_input_ids"], attention_mask=inputs["attention_mask"]
        )
        torch.testing.assert_close(
            out.text_features[0], model.text_projection(hidden.last_hidden_state[0, end])
        )
    assert not torch.allclose(out.text_features[0], clean.pooler_output[0])
    without_noise = model(**{**inputs, "noisy_input_ids": None}, return_loss=True)
    torch.testing.assert_close(out.gass_scores, without_noise.gass_scores, rtol=0, atol=0)

    image = out.image_features.detach().double().numpy()
    text = out.text_features.detach().double().numpy()
    ids = np.array(PERSON_IDS)
    assert config.similarity_scale == 50.0
    assert out.sdm_loss.item() == pytest.approx(_numpy_sdm(image, text, ids, 50.0, 1e-8), rel=1e-5)
    weight = model.classifier.weight.detach().double().numpy()
    bias = model.classifier.bias.detach().double().numpy()
    expected_id = _numpy_cross_entropy(image @ weight.T + bias, ids) + _numpy_cross_entropy(
        text @ weight.T + bias, ids
    )
    assert out.id_loss.item() == pytest.approx(expected_id, rel=1e-5)
    assert out.infonce_loss is None
    expected_total = (
        out.sdm_loss + config.mim_loss_weight * out.mim_loss + config.id_loss_weight * out.id_loss
    )
    assert config.mim_loss_weight == 0.3
    torch.testing.assert_close(out.loss, expected_total)
    logits = (
        50.0
        * torch.nn.functional.normalize(out.text_features, dim=-1)
        @ torch.nn.functional.normalize(out.image_features, dim=-1).t()
    )
    torch.testing.assert_close(out.logits_per_text, logits)


def test_without_person_ids_every_sample_is_its_own_identity(processor):
    model = _model()
    out = model(**{**_training_inputs(processor), "person_ids": None}, return_loss=True)
    assert out.id_loss is None
    image = out.image_features.detach().double().numpy()
    text = out.text_features.detach().double().numpy()
    distinct = np.arange(len(CAPTIONS))
    assert out.sdm_loss.item() == pytest.approx(_numpy_sdm(image, text, distinct, 50.0, 1e-8), rel=1e-5)


def test_identity_classifier_initialisation():
    model = _model()
    assert model.classifier.out_features == 8
    assert torch.equal(model.classifier.bias, torch.zeros(8))
    assert 0.0007 < model.classifier.weight.std().item() < 0.0013


@pytest.mark.parametrize("name", ["sdm_loss", "mim_loss", "id_loss"])
def test_each_loss_reaches_both_towers(processor, name):
    model = _model()
    out = model(**_training_inputs(processor), return_loss=True)
    parameters = {
        "text tower": model.text_model.encoder.layers[0].self_attn.v_proj.weight,
        "text embeddings": model.text_model.embeddings.token_embedding.weight,
        "image tower": model.vision_model.encoder.layers[0].self_attn.v_proj.weight,
        "patch embedding": model.vision_model.embeddings.patch_embedding.weight,
    }
    grads = torch.autograd.grad(getattr(out, name), list(parameters.values()), allow_unused=True)
    for (part, _), grad in zip(parameters.items(), grads):
        assert grad is not None and grad.abs().sum() > 0, f"{name} does not reach the {part}"


def test_total_loss_trains_every_weight(processor):
    model = _model()
    model(**_training_inputs(processor), return_loss=True).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    zero = [name for name, p in model.named_parameters() if p.ndim == 2 and not p.grad.abs().sum() > 0]
    assert not zero


def test_one_adam_step_lowers_every_loss(processor):
    model = _model()
    inputs = _training_inputs(processor)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    before = model(**inputs, return_loss=True)
    before.loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = model(**inputs, return_loss=True)
    for name in ("sdm_loss", "mim_loss", "id_loss", "loss"):
        assert getattr(after, name) < getattr(before, name), name


def test_clip_recipe_is_infonce_only(processor):
    model = _model("clip")
    assert model.cross_modal is None
    out = model(**_training_inputs(processor), return_loss=True)
    assert out.sdm_loss is None and out.mim_loss is None and out.id_loss is None and out.gass_scores is None
    image = torch.nn.functional.normalize(out.image_features.double(), dim=-1)
    text = torch.nn.functional.normalize(out.text_features.double(), dim=-1)
    logits = (50.0 * image @ text.t()).detach().numpy()
    # captions 0 and 1 show one person: each is a positive of the other's image, with half the mass
    ids = np.array(PERSON_IDS)
    target = (ids[:, None] == ids[None, :]).astype(np.float64)
    target /= target.sum(axis=1, keepdims=True)
    expected = (_numpy_soft_cross_entropy(logits, target) + _numpy_soft_cross_entropy(logits.T, target)) / 2
    assert out.infonce_loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(out.loss, out.infonce_loss)


def test_learned_similarity_scale(processor, tmp_path):
    """The scale starts at `similarity_scale`, scales the logits, is trained by the loss, survives
    save/load and is clamped at CLIP's 100."""
    model = _model("clip", learn_similarity_scale=True, similarity_scale=10.0)
    assert model.logit_scale.item() == pytest.approx(np.log(10.0), rel=1e-6)
    inputs = _training_inputs(processor)
    out = model(**inputs, return_loss=True)
    image = torch.nn.functional.normalize(out.image_features, dim=-1)
    text = torch.nn.functional.normalize(out.text_features, dim=-1)
    torch.testing.assert_close(out.logits_per_text, 10.0 * text @ image.t())
    out.loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    with torch.no_grad():
        model.logit_scale.fill_(np.log(30.0))
    model.save_pretrained(tmp_path)
    loaded = GADMSModel.from_pretrained(tmp_path)
    assert loaded.logit_scale.item() == pytest.approx(np.log(30.0), rel=1e-6)
    with torch.no_grad():
        loaded.logit_scale.fill_(np.log(500.0))
    assert loaded.similarity_scale().item() == pytest.approx(100.0)
    assert _model("clip").logit_scale is None and _model("clip").similarity_scale() == 50.0


def test_irra_recipe_is_sdm_mim_id_without_gass(processor):
    model = _model("irra")
    out = model(**_training_inputs(processor), return_loss=True)
    assert out.gass_scores is None and out.infonce_loss is None
    assert all(getattr(out, name) is not None for name in ("sdm_loss", "mim_loss", "id_loss"))
    config = model.config
    expected = config.sdm_loss_weight * out.sdm_loss + config.mim_loss_weight * out.mim_loss + out.id_loss
    torch.testing.assert_close(out.loss, expected)


def test_gass_scores_in_training_mode_only(processor):
    model = _model()
    inputs = _training_inputs(processor)
    train = model(**inputs, return_loss=True)
    assert train.gass_scores is not None and train.gass_scores.shape == (len(CAPTIONS), 77)
    assert train.gass_scores.min() >= 0 and train.gass_scores.max() == 1
    model.eval()
    evaluated = model(**inputs, return_loss=True)
    assert evaluated.gass_scores is None and evaluated.loss is not None
    assert model(**inputs).gass_scores is None


def test_random_towers_do_not_collapse_with_the_from_scratch_contrastive_term(tmp_path):
    """From random weights, SDM at the paper's fixed scale 50 makes every similarity equal and stays there
    (its loss sits at its all-equal value, every embedding on one point); InfoNCE with a learned scale, the
    `small()` preset's term, pulls the true pairs apart from the start. 20 steps on 64 SynthPEDES identities."""
    from gadms_hf.data.builders.synth_pedes import load_synth_pedes
    from gadms_hf.processing_gadms import CLIP_MEAN, CLIP_STD

    corpus = load_synth_pedes("train", cache_dir=tmp_path, num_train_ids=64, num_test_ids=2, images_per_id=2,
                              height=96, width=32)
    pixels = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in corpus["image"]]) / 255
    pixels = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    from gadms_hf import build_clip_tokenizer

    text = build_clip_tokenizer()(list(corpus["caption"]), padding="longest", return_tensors="pt")
    person_ids = torch.tensor(corpus["person_id"])

    def train(**objective) -> tuple[float, float, float, float, torch.Tensor]:
        config = GADMSConfig.tiny(**objective).apply_recipe("clip", contrastive_loss=objective["contrastive_loss"])
        torch.manual_seed(0)
        model = GADMSModel(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(20):
            rows = torch.randperm(len(person_ids), generator=order)[:32]
            out = model(pixel_values=pixels[rows], input_ids=text["input_ids"][rows],
                        attention_mask=text["attention_mask"][rows], person_ids=person_ids[rows], return_loss=True)
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(out.loss.item())
        with torch.no_grad():
            model.eval()
            images = torch.nn.functional.normalize(model.get_image_features(pixels[:64]).pooler_output, dim=-1)
            texts = torch.nn.functional.normalize(
                model.get_text_features(text["input_ids"][:64], text["attention_mask"][:64]).pooler_output, dim=-1)
        others = ~torch.eye(64, dtype=torch.bool)
        return ((images @ images.t())[others].mean().item(), (texts @ texts.t())[others].mean().item(),
                losses[0], losses[-1], person_ids[rows])

    sdm_images, sdm_texts, _, sdm_last, last_ids = train(contrastive_loss="sdm")
    assert sdm_images > 0.999 and sdm_texts > 0.999  # collapsed: every embedding on one point
    all_equal = sdm_loss(torch.ones(32, 4), torch.ones(32, 4), last_ids, 50.0).item()  # every similarity equal
    assert sdm_last == pytest.approx(all_equal, rel=1e-3)
    ours_images, ours_texts, ours_first, ours_last, _ = train(
        contrastive_loss="infonce", learn_similarity_scale=True, similarity_scale=10.0)
    assert ours_images < 0.95 and ours_texts < 0.99 and ours_last < ours_first - 0.1


@pytest.mark.parametrize(
    ("preset", "recipe", "overrides", "expected"),
    [
        ("small", "gadms", None, "infonce"),  # random towers: the preset's term, which cannot collapse
        ("small", "irra", None, "infonce"),
        ("tiny", "gadms", None, "sdm"),  # the tiny preset keeps the paper's SDM
        ("tiny", "clip", None, "infonce"),  # the CLIP recipe is InfoNCE whatever the preset
        ("small", "clip", None, "infonce"),
        ("small", "gadms", "contrastive_loss=sdm", "sdm"),  # an explicit override wins
    ],
)
def test_scripts_choose_the_contrastive_term_by_preset_and_recipe(preset, recipe, overrides, expected):
    from gadms_hf.training.arguments import ModelArguments
    from gadms_hf.training.components import build_model

    model = build_model(ModelArguments(preset=preset, recipe=recipe, config_overrides=overrides))
    assert model.config.contrastive_loss == expected
    assert model.config.use_gass == (recipe == "gadms")
