"""GADMSModel: save/load, remote code, CLIP conversion, clear loading errors."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel

from gadms_hf import GADMSConfig, GADMSModel, GADMSProcessor
from gadms_hf.model_dir import check_model_dir, is_gadms_dir


def _embed(model, batch):
    model.eval()
    with torch.no_grad():
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        image = model.get_image_features(pixel_values=batch["pixel_values"])
    return text.pooler_output, image.pooler_output


def test_save_load_round_trip_through_auto_classes(tmp_path, tiny_model, processor, batch):
    tiny_model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, GADMSModel) and isinstance(loaded_processor, GADMSProcessor)
    for a, b in zip(_embed(tiny_model, batch), _embed(loaded, batch)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_gadms.GADMSModel"
    for name in ("modeling_gadms.py", "configuration_gadms.py", "gass.py", "occlusion_taylor.py", "cross_modal.py",
                 "losses.py"):
        assert (tmp_path / name).is_file(), name


def test_trust_remote_code_without_the_package(tmp_path, tiny_model, processor, batch):
    tiny_model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    text, image = _embed(tiny_model, batch)
    torch.save({k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}, tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True)
        assert "gadms_hf" not in sys.modules, "the package must not be imported"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        batch = torch.load({str(tmp_path / 'batch.pt')!r}, weights_only=True)
        again = processor(text=["a man in a red coat"], return_tensors="pt")
        assert again["input_ids"].shape == (1, 77)
        with torch.no_grad():
            t = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            i = model.get_image_features(pixel_values=batch["pixel_values"])
        torch.save({{"text": t.pooler_output, "image": i.pooler_output}}, {str(tmp_path / 'out.pt')!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.testing.assert_close(out["text"], text, rtol=0, atol=0)
    torch.testing.assert_close(out["image"], image, rtol=0, atol=0)


def _tiny_clip(image_size: int) -> CLIPModel:
    torch.manual_seed(1)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, eos_token_id=49407, bos_token_id=49406, pad_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
        projection_dim=64,
    )
    return CLIPModel(config).eval()


def test_from_clip_matches_clip_at_the_same_size(tmp_path, batch, tokenizer):
    clip = _tiny_clip(image_size=64)
    clip.save_pretrained(tmp_path)
    model = GADMSModel.from_clip(str(tmp_path), image_size=(64, 64)).eval()
    assert model.config.text_config.vocab_size == 49409 and model.config.mask_token_id == 49408
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours_t = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        clip_t = clip.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ours_i = model.get_image_features(pixel_values=pixels)
        clip_i = clip.get_image_features(pixel_values=pixels)
    torch.testing.assert_close(ours_t.pooler_output, clip_t.pooler_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_i.pooler_output, clip_i.pooler_output, atol=1e-5, rtol=0)
    # the added mask token gets a row and the pooling ignores it (found by id, not argmax)
    masked = batch["input_ids"].clone()
    masked[:, 2] = 49408
    with torch.no_grad():
        out = model.get_text_features(input_ids=masked, attention_mask=batch["attention_mask"]).pooler_output
    assert torch.isfinite(out).all() and not torch.allclose(out, ours_t.pooler_output)


def test_from_clip_rectangular_grid_runs():
    clip = _tiny_clip(image_size=64)
    model = GADMSModel.from_clip(clip, image_size=(384, 128)).eval()
    embeddings = model.vision_model.embeddings
    assert embeddings.grid == (24, 8) and embeddings.position_embedding.weight.shape == (24 * 8 + 1, 64)
    # the CLS position is carried over unchanged
    torch.testing.assert_close(
        embeddings.position_embedding.weight[0], clip.vision_model.embeddings.position_embedding.weight[0]
    )
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.randn(2, 3, 384, 128)).pooler_output
    assert out.shape == (2, 64)
    with pytest.raises(ValueError, match="384x128"):
        model.get_image_features(pixel_values=torch.randn(1, 3, 64, 64))


def test_missing_eos_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="end-of-text"):
        tiny_model.get_text_features(input_ids=torch.full((1, 77), 320))


def test_loading_errors_are_clear(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="no GA-DMS model directory"):
        GADMSModel.from_pretrained(str(tmp_path / "nowhere"))

    tiny_model.save_pretrained(tmp_path / "wrong")
    config_file = tmp_path / "wrong" / "config.json"
    config = json.loads(config_file.read_text())
    config["model_type"] = "bert"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type='bert'"):
        GADMSModel.from_pretrained(tmp_path / "wrong")

    tiny_model.save_pretrained(tmp_path / "cut")
    weights = tmp_path / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for load in (GADMSModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(OSError, match="truncated or corrupt"):
            load(tmp_path / "cut")


def test_model_dir_check_names_the_file_and_the_model_type(tmp_path, tiny_model):
    assert not is_gadms_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        check_model_dir(tmp_path)
    tiny_model.config.save_pretrained(tmp_path)
    assert is_gadms_dir(tmp_path)
    check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    assert not is_gadms_dir(tmp_path)
    with pytest.raises(ValueError, match="model_type='clip', expected 'gadms'"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    for check in (check_model_dir, is_gadms_dir):
        with pytest.raises(ValueError, match="config.json is not valid JSON"):
            check(tmp_path)


def test_heads_follow_the_config():
    plain = GADMSModel(GADMSConfig.tiny().apply_recipe("clip"))
    assert plain.cross_modal is None and plain.classifier is None
    full = GADMSModel(GADMSConfig.tiny(num_identities=7))
    assert full.classifier.weight.shape == (7, 64)
    assert full.classifier.weight.std() < 0.01 and full.classifier.bias.abs().max() == 0
    # IRRA initialisation of the cross-modal head (width 64, depth 1)
    head = full.cross_modal
    torch.testing.assert_close(head.mlm_head.fc.weight.std().item(), 64**-0.5 * 2**-0.5, rtol=0.05, atol=0)
    torch.testing.assert_close(head.cross_attn.in_proj_weight.std().item(), 64**-0.5, rtol=0.05, atol=0)
    assert head.cross_attn.in_proj_bias.abs().max() == 0
