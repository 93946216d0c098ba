"""GA-DMS configuration: a CLIP text/vision pair plus every constant of the method.

Each constant is declared and validated once, here: the dual-masking ones in `MaskingParams`,
which `GADMSConfig` inherits (so the collator's masking constants and the saved config cannot
drift apart), the rest on `GADMSConfig` itself.

This file is shipped to the Hub with `save_pretrained` (remote code), so it imports nothing
from the rest of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig

GASS_NORMALIZATIONS = ("batch", "sample")
TOKEN_SCORES = ("gass", "occlusion_taylor")
MAX_SIMILARITY_SCALE = 100.0  # CLIP's clamp of its learned logit scale
_CONTRASTIVE = ("sdm", "infonce")
MASKING_MODES = ("gass", "random", "none")
_PROBABILITIES = ("mim_max_prob", "noise_max_prob", "random_mask_prob", "mask_replace_prob",
                  "random_replace_prob", "initial_token_score")
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


@dataclass(kw_only=True)
class MaskingParams:
    """The score-bank and dual-masking constants (docs/method.md §4-5), each documented in [`GADMSConfig`].

    `GADMSConfig` inherits these fields; the collator takes `MaskingParams.from_config(config)`, a
    plain copy without the towers. Not frozen, because the config that inherits it is mutable
    (`apply_recipe` switches `masking`).
    """

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

    def __post_init__(self) -> None:
        self.check_masking()

    def check_masking(self) -> None:
        """Raise a ValueError naming the first masking field out of range."""
        if self.masking not in MASKING_MODES:
            raise ValueError(f"masking={self.masking!r} must be one of {MASKING_MODES}")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must be a probability in [0, 1]")
        replace_total = self.mask_replace_prob + self.random_replace_prob
        if replace_total > 1.0:
            raise ValueError(f"mask_replace_prob + random_replace_prob = {replace_total} must not exceed 1")

    @classmethod
    def from_config(cls, config: Any) -> MaskingParams:
        """Copy the masking fields of a `GADMSConfig` (or any object carrying the same attributes)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@strict
class GADMSConfig(PreTrainedConfig, MaskingParams):
    r"""
    Configuration of a [`GADMSModel`]: CLIP towers (`text_config`, `vision_config`) and the
    GA-DMS objective (GASS token scores, dual masking, MIM head, SDM/ID/MIM losses). The
    defaults are the paper's (docs/method.md); its sections are cited as §N.

    Baselines come from the same code by switches: `contrastive_loss="infonce"`,
    `masking="none"`, `mim_loss_weight=0` is CLIP fine-tuning; `use_gass=False`,
    `masking="random"` with SDM + ID + MIM is IRRA. See [`GADMSConfig.apply_recipe`].

    Args:
        text_config (`dict` or [`CLIPTextConfig`], *optional*):
            The causal CLIP text tower. Defaults to the paper's ViT-B/16 text tower: 12 layers, width
            512, 8 heads, 77 positions, and 49,409 tokens (CLIP's 49,408 plus `<|mask|>`).
        vision_config (`dict` or [`CLIPVisionConfig`], *optional*):
            The CLIP vision tower. Its `image_size` may be an int (square) or `(height, width)`; the
            patch size must divide both. Defaults to ViT-B/16 (width 768, 12 layers, 16-pixel
            patches) at the pedestrian aspect ratio (384, 128), a 24 x 8 patch grid.
        projection_dim (`int`, *optional*, defaults to 512):
            Width of the shared image-text embedding space. Also the width of the cross-modal MIM
            head, which has `projection_dim / 64` heads, so it must be a multiple of 64.
        similarity_scale (`float`, *optional*, defaults to 50.0):
            Factor on the cosine similarities in the contrastive loss and `logits_per_text`; the
            paper fixes it at 50 (1 / 0.02), not learned. In (0, 100], 100 being CLIP's clamp. Not
            named `temperature`: that name collides with generation defaults in `save_pretrained`.
        learn_similarity_scale (`bool`, *optional*, defaults to `False`):
            Learn the (log) scale instead, starting from `similarity_scale` and clamped at 100 like
            CLIP's. For randomly initialised towers (the `small` preset); the paper keeps it fixed.
        mask_token_id (`int`, *optional*, defaults to 49408):
            Id of `<|mask|>`, the row appended after CLIP's 49,408 BPE tokens; below the text
            vocabulary size. Since it exceeds the end-of-text id 49407, captions are pooled at the
            end-of-text id, never at the argmax of the ids.
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Multiplier of the projections' initialisation std (`hidden_size ** -0.5`), as in CLIP.
        use_gass (`bool`, *optional*, defaults to `True`):
            Compute token scores (`token_score`: GASS, §3) in training steps, which the trainer writes to the score
            bank. Off in the IRRA and CLIP recipes; `masking="gass"` needs it.
        token_score (`str`, *optional*, defaults to `"gass"`):
            What fills the score bank: `"gass"`, the paper's gradient-attention score (§3), or
            `"occlusion_taylor"` (ours, `occlusion_taylor.py`): the signed first-order drop of the
            image-text cosine when the token becomes `<|mask|>`, min-max scaled over
            `gass_normalization`'s range with no ReLU, so words the image contradicts score lowest.
        gass_num_layers (`int`, *optional*, defaults to 8):
            How many of the last text layers GASS sums over: the paper's 8 of 12. In [1, number of
            text layers].
        gass_normalization (`str`, *optional*, defaults to `"batch"`):
            Range of the final min-max scaling to [0, 1]: `"batch"` (the whole batch, the authors'
            choice) or `"sample"` (each caption on its own).
        gass_pool_windows (`list[int]`, *optional*, defaults to `(1, 2)`):
            Token windows over which GASS average-pools queries and keys before their cosine; the
            scales are averaged. Kept as a list (JSON round trips turn tuples into lists).
        initial_token_score (`float`, *optional*, defaults to 0.85):
            Score-bank value of a token GASS has not scored yet (§4). At 0.85 the first epoch masks
            about 30 % of words for MIM and almost none as noise.
        masking (`str`, *optional*, defaults to `"gass"`):
            How the collator masks captions (§5): `"gass"` makes the two copies from the bank's
            scores; `"random"` is IRRA's MLM (`random_mask_prob` of the words, alignment on the clean
            caption); `"none"` masks nothing and gives no MIM labels.
        mim_max_prob (`float`, *optional*, defaults to 0.3):
            Ceiling of the informative (MIM) copy's selection probability
            `mim_max_prob * sigmoid(mim_sigmoid_slope * (score - mim_sigmoid_center))`, which rises
            with the score: the words that support the match are the ones to predict.
        mim_sigmoid_slope (`float`, *optional*, defaults to 20.0):
            Steepness of that sigmoid.
        mim_sigmoid_center (`float`, *optional*, defaults to 0.1):
            Score at which that probability is half its ceiling.
        noise_max_prob (`float`, *optional*, defaults to 0.2):
            Ceiling of the noise-suppressed copy's selection probability
            `noise_max_prob * sigmoid(noise_sigmoid_slope * ((1 - score) - noise_sigmoid_center))`,
            which rises as the score falls: words that work against the match are hidden from the
            alignment loss.
        noise_sigmoid_slope (`float`, *optional*, defaults to 20.0):
            Steepness of that sigmoid.
        noise_sigmoid_center (`float`, *optional*, defaults to 0.9):
            Value of `1 - score` at which that probability is half its ceiling, so only tokens scored
            near 0 are likely hidden.
        random_mask_prob (`float`, *optional*, defaults to 0.15):
            Selection probability of every word under `masking="random"` (IRRA's and BERT's 15 %).
        mask_replace_prob (`float`, *optional*, defaults to 0.8):
            Chance that a selected token becomes `<|mask|>` (BERT's rule).
        random_replace_prob (`float`, *optional*, defaults to 0.1):
            Chance that a selected token becomes a random ordinary token; it stays itself otherwise
            (still labelled in the MIM copy). With `mask_replace_prob`, at most 1.
        mim_at_least_one (`bool`, *optional*, defaults to `True`):
            When the MIM copy selects no word of a caption, mask its first word, so every caption has
            a MIM label.
        noise_at_least_one (`bool`, *optional*, defaults to `False`):
            The same rule for the noise-suppressed copy. Off here: the authors' `True` hides a word of
            every clean caption from the alignment loss.
        cross_modal_depth (`int`, *optional*, defaults to 4):
            Transformer layers of the cross-modal MIM head after its cross-attention (§6); 0 keeps the
            cross-attention alone. The head exists only when `mim_loss_weight > 0`.
        contrastive_loss (`str`, *optional*, defaults to `"sdm"`):
            The alignment term: `"sdm"` (similarity distribution matching, from IRRA; same-identity
            pairs are positives) or `"infonce"` (CLIP's). SDM from random towers collapses every
            embedding onto one point, so those train with InfoNCE.
        sdm_epsilon (`float`, *optional*, defaults to 1e-8):
            Added to the SDM target distribution inside its logarithm, where most entries are 0.
        sdm_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the contrastive term, SDM or InfoNCE.
        mim_loss_weight (`float`, *optional*, defaults to 0.3):
            Weight of the MIM loss: the paper's pretraining 0.3. At 0 the model has no MIM head.
        id_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the identity classification loss, when there is an ID head and the batch has
            `person_ids`.
        num_identities (`int`, *optional*, defaults to 0):
            Number of training identities of the ID head (a linear classifier over the embeddings,
            for fine-tuning); 0 builds none.
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

    # GASS (§3); the score bank and dual masking (§4-5) are MaskingParams' fields
    use_gass: bool = True
    token_score: str = "gass"
    gass_num_layers: int = 8
    gass_normalization: str = "batch"
    gass_pool_windows: list[int] | tuple[int, ...] = (1, 2)

    # cross-modal MIM head (§6)
    cross_modal_depth: int = 4

    # losses (§6)
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
        """Raise a plain ValueError naming the offending field (strict's validators wrap theirs).

        Called after every change of several fields at once (`__post_init__`, `apply_recipe`);
        the masking fields are checked by the inherited `check_masking`.
        """
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
        self.check_masking()
        if self.gass_normalization not in GASS_NORMALIZATIONS:
            raise ValueError(f"gass_normalization={self.gass_normalization!r} must be one of {GASS_NORMALIZATIONS}")
        if self.token_score not in TOKEN_SCORES:
            raise ValueError(f"token_score={self.token_score!r} must be one of {TOKEN_SCORES}")
        if self.contrastive_loss not in _CONTRASTIVE:
            raise ValueError(f"contrastive_loss={self.contrastive_loss!r} must be one of {_CONTRASTIVE}")
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


__all__ = [
    "GADMSConfig", "GASS_NORMALIZATIONS", "MASKING_MODES", "MAX_SIMILARITY_SCALE", "MaskingParams", "TOKEN_SCORES",
    "image_hw",
]
