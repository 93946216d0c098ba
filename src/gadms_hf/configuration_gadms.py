"""GA-DMS configuration: a CLIP text/vision pair plus every constant of the method.

This file is shipped to the Hub with `save_pretrained` (remote code), so it imports
nothing from the rest of the package.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig

_NORMALISATIONS = ("batch", "sample")
MAX_SIMILARITY_SCALE = 100.0  # CLIP's clamp of its learned logit scale
_CONTRASTIVE = ("sdm", "infonce")
_MASKING = ("gass", "random", "none")
_VIT_B16_TEXT = dict(vocab_size=49409, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, projection_dim=512)
_VIT_B16_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=[384, 128], patch_size=16, projection_dim=512)


def image_hw(image_size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from CLIP's square int or our (height, width) pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ValueError(f"vision_config.image_size must be an int or (height, width), got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


@strict
class GADMSConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GADMSModel`]: CLIP towers (`text_config`, `vision_config`) and the
    GA-DMS objective (GASS token scores, dual masking, MIM head, SDM/ID/MIM losses).

    The vision tower accepts a rectangular `image_size=(height, width)`; the default is the
    pedestrian aspect ratio (384, 128). The similarity scale is fixed (not learned), and is
    named `similarity_scale` because a field called `temperature` collides with generation
    defaults in `save_pretrained`.

    Baselines come from the same code by switches: `contrastive_loss="infonce"`,
    `masking="none"`, `mim_loss_weight=0` is CLIP fine-tuning; `use_gass=False`,
    `masking="random"` with SDM + ID + MIM is IRRA. See [`GADMSConfig.apply_recipe`].
    """

    model_type = "gadms"
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    text_config: dict | CLIPTextConfig | None = None
    vision_config: dict | CLIPVisionConfig | None = None
    projection_dim: int = 512
    similarity_scale: float = 50.0
    learn_similarity_scale: bool = False
    mask_token_id: int = 49408
    initializer_factor: float = 1.0

    # GASS (SPEC section 3)
    use_gass: bool = True
    gass_num_layers: int = 8
    gass_normalization: str = "batch"
    gass_pool_windows: list[int] | tuple[int, ...] = (1, 2)

    # score bank + dual masking (SPEC sections 4-5)
    initial_token_score: float = 0.85
    masking: str = "gass"
    mim_max_prob: float = 0.3
    mim_sigmoid_slope: float = 20.0
    mim_sigmoid_center: float = 0.1
    noise_max_prob: float = 0.2
    noise_sigmoid_slope: float = 20.0
    noise_sigmoid_center: float = 0.9
    random_mask_prob: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    mim_at_least_one: bool = True
    noise_at_least_one: bool = False

    # cross-modal MIM head (SPEC section 6)
    cross_modal_depth: int = 4

    # losses (SPEC section 6)
    contrastive_loss: str = "sdm"
    sdm_epsilon: float = 1e-8
    sdm_loss_weight: float = 1.0
    mim_loss_weight: float = 0.3
    id_loss_weight: float = 1.0
    num_identities: int = 0

    def __post_init__(self, **kwargs):
        # Unspecified towers default to the paper's ViT-B/16 pair, not CLIP's 224-pixel ViT-B/32.
        if self.text_config is None:
            self.text_config = _VIT_B16_TEXT.copy()
        if self.vision_config is None:
            self.vision_config = _VIT_B16_VISION.copy()
        # Older 5.x releases leave dict sub-configs as dicts; build them here for every version.
        if isinstance(self.text_config, dict):
            self.text_config = CLIPTextConfig(**self.text_config)
        if isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig(**self.vision_config)
        super().__post_init__(**kwargs)
        # JSON round trips turn tuples into lists; keep one canonical form.
        self.gass_pool_windows = [int(w) for w in self.gass_pool_windows]
        if not isinstance(self.vision_config.image_size, int):
            self.vision_config.image_size = list(image_hw(self.vision_config.image_size))
        self.check_fields()

    def check_fields(self) -> None:
        """Raise a plain ValueError naming the offending field (strict's validators wrap theirs)."""
        height, width = image_hw(self.vision_config.image_size)
        patch = self.vision_config.patch_size
        if not isinstance(patch, int):
            raise ValueError(f"vision_config.patch_size must be an int, got {patch!r}")
        if height % patch or width % patch:
            raise ValueError(
                f"vision_config.patch_size={patch} must divide vision_config.image_size=({height}, {width})"
            )
        if not 1 <= self.gass_num_layers <= self.text_config.num_hidden_layers:
            raise ValueError(
                f"gass_num_layers={self.gass_num_layers} must be in [1, text_config.num_hidden_layers="
                f"{self.text_config.num_hidden_layers}]"
            )
        for name in (
            "mim_max_prob",
            "noise_max_prob",
            "random_mask_prob",
            "mask_replace_prob",
            "random_replace_prob",
            "initial_token_score",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must be a probability in [0, 1]")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob = {self.mask_replace_prob + self.random_replace_prob}"
                " must not exceed 1"
            )
        if self.gass_normalization not in _NORMALISATIONS:
            raise ValueError(f"gass_normalization={self.gass_normalization!r} must be one of {_NORMALISATIONS}")
        if self.contrastive_loss not in _CONTRASTIVE:
            raise ValueError(f"contrastive_loss={self.contrastive_loss!r} must be one of {_CONTRASTIVE}")
        if self.masking not in _MASKING:
            raise ValueError(f"masking={self.masking!r} must be one of {_MASKING}")
        if self.masking == "gass" and not self.use_gass:
            raise ValueError("masking='gass' needs use_gass=True (the bank is filled from GASS scores)")
        if not self.gass_pool_windows or any(w < 1 for w in self.gass_pool_windows):
            raise ValueError(f"gass_pool_windows={self.gass_pool_windows} must be positive window sizes")
        if self.projection_dim % 64:
            raise ValueError(f"projection_dim={self.projection_dim} must be a multiple of 64 (cross-modal heads)")
        if self.num_identities < 0:
            raise ValueError(f"num_identities={self.num_identities} must be >= 0 (0 = no ID head)")
        if self.cross_modal_depth < 0:
            raise ValueError(f"cross_modal_depth={self.cross_modal_depth} must be >= 0")
        if not 0 < self.similarity_scale <= MAX_SIMILARITY_SCALE:
            raise ValueError(f"similarity_scale={self.similarity_scale} must be in (0, {MAX_SIMILARITY_SCALE:g}]")
        vocab = self.text_config.vocab_size
        if not 0 <= self.mask_token_id < vocab:
            raise ValueError(f"mask_token_id={self.mask_token_id} must be < text_config.vocab_size={vocab}")

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images the vision tower takes."""
        return image_hw(self.vision_config.image_size)

    def apply_recipe(self, recipe: str, contrastive_loss: str | None = None) -> GADMSConfig:
        """Switch the objective to one of the paper's compared recipes, in place.

        - `gadms`: GASS-noise-suppressed alignment text + GASS-guided MIM (+ ID if identities).
        - `irra`: random-15% MLM (+ ID), no GASS.
        - `clip`: the contrastive term only, no masking.

        `contrastive_loss` defaults to the paper's: SDM for `gadms` and `irra`, InfoNCE for `clip`.
        Towers that do not align yet (random weights) need `"infonce"`: from there SDM collapses every
        embedding onto one point (README, "Embedded default").
        """
        recipes = {"gadms": (True, "gass", "sdm"), "irra": (False, "random", "sdm"), "clip": (False, "none", "infonce")}
        if recipe not in recipes:
            raise ValueError(f"recipe={recipe!r} must be one of {', '.join(map(repr, recipes))}")
        self.use_gass, self.masking, default_loss = recipes[recipe]
        self.contrastive_loss = contrastive_loss or default_loss
        if recipe == "clip":
            self.mim_loss_weight, self.id_loss_weight = 0.0, 0.0
        self.check_fields()
        return self

    @classmethod
    def vit_b16(cls, **kwargs) -> GADMSConfig:
        """The paper's configuration: CLIP ViT-B/16 at 384x128, 12-layer 512-wide text tower."""
        return cls(text_config=CLIPTextConfig(**_VIT_B16_TEXT), vision_config=CLIPVisionConfig(**_VIT_B16_VISION),
                   projection_dim=512, **kwargs)

    @classmethod
    def tiny(cls, **kwargs) -> GADMSConfig:
        """A few-MB model with the real vocabulary and token count, for tests and the CPU demo."""
        text = CLIPTextConfig(vocab_size=49409, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=2, max_position_embeddings=77, projection_dim=64)
        vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                  num_attention_heads=2, image_size=[96, 32], patch_size=16, projection_dim=64)
        defaults = dict(projection_dim=64, gass_num_layers=2, cross_modal_depth=1)
        defaults.update(kwargs)
        return cls(text_config=text, vision_config=vision, **defaults)

    @classmethod
    def small(cls, **kwargs) -> GADMSConfig:
        """The CPU preset that learns from random weights (`make demo`; sizes chosen by measurement, README
        "Embedded default").

        - Image tower: 4 layers, width 128, 8-pixel patches on 96 x 32 images, a 12 x 4 grid that
          resolves a bag, shoes or a hat (16-pixel patches give 6 x 2).
        - Text tower: 2 layers, width 128: template captions need no depth, and the tower runs three
          times a step (alignment copy, MIM copy, GASS). GASS scores both layers: in a causal tower
          the upper layers' values summarise their prefix, so with few layers the last ones alone
          do not follow which words the match relies on (with 2 of 3 layers GASS correlated -0.03
          with occlusion, with all 3 0.24).
        - Projection 64: the MIM head's vocabulary layer (64 x 49,409) is the largest single cost.
        - InfoNCE with a learned scale (from 20): SDM at the paper's fixed 50 collapses randomly
          initialised towers (every similarity equal, every gradient gone); `apply_recipe` keeps SDM
          for runs that start from aligned towers.
        """
        text = CLIPTextConfig(vocab_size=49409, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=77, projection_dim=64)
        vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                  num_attention_heads=4, image_size=[96, 32], patch_size=8, projection_dim=64)
        defaults = dict(text_config=text, vision_config=vision, projection_dim=64, gass_num_layers=2,
                        cross_modal_depth=1, contrastive_loss="infonce", learn_similarity_scale=True,
                        similarity_scale=20.0)
        defaults.update(kwargs)
        return cls(**defaults)


__all__ = ["GADMSConfig"]
