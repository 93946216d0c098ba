"""Map OpenAI-format CLIP state dicts, and the GA-DMS authors' training checkpoints, onto `GADMSModel`.

The authors train with IRRA's code: an OpenAI CLIP under `base_model.` (`visual.*`,
`transformer.*`, `token_embedding`, ...) next to the MIM modules (`cross_attn`,
`cross_modal_transformer.resblocks.N`, `ln_pre_t`, `ln_pre_i`, `ln_post`, `mlm_head`) and,
after fine-tuning, `classifier`. A plain OpenAI / open_clip CLIP is the same CLIP part
without the prefix and without those modules, so one mapping reads both.

The architecture is read off the tensors (widths, depths, patch size, vocabulary; heads =
width / 64 as in OpenAI CLIP). Every source key must be used and every target weight set:
a partial or foreign checkpoint fails with the full lists instead of loading half a model.

Mask token. IRRA's tokenizer, which the authors' code imports, keeps CLIP's 49,408 ids by
dropping the last BPE merge ("jekyll</w>", id 49405) and putting `<|mask|>` there, so their
token embedding and MIM output layer hold the trained mask at row 49405. Our tokenizer keeps
every BPE token and puts `<|mask|>` at 49408, so that row is copied to a new row 49408. A
plain CLIP never saw a mask token: its new row is the mean of the others. Both steps, and the
positional resize, are shared with `GADMSModel.from_clip` (`clip_init.py`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..configuration_gadms import GADMSConfig
from ..modeling_gadms import GADMSModel
from .clip_init import CLIP_TOKEN_IDS, CLIP_VOCAB_SIZE, GADMS_MASK_ID, resize_positions, with_mask_row

AUTHORS_PREFIX = "base_model."
IRRA_MASK_ID = 49405
HEAD_WIDTH = 64

# Scalars OpenAI / open_clip keep beside the weights; GA-DMS fixes its similarity scale instead.
NON_WEIGHT_KEYS = ("logit_scale", "input_resolution", "context_length", "vocab_size")
# Top-level modules of the authors' model besides `base_model` (the CLIP).
CROSS_MODAL_ROOTS = (
    "cross_attn.",
    "cross_modal_transformer.",
    "ln_pre_t.",
    "ln_pre_i.",
    "ln_post.",
    "mlm_head.",
)
HEAD_ROOTS = (*CROSS_MODAL_ROOTS, "classifier.")

MaskSource = int | Literal["auto", "mean"]

# OpenAI residual block -> transformers CLIPEncoderLayer; q/k/v come from the packed in_proj.
_BLOCK_RENAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_TOWER_RENAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
# The cross-modal module keeps the authors' names (packed in_proj included), only re-rooted.
_CROSS_MODAL_PARAMS = (
    "cross_attn.in_proj_weight",
    "cross_attn.in_proj_bias",
    "cross_attn.out_proj.weight",
    "cross_attn.out_proj.bias",
    *(
        f"{module}.{p}"
        for module in ("ln_pre_t", "ln_pre_i", "ln_post", "mlm_head.dense", "mlm_head.ln")
        for p in ("weight", "bias")
    ),
)
_CROSS_BLOCK_PARAMS = tuple(
    f"{module}.{p}"
    for module in ("ln_1", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
    for p in ("weight", "bias")
) + ("attn.in_proj_weight", "attn.in_proj_bias")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the architecture read off it; lists every offending key."""

    def __init__(
        self,
        source: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[str] = (),
        hint: str = "",
    ):
        self.missing, self.unexpected, self.mismatched = (
            sorted(missing),
            sorted(unexpected),
            sorted(mismatched),
        )
        parts = [f"{source} does not match the OpenAI-CLIP / GA-DMS layout."]
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {', '.join(self.unexpected)}")
        if self.mismatched:
            parts.append(f"wrong shapes ({len(self.mismatched)}): {'; '.join(self.mismatched)}")
        if hint:
            parts.append(hint)
        super().__init__("\n".join(parts))


@dataclass
class ConversionReport:
    """What a conversion read, inferred, added and left out; printed by the script, rendered into the card."""

    source: str
    layout: str
    num_source_tensors: int
    source_dtypes: list[str]
    architecture: dict[str, int | str]
    positional_grid: str
    mask_token: str
    ignored: dict[str, str] = field(default_factory=dict)
    fresh_modules: list[str] = field(default_factory=list)
    sha256: str | None = None

    def summary(self) -> str:
        arch = ", ".join(f"{k}={v}" for k, v in self.architecture.items())
        lines = [
            f"source: {self.source} ({self.layout}; {self.num_source_tensors} tensors, {'/'.join(self.source_dtypes)})",
            f"architecture: {arch}",
            f"positional grid: {self.positional_grid}",
            f"mask token: {self.mask_token}",
            "not weights, left out: " + (", ".join(f"{k}={v}" for k, v in self.ignored.items()) or "nothing"),
            "freshly initialised: " + (", ".join(self.fresh_modules) or "nothing"),
        ]
        return "\n".join(lines)


class _Mapper:
    """Source tensors under prefix-free names -> target tensors, recording where each came from."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], source: str):
        self.tensors: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{source}: entry {key!r} is a {type(value).__name__}, expected a tensor")
            name = key.removeprefix(AUTHORS_PREFIX)
            if name in self.tensors:
                raise CheckpointMismatchError(
                    source, unexpected=[key], hint=f"{key!r} and {self.origin[name]!r} name the same weight"
                )
            self.tensors[name], self.origin[name] = value, key
        self.clip_prefixed = any(self.origin[k] != k for k in self.tensors if not k.startswith(HEAD_ROOTS))
        self.head_prefixed = any(self.origin[k] != k for k in self.tensors if k.startswith(HEAD_ROOTS))
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.out: dict[str, torch.Tensor] = {}
        self.provenance: dict[str, str] = {}

    def display(self, name: str) -> str:
        """The key as this checkpoint spells (or would spell) it."""
        if name in self.origin:
            return self.origin[name]
        prefixed = self.head_prefixed if name.startswith(HEAD_ROOTS) else self.clip_prefixed
        return AUTHORS_PREFIX + name if prefixed else name

    def get(self, name: str) -> torch.Tensor | None:
        return self.tensors.get(name)

    def take(self, name: str) -> torch.Tensor | None:
        if name not in self.tensors:
            self.missing.append(self.display(name))
            return None
        self.used.add(name)
        return self.tensors[name]

    def copy(
        self, name: str, target: str, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        value = self.take(name)
        if value is not None:
            self.out[target] = transform(value) if transform else value
            self.provenance[target] = self.origin[name]

    def split_qkv(self, name: str, target_root: str, param: str) -> None:
        value = self.take(name)
        if value is not None:
            for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                self.out[f"{target_root}{proj}.{param}"] = chunk
                self.provenance[f"{target_root}{proj}.{param}"] = self.origin[name]

    def unused(self) -> list[str]:
        return [self.origin[k] for k in self.tensors if k not in self.used and k not in NON_WEIGHT_KEYS]

    def count(self, root: str) -> int:
        """Number of numbered sub-modules under `root` (the highest index + 1, so gaps show up as missing)."""
        pattern = re.compile(re.escape(root) + r"(\d+)\.")
        indices = [int(m.group(1)) for key in self.tensors if (m := pattern.match(key))]
        return max(indices) + 1 if indices else 0

    def block(self, source_root: str, target_root: str) -> None:
        for old, new in _BLOCK_RENAMES.items():
            for param in ("weight", "bias"):
                self.copy(f"{source_root}{old}.{param}", f"{target_root}{new}.{param}")
        for param in ("weight", "bias"):
            self.split_qkv(f"{source_root}attn.in_proj_{param}", f"{target_root}self_attn.", param)


def _heads(width: int, tower: str) -> int:
    if width % HEAD_WIDTH:
        raise ValueError(
            f"{tower} width {width} is not a multiple of {HEAD_WIDTH} (OpenAI CLIP uses width/64 heads)"
        )
    return width // HEAD_WIDTH


def _fit_positions(
    table: torch.Tensor, image_size: tuple[int, int], patch: int, authors: bool
) -> tuple[torch.Tensor, str]:
    """Fit the image positional table to `image_size`; a square CLIP grid is resized once (bilinear)."""
    height, width = image_size
    if height % patch or width % patch:
        raise ValueError(f"image_size={image_size} is not a multiple of the checkpoint's patch size {patch}")
    grid = (height // patch, width // patch)
    patches = table.shape[0] - 1
    side = round(patches**0.5)
    square = side * side == patches
    # A plain CLIP trained on square images; the authors' tables are already at their training size.
    if patches == grid[0] * grid[1] and (authors or not square or grid == (side, side)):
        return table, f"{grid[0]}x{grid[1]} as stored (image {height}x{width}, patch {patch})"
    if square and not authors:
        return resize_positions(table, grid), f"resized {side}x{side} -> {grid[0]}x{grid[1]} (bilinear, once)"
    raise ValueError(
        f"visual.positional_embedding holds {patches} patch positions, not the {grid[0]}x{grid[1]}="
        f"{grid[0] * grid[1]} of image_size={image_size} with patch {patch}; a GA-DMS checkpoint stores the "
        "grid it was trained at: pass that size (the authors use 384 128)"
    )


def _mask_plan(
    vocab: int, source_mask_id: MaskSource, authors: bool, has_head: bool
) -> tuple[int | None, str]:
    """Which source row becomes `<|mask|>` (None: the mean row), and the sentence saying so."""
    if source_mask_id == "auto":
        source_mask_id = IRRA_MASK_ID if authors else "mean"
    if source_mask_id == "mean":
        return None, f"row {GADMS_MASK_ID} (`<|mask|>`) added as the mean of the {vocab:,} source rows"
    if isinstance(source_mask_id, int) and 0 <= source_mask_id < vocab:
        note = (
            f"source row {source_mask_id} copied to row {GADMS_MASK_ID} (`<|mask|>`) of the token embedding"
        )
        if has_head:
            note += " and the MIM output layer"
        if source_mask_id == IRRA_MASK_ID:
            note += " (IRRA's tokenizer puts `<|mask|>` at 49405, in place of 'jekyll</w>')"
        return source_mask_id, note
    raise ValueError(f"source_mask_id={source_mask_id!r} must be 'auto', 'mean' or an id in [0, {vocab})")


def convert_openai_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    image_size: tuple[int, int] = (384, 128),
    source_mask_id: MaskSource = "auto",
    source: str = "state dict",
    **config_overrides,
) -> tuple[GADMSModel, ConversionReport]:
    """Build a `GADMSModel` from an OpenAI-format CLIP state dict or a GA-DMS / IRRA training state dict.

    Args:
        state_dict: tensors by name; the authors' `base_model.` prefix is optional on every key.
        image_size: (height, width) the model will take. A square CLIP positional grid is
            resized to it once; the authors' tables must already match it.
        source_mask_id: which source row becomes `<|mask|>` (id 49408) when the source has
            49,408 tokens: an id, "mean" (a mean row), or "auto": 49405 for the authors'
            layout (where IRRA's tokenizer put the mask), "mean" for a plain CLIP.
        source: the name used in errors and in the report.
        config_overrides: further `GADMSConfig` fields (e.g. `mim_loss_weight=0.4`).

    Returns:
        The model (float32, eval mode) and a report of what was read, added and left out.

    Raises:
        CheckpointMismatchError: missing, unexpected or wrongly shaped keys (all of them listed).
        ValueError: a vocabulary, width or positional grid this model cannot take.
    """
    mapper = _Mapper(state_dict, source)
    tensors = mapper.tensors
    has_head = any(k.startswith(CROSS_MODAL_ROOTS) for k in tensors)
    authors = mapper.clip_prefixed or mapper.head_prefixed or any(k.startswith(HEAD_ROOTS) for k in tensors)

    core = ("visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight", "text_projection")
    absent = [name for name in core if name not in tensors]
    vision_layers = mapper.count("visual.transformer.resblocks.")
    text_layers = mapper.count("transformer.resblocks.")
    if not vision_layers:
        absent.append("visual.transformer.resblocks.0.*")
    if not text_layers:
        absent.append("transformer.resblocks.0.*")
    if absent:
        first = ", ".join(list(mapper.origin.values())[:6])
        raise CheckpointMismatchError(
            source,
            missing=[mapper.display(a) for a in absent],
            hint=f"not an OpenAI-format CLIP state dict (its first keys: {first})",
        )
    conv = tensors["visual.conv1.weight"]
    layouts = {
        "visual.conv1.weight": 4,
        "visual.positional_embedding": 2,
        "token_embedding.weight": 2,
        "text_projection": 2,
    }
    bad = [
        f"{mapper.display(k)}: {tuple(tensors[k].shape)} is not {n}-D"
        for k, n in layouts.items()
        if tensors[k].ndim != n
    ]
    if bad or conv.shape[-1] != conv.shape[-2]:
        raise CheckpointMismatchError(
            source,
            mismatched=bad
            or [f"{mapper.display('visual.conv1.weight')}: {tuple(conv.shape)} has a non-square kernel"],
        )
    vision_width, channels, patch = conv.shape[0], conv.shape[1], conv.shape[-1]
    vocab, text_width = tensors["token_embedding.weight"].shape
    projection_dim = tensors["text_projection"].shape[-1]
    context = tensors["positional_embedding"].shape[0] if "positional_embedding" in tensors else 77
    cross_depth = mapper.count("cross_modal_transformer.resblocks.")
    classifier = tensors.get("classifier.weight")

    def mlp_width(root: str, width: int) -> int:
        fc = mapper.get(f"{root}0.mlp.c_fc.weight")
        return fc.shape[0] if fc is not None else 4 * width

    if vocab == CLIP_VOCAB_SIZE:
        mask_row, mask_note = _mask_plan(vocab, source_mask_id, authors, has_head)
    elif vocab == CLIP_VOCAB_SIZE + 1:
        if source_mask_id != "auto":
            raise ValueError(
                f"source_mask_id={source_mask_id!r}: the source already has a `<|mask|>` row "
                f"({vocab:,} tokens); leave it 'auto'"
            )
        mask_row, mask_note = (
            None,
            f"the source already has {vocab:,} rows: `<|mask|>` is id {GADMS_MASK_ID} as stored",
        )
    else:
        raise ValueError(
            f"{mapper.display('token_embedding.weight')} has {vocab} rows; expected CLIP's BPE vocabulary of "
            f"{CLIP_VOCAB_SIZE} (or {CLIP_VOCAB_SIZE + 1} with `<|mask|>`), which the GA-DMS tokenizer uses"
        )
    positions, grid_note = _fit_positions(
        tensors["visual.positional_embedding"], tuple(image_size), patch, authors
    )

    config_kwargs = dict(
        text_config=dict(
            vocab_size=CLIP_VOCAB_SIZE + 1,
            hidden_size=text_width,
            intermediate_size=mlp_width("transformer.resblocks.", text_width),
            num_hidden_layers=text_layers,
            num_attention_heads=_heads(text_width, "text"),
            max_position_embeddings=context,
            projection_dim=projection_dim,
            hidden_act="quick_gelu",
            **CLIP_TOKEN_IDS,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=mlp_width("visual.transformer.resblocks.", vision_width),
            num_hidden_layers=vision_layers,
            num_attention_heads=_heads(vision_width, "vision"),
            image_size=list(image_size),
            patch_size=patch,
            num_channels=channels,
            projection_dim=projection_dim,
            hidden_act="quick_gelu",
        ),
        projection_dim=projection_dim,
        mask_token_id=GADMS_MASK_ID,
        num_identities=classifier.shape[0] if classifier is not None else 0,
        gass_num_layers=min(GADMSConfig.gass_num_layers, text_layers),
    )
    if has_head:
        config_kwargs["cross_modal_depth"] = cross_depth
    config_kwargs.update(config_overrides)
    config = GADMSConfig(**config_kwargs)

    def add_mask_row(table: torch.Tensor) -> torch.Tensor:
        return with_mask_row(table, mask_row) if vocab == CLIP_VOCAB_SIZE else table

    for name, target in _TOWER_RENAMES.items():
        mapper.copy(name, target)
    mapper.copy(
        "visual.positional_embedding",
        "vision_model.embeddings.position_embedding.weight",
        lambda _: positions,
    )
    mapper.copy("token_embedding.weight", "text_model.embeddings.token_embedding.weight", add_mask_row)
    # OpenAI keeps projections as (in, out) matrices used as x @ proj; nn.Linear stores (out, in).
    mapper.copy("visual.proj", "visual_projection.weight", torch.t)
    mapper.copy("text_projection", "text_projection.weight", torch.t)
    for i in range(vision_layers):
        mapper.block(f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}.")
    for i in range(text_layers):
        mapper.block(f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}.")
    if has_head:
        blocks = [
            f"cross_modal_transformer.resblocks.{i}.{p}"
            for i in range(cross_depth)
            for p in _CROSS_BLOCK_PARAMS
        ]
        for name in (*_CROSS_MODAL_PARAMS, *blocks):
            mapper.copy(name, "cross_modal." + name.replace("cross_modal_transformer.resblocks.", "blocks."))
        for param in ("weight", "bias"):
            mapper.copy(f"mlm_head.fc.{param}", f"cross_modal.mlm_head.fc.{param}", add_mask_row)
    if any(k.startswith("classifier.") for k in tensors):
        for param in ("weight", "bias"):
            mapper.copy(f"classifier.{param}", f"classifier.{param}")
    if mapper.missing or mapper.unused():
        raise CheckpointMismatchError(source, missing=mapper.missing, unexpected=mapper.unused())

    model = GADMSModel(config)
    expected = model.state_dict()
    fresh = [] if has_head or model.cross_modal is None else ["cross_modal"]
    mismatched = [
        f"{mapper.provenance[key]} {tuple(value.shape)} -> {key} expects {tuple(expected[key].shape)}"
        for key, value in mapper.out.items()
        if key in expected and value.shape != expected[key].shape
    ]
    unset = [k for k in expected if k not in mapper.out and k.split(".")[0] not in fresh]
    foreign = [f"{mapper.provenance[k]} -> {k}" for k in mapper.out if k not in expected]
    if mismatched or unset or foreign:
        raise CheckpointMismatchError(
            source,
            missing=[f"(model weight) {k}" for k in unset],
            unexpected=[f"(no such model weight) {k}" for k in foreign],
            mismatched=mismatched,
        )
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapper.out.items()}, strict=False)
    model.eval()

    ignored = {}
    for name in NON_WEIGHT_KEYS:
        if name in tensors and tensors[name].numel() == 1:
            value = tensors[name].float().item()
            ignored[mapper.origin[name]] = f"{value:.4g}"
            if name == "logit_scale":
                ignored[mapper.origin[name]] += (
                    f" (scale {math.exp(value):.4g}; GA-DMS fixes {config.similarity_scale:g})"
                )
        elif name in tensors:
            ignored[mapper.origin[name]] = f"tensor of shape {tuple(tensors[name].shape)}"
    report = ConversionReport(
        source=source,
        layout="GA-DMS / IRRA training checkpoint" if authors else "OpenAI-format CLIP",
        num_source_tensors=len(tensors),
        source_dtypes=sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values()}),
        architecture=dict(
            vision_width=vision_width,
            vision_layers=vision_layers,
            vision_heads=config.vision_config.num_attention_heads,
            patch_size=patch,
            image_size=f"{image_size[0]}x{image_size[1]}",
            text_width=text_width,
            text_layers=text_layers,
            text_heads=config.text_config.num_attention_heads,
            context_length=context,
            source_vocab_size=vocab,
            projection_dim=projection_dim,
            cross_modal_depth=config.cross_modal_depth if model.cross_modal is not None else 0,
            num_identities=config.num_identities,
        ),
        positional_grid=grid_note,
        mask_token=mask_note,
        ignored=ignored,
        fresh_modules=fresh,
    )
    return model, report


__all__ = [
    "AUTHORS_PREFIX",
    "IRRA_MASK_ID",
    "CheckpointMismatchError",
    "ConversionReport",
    "MaskSource",
    "convert_openai_state_dict",
]
