"""GADMSModel: CLIP towers for 384x128 pedestrians, plus the GA-DMS objective.

The text tower is transformers' `CLIPTextModel`; the image tower reuses CLIP's encoder with
its own rectangular patch grid and positional table (resized once at conversion, never at
forward time). `forward` wires SDM (or InfoNCE), the cross-modal MIM head, the ID head and
GASS token scores; the trainer, not the model, keeps the score bank.

Shipped to the Hub as remote code (`trust_remote_code=True`): only the model, with flat relative
imports. Building one from CLIP weights is the package's work (`gadms_hf.conversion`), which
`GADMSModel.from_clip` imports when called.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import CLIPModel, CLIPTextModel, CLIPVisionConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPPreTrainedModel
from transformers.utils import ModelOutput

from .configuration_gadms import MAX_SIMILARITY_SCALE, GADMSConfig, image_hw
from .cross_modal import GADMSCrossModalHead
from .gass import GASSScorer
from .losses import gather_with_grad, global_identities, id_loss, infonce_loss, sdm_loss
from .model_dir import check_model_dir
from .occlusion_taylor import OcclusionTaylorScorer


@dataclass
class GADMSOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        Weighted sum of the active losses (returned with `return_loss=True`).
    sdm_loss (`torch.FloatTensor`, *optional*):
        Similarity-distribution-matching loss (when `contrastive_loss="sdm"`).
    infonce_loss (`torch.FloatTensor`, *optional*):
        CLIP contrastive loss (when `contrastive_loss="infonce"`).
    mim_loss (`torch.FloatTensor`, *optional*):
        Masked-informative-token cross-entropy over labelled positions.
    id_loss (`torch.FloatTensor`, *optional*):
        Identity classification loss of image and text (when `num_identities > 0`).
    gass_scores (`torch.FloatTensor` of shape `(batch, text_length)`, *optional*):
        GASS token scores of the clean captions, for the trainer's score bank (training only).
    image_features (`torch.FloatTensor` of shape `(batch, projection_dim)`):
        Projected image embeddings, not normalised (what `get_image_features` pools). Named apart
        from `CLIPOutput.image_embeds`, which is normalised: normalise these before a cosine.
    text_features (`torch.FloatTensor` of shape `(batch, projection_dim)`):
        Projected embeddings of the alignment text (noise-suppressed when given), not normalised
        (what `get_text_features` pools).
    logits_per_text (`torch.FloatTensor` of shape `(text_batch, image_batch)`, *optional*):
        Scaled cosine similarities (local batch).
    """

    loss: torch.FloatTensor | None = None
    sdm_loss: torch.FloatTensor | None = None
    infonce_loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    id_loss: torch.FloatTensor | None = None
    gass_scores: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None


class GADMSVisionEmbeddings(nn.Module):
    """CLS + patch embeddings over a (height/patch) x (width/patch) grid with its own positions."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.patch_size = config.patch_size
        self.image_height, self.image_width = image_hw(config.image_size)
        self.grid = (self.image_height // self.patch_size, self.image_width // self.patch_size)
        self.num_positions = self.grid[0] * self.grid[1] + 1
        self.class_embedding = nn.Parameter(torch.empty(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
        self.position_ids = nn.Buffer(torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = pixel_values.shape
        if (height, width) != (self.image_height, self.image_width):
            raise ValueError(
                f"pixel_values are {height}x{width} but the model takes {self.image_height}x{self.image_width} "
                "(vision_config.image_size); resize with the model's processor"
            )
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(batch, 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(self.position_ids)


class GADMSVisionModel(CLIPPreTrainedModel):
    """CLIP's vision transformer on a rectangular grid; `pooler_output` is the post-normed CLS."""

    config: CLIPVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["GADMSVisionEmbeddings", "CLIPEncoderLayer"]

    def __init__(self, config: CLIPVisionConfig):
        super().__init__(config)
        self.embeddings = GADMSVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, GADMSVisionEmbeddings):
            factor = self.config.initializer_factor
            init.normal_(module.class_embedding, std=module.embed_dim**-0.5 * factor)
            init.normal_(module.patch_embedding.weight, std=self.config.initializer_range * factor)
            init.normal_(module.position_embedding.weight, std=self.config.initializer_range * factor)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        else:
            super()._init_weights(module)

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        hidden = self.pre_layrnorm(self.embeddings(pixel_values))
        hidden = self.encoder(inputs_embeds=hidden).last_hidden_state
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=self.post_layernorm(hidden[:, 0]))


class GADMSPreTrainedModel(PreTrainedModel):
    config: GADMSConfig
    config_class = GADMSConfig
    base_model_prefix = "gadms"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "GADMSVisionEmbeddings", "GADMSResidualBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # forward takes no **kwargs: the Trainer must not treat the loss as pre-scaled for accumulation.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Leaves carry their std as `init_std` (set where they are built), because transformers
        skips parent modules without direct parameters when initialising remote code."""
        std = getattr(module, "init_std", None)
        if isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention) and std is not None:
            init.normal_(module.in_proj_weight, std=std)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.Linear) and std is not None:
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        if getattr(module, "logit_scale", None) is not None:
            init.constant_(module.logit_scale, math.log(self.config.similarity_scale))


class GADMSModel(GADMSPreTrainedModel):
    """GA-DMS for text-based person retrieval.

    Inference: `get_text_features` / `get_image_features` give projected embeddings; rank
    the gallery by cosine similarity. Training (`return_loss=True`): the collator supplies the
    clean ids (for GASS), the noise-suppressed copy (for SDM/ID) and the MIM copy with labels.
    """

    def __init__(self, config: GADMSConfig):
        super().__init__(config)
        self.text_model = CLIPTextModel._from_config(config.text_config)
        self.vision_model = GADMSVisionModel._from_config(config.vision_config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.cross_modal = (
            GADMSCrossModalHead(config.projection_dim, config.cross_modal_depth, config.text_config.vocab_size)
            if config.mim_loss_weight > 0
            else None
        )
        self.classifier = (
            nn.Linear(config.projection_dim, config.num_identities) if config.num_identities > 0 else None
        )
        factor = config.initializer_factor
        self.text_projection.init_std = config.text_config.hidden_size**-0.5 * factor
        self.visual_projection.init_std = config.vision_config.hidden_size**-0.5 * factor
        if self.classifier is not None:
            self.classifier.init_std = 0.001
        # Learned (log) similarity scale, for randomly initialised towers; the paper fixes it at 50.
        self.logit_scale = nn.Parameter(torch.empty(())) if config.learn_similarity_scale else None
        self.gass = (
            GASSScorer(config.gass_num_layers, config.gass_normalization, config.gass_pool_windows)
            if config.token_score == "gass"
            else OcclusionTaylorScorer(config.mask_token_id, config.gass_normalization)
        )
        self.post_init()

    # ----------------------------------------------------------------- embeddings

    def similarity_scale(self) -> float | torch.Tensor:
        """The scale of the cosine logits: the config's constant, or the learned one (clamped like CLIP's)."""
        if self.logit_scale is None:
            return self.config.similarity_scale
        return self.logit_scale.exp().clamp(max=MAX_SIMILARITY_SCALE)

    def eos_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """First end-of-text position per row; by id, never argmax (the mask id is larger)."""
        is_eos = input_ids == self.config.text_config.eos_token_id
        if not bool(is_eos.any(dim=1).all()):
            raise ValueError(
                f"every caption needs the end-of-text token (id {self.config.text_config.eos_token_id}); "
                "tokenise with the model's processor"
            )
        return is_eos.int().argmax(dim=1)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> BaseModelOutputWithPooling:
        """`pooler_output`: projected end-of-text state (B, projection_dim)."""
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = self.text_projection(hidden[rows, self.eos_positions(input_ids)])
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)

    def get_image_features(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        """`pooler_output`: projected, post-normed CLS (B, projection_dim)."""
        out = self.vision_model(pixel_values=pixel_values)
        return BaseModelOutputWithPooling(
            last_hidden_state=out.last_hidden_state, pooler_output=self.visual_projection(out.pooler_output)
        )

    # ----------------------------------------------------------------- training

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        noisy_input_ids: torch.LongTensor | None = None,
        mim_input_ids: torch.LongTensor | None = None,
        mim_labels: torch.LongTensor | None = None,
        person_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        return_dict: bool | None = None,
    ) -> GADMSOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, height, width)`):
            Pedestrian images.
        input_ids (`torch.LongTensor` of shape `(batch, text_length)`):
            Clean caption ids (GASS scores these).
        noisy_input_ids (`torch.LongTensor`, *optional*):
            Noise-suppressed copy used for alignment; defaults to `input_ids`.
        mim_input_ids / mim_labels (`torch.LongTensor`, *optional*):
            Informative-token-masked copy and its labels (-100 where not masked).
        person_ids (`torch.LongTensor` of shape `(batch,)`, *optional*):
            Identities; SDM treats equal ids as positives. Defaults to one identity per sample.
        return_loss (`bool`, *optional*):
            Compute the training losses.
        """
        config = self.config
        align_ids = noisy_input_ids if noisy_input_ids is not None else input_ids
        if pixel_values is None or align_ids is None:
            raise ValueError("GADMSModel.forward needs pixel_values and input_ids")
        batch = align_ids.shape[0]
        use_mim = (
            bool(return_loss) and self.cross_modal is not None and mim_labels is not None and config.mim_loss_weight > 0
        )

        vision = self.vision_model(pixel_values=pixel_values)
        image_features = self.visual_projection(vision.pooler_output)

        text_ids = torch.cat([align_ids, mim_input_ids]) if use_mim else align_ids
        text_mask = None
        if attention_mask is not None:
            text_mask = torch.cat([attention_mask, attention_mask]) if use_mim else attention_mask
        hidden = self.text_model(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        rows = torch.arange(batch, device=hidden.device)
        text_features = self.text_projection(hidden[:batch][rows, self.eos_positions(align_ids)])

        image_norm = nn.functional.normalize(image_features, dim=-1)
        text_norm = nn.functional.normalize(text_features, dim=-1)
        output = GADMSOutput(
            image_features=image_features,
            text_features=text_features,
            logits_per_text=self.similarity_scale() * text_norm @ image_norm.t(),
        )
        if return_loss:
            self._add_losses(output, vision.last_hidden_state, hidden, mim_labels if use_mim else None, person_ids)
            if config.use_gass and self.training and input_ids is not None:
                output.gass_scores = self.gass(
                    self.text_model,
                    self.text_projection,
                    input_ids,
                    attention_mask,
                    image_features,
                    self.eos_positions(input_ids),
                )
        return output if return_dict is not False else output.to_tuple()

    def _add_losses(
        self,
        output: GADMSOutput,
        image_hidden: torch.Tensor,
        text_hidden: torch.Tensor,
        mim_labels: torch.Tensor | None,
        person_ids: torch.Tensor | None,
    ) -> None:
        config = self.config
        image_features, text_features = output.image_features, output.text_features
        losses = []
        if config.contrastive_loss == "sdm":
            identities = global_identities(person_ids, image_features.shape[0], image_features.device)
            output.sdm_loss = sdm_loss(
                gather_with_grad(image_features),
                gather_with_grad(text_features),
                identities,
                self.similarity_scale(),
                config.sdm_epsilon,
            )
            losses.append(config.sdm_loss_weight * output.sdm_loss)
        else:
            identities = None if person_ids is None else global_identities(person_ids, len(person_ids), person_ids.device)
            output.infonce_loss = infonce_loss(
                gather_with_grad(image_features), gather_with_grad(text_features), self.similarity_scale(), identities
            )
            losses.append(config.sdm_loss_weight * output.infonce_loss)
        if mim_labels is not None:
            batch = image_features.shape[0]
            image_tokens = self.visual_projection(self.vision_model.post_layernorm(image_hidden))
            text_tokens = self.text_projection(text_hidden[batch:])
            output.mim_loss = self.cross_modal.loss(text_tokens, image_tokens, mim_labels)
            losses.append(config.mim_loss_weight * output.mim_loss)
        if self.classifier is not None and person_ids is not None and config.id_loss_weight > 0:
            output.id_loss = id_loss(self.classifier, image_features, text_features, person_ids)
            losses.append(config.id_loss_weight * output.id_loss)
        output.loss = sum(losses)

    # ----------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs) -> GADMSModel:
        """`PreTrainedModel.from_pretrained` with errors that name the file and what was expected."""
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            check_model_dir(path)
        elif path.startswith((".", os.sep, "~")) or os.path.exists(path):
            raise FileNotFoundError(
                f"no GA-DMS model directory at {path!r}: expected a folder with config.json and model.safetensors "
                "(as written by save_pretrained) or a Hub repo id"
            )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"the weights of {path!r} cannot be read ({error}): model.safetensors is truncated or corrupt; "
                "re-download or re-save the model"
            ) from error

    # ----------------------------------------------------------------- conversion

    @classmethod
    def from_clip(
        cls,
        clip: str | CLIPModel,
        image_size: tuple[int, int] = (384, 128),
        mask_token_id: int | None = None,
        **config_overrides,
    ) -> GADMSModel:
        """Build a GA-DMS model from any transformers `CLIPModel` (instance, local path or Hub id).

        Every tower weight is copied; the positional grid is resized once (bilinear) to
        `image_size / patch`; the token embedding gains one row for `<|mask|>` (the mean of
        the existing rows), whose id `mask_token_id` defaults to that new row's;
        `config_overrides` are further `GADMSConfig` fields; the new heads are freshly initialised.
        Needs the gadms-hf package: the conversion code does not ship with the model.
        """
        # Inside `try`, so that transformers' check of remote code's imports skips it: the shipped
        # model loads without gadms_hf installed.
        try:
            from gadms_hf.conversion.clip_init import convert_clip_model
        except ModuleNotFoundError as error:
            if (error.name or "").partition(".")[0] != "gadms_hf":
                raise
            raise ImportError("GADMSModel.from_clip needs the gadms-hf package (pip install gadms-hf)") from error
        return convert_clip_model(clip, image_size, mask_token_id, model_class=cls, **config_overrides)


__all__ = ["GADMSModel", "GADMSPreTrainedModel", "GADMSVisionModel", "GADMSOutput"]
