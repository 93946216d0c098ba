import pytest
from transformers import AutoConfig

from gadms_hf import GADMSConfig


def test_presets_and_defaults():
    paper = GADMSConfig.vit_b16()
    assert paper.image_size == (384, 128)
    assert paper.vision_config.patch_size == 16 and paper.vision_config.hidden_size == 768
    assert paper.text_config.vocab_size == 49409 and paper.text_config.num_hidden_layers == 12
    assert paper.similarity_scale == 50.0 and paper.gass_num_layers == 8
    assert GADMSConfig().image_size == (384, 128)  # unspecified towers default to the paper's
    tiny = GADMSConfig.tiny()
    assert tiny.text_config.vocab_size == 49409 and tiny.gass_num_layers <= tiny.text_config.num_hidden_layers


def test_small_preset_learns_from_random_weights_by_design():
    """The CPU preset: 8-px patches (a 12 x 4 grid on 96 x 32), GASS on every layer of its 2-layer causal
    tower, and a contrastive term that cannot collapse (InfoNCE with a learned scale); the paper's preset
    keeps SDM at the fixed 50."""
    small = GADMSConfig.small()
    assert small.image_size == (96, 32) and small.vision_config.patch_size == 8
    assert small.gass_num_layers == small.text_config.num_hidden_layers == 2
    assert (small.contrastive_loss, small.learn_similarity_scale) == ("infonce", True)
    paper = GADMSConfig.vit_b16()
    assert (paper.contrastive_loss, paper.learn_similarity_scale) == ("sdm", False)
    assert GADMSConfig.small(mim_loss_weight=0.5).mim_loss_weight == 0.5


def test_round_trip_through_autoconfig(tmp_path):
    config = GADMSConfig.tiny(num_identities=5, gass_normalization="sample", mim_loss_weight=0.4)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GADMSConfig)
    assert loaded.image_size == config.image_size
    assert (loaded.num_identities, loaded.gass_normalization, loaded.mim_loss_weight) == (5, "sample", 0.4)
    assert loaded.gass_pool_windows == [1, 2]


def test_square_int_image_size_is_accepted():
    config = GADMSConfig.tiny()
    config.vision_config.image_size = 64
    assert config.image_size == (64, 64)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"mim_max_prob": 1.5}, "mim_max_prob"),
        ({"noise_max_prob": -0.1}, "noise_max_prob"),
        ({"gass_num_layers": 99}, "gass_num_layers"),
        ({"gass_normalization": "global"}, "gass_normalization"),
        ({"masking": "bert"}, "masking"),
        ({"contrastive_loss": "triplet"}, "contrastive_loss"),
        ({"num_identities": -1}, "num_identities"),
        ({"similarity_scale": 0.0}, "similarity_scale"),
        ({"similarity_scale": 150.0}, "similarity_scale"),
        ({"mask_replace_prob": 0.95, "random_replace_prob": 0.1}, "mask_replace_prob"),
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        GADMSConfig.tiny(**overrides)


def test_patch_must_divide_image():
    with pytest.raises(ValueError, match="patch_size"):
        GADMSConfig(vision_config={"image_size": [100, 48], "patch_size": 16, "hidden_size": 64,
                                   "num_attention_heads": 2})


def test_recipes_switch_the_objective():
    clip = GADMSConfig.tiny().apply_recipe("clip")
    assert (clip.contrastive_loss, clip.masking, clip.use_gass, clip.mim_loss_weight) == ("infonce", "none", False, 0)
    irra = GADMSConfig.tiny().apply_recipe("irra")
    assert (irra.contrastive_loss, irra.masking, irra.use_gass) == ("sdm", "random", False)
    with pytest.raises(ValueError, match="recipe"):
        GADMSConfig.tiny().apply_recipe("siglip")
    # random towers keep a contrastive term that learns from there; the masking still follows the recipe
    scratch = GADMSConfig.small().apply_recipe("gadms", contrastive_loss="infonce")
    assert (scratch.contrastive_loss, scratch.masking, scratch.use_gass) == ("infonce", "gass", True)
    with pytest.raises(ValueError, match="contrastive_loss"):
        GADMSConfig.tiny().apply_recipe("irra", contrastive_loss="triplet")
