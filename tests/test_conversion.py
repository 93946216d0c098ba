"""Authors' GA-DMS checkpoints and OpenAI-format CLIP state dicts -> GADMSModel, checked against open_clip.

open_clip is the independent implementation: a reduced ViT-B/16-style CLIP with random
weights, configured as OpenAI CLIP (QuickGELU, CLS pooling after ln_post, argmax text
pooling). The authors' MIM head is re-written below from their description, with their
module names, so its state dict *is* their checkpoint layout.
"""

import importlib.util
from collections import OrderedDict
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import QuickGELU, Transformer
from safetensors.torch import save_file
from torch import nn

from gadms_hf import GADMSModel, GADMSProcessor
from gadms_hf.conversion.loading import file_sha256, load_authors_checkpoint, load_state_dict_file
from gadms_hf.conversion.openai_clip import IRRA_MASK_ID, CheckpointMismatchError, convert_openai_state_dict

from .conftest import CAPTIONS, random_images

IMAGE_SIZE = (96, 32)  # 6 x 2 patches: rectangular like 384 x 128
VISION_WIDTH, TEXT_WIDTH, EMBED_DIM = 192, 64, 128  # 3, 1 and 2 heads of 64; non-square projections
CROSS_DEPTH, NUM_IDS, MASK_ID = 2, 7, 49408
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_authors_checkpoint.py"


def _script_main():
    spec = importlib.util.spec_from_file_location("convert_authors_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _jitter(module: nn.Module) -> nn.Module:
    """Perturb every parameter (norms start at 1/0, biases at 0: a swapped norm or bias would go unseen),
    rounded to fp16-exact values so an fp16 checkpoint of them is lossless."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn_like(param)).copy_(param.half().float())
    return module.eval()


def _open_clip(image_size: tuple[int, int], seed: int) -> open_clip.CLIP:
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(
        layers=2,
        width=VISION_WIDTH,
        head_width=64,
        patch_size=16,
        image_size=image_size,
        pool_type="tok",
        final_ln_after_pool=False,
        attentional_pool=False,
    )
    text = CLIPTextCfg(
        context_length=77,
        vocab_size=49408,
        width=TEXT_WIDTH,
        heads=TEXT_WIDTH // 64,
        layers=2,
        pool_type="argmax",
    )
    return _jitter(open_clip.CLIP(EMBED_DIM, vision, text, quick_gelu=True))


class AuthorsMIMHead(nn.Module):
    """The authors' MIM path: cross-attention (queries: layer-normed text tokens; keys/values: layer-normed
    image tokens), OpenAI residual blocks, ln_post, dense -> QuickGELU -> LayerNorm -> fc over 49,408 ids."""

    def __init__(self, width: int, depth: int, vocab: int = 49408):
        super().__init__()
        heads = width // 64
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_modal_transformer = Transformer(width, depth, heads, act_layer=QuickGELU, batch_first=True)
        self.ln_pre_t, self.ln_pre_i, self.ln_post = (
            nn.LayerNorm(width),
            nn.LayerNorm(width),
            nn.LayerNorm(width),
        )
        layers = [
            ("dense", nn.Linear(width, width)),
            ("gelu", QuickGELU()),
            ("ln", nn.LayerNorm(width)),
            ("fc", nn.Linear(width, vocab)),
        ]
        self.mlm_head = nn.Sequential(OrderedDict(layers))

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        image = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), image, image, need_weights=False)[0]
        return self.mlm_head(self.ln_post(self.cross_modal_transformer(x)))


def _captured(module: nn.Module, run) -> torch.Tensor:
    """`module`'s output while `run()` executes."""
    outputs = []
    handle = module.register_forward_hook(lambda _m, _i, output: outputs.append(output))
    try:
        run()
    finally:
        handle.remove()
    return outputs[0]


@pytest.fixture(scope="module")
def authors_parts():
    clip = _open_clip(IMAGE_SIZE, seed=0)
    torch.manual_seed(1)
    return clip, _jitter(AuthorsMIMHead(EMBED_DIM, CROSS_DEPTH)), _jitter(nn.Linear(EMBED_DIM, NUM_IDS))


def _authors_state(parts, head_prefix: str = "") -> dict[str, torch.Tensor]:
    """Their layout: CLIP under `base_model.` (their CLIP has no logit_scale), MIM modules and classifier
    at the top level (or prefixed too), matrices in fp16 as their `convert_weights` leaves them."""
    clip, head, classifier = parts
    state = {f"base_model.{k}": v for k, v in clip.state_dict().items() if k != "logit_scale"}
    state |= {f"{head_prefix}{k}": v for k, v in head.state_dict().items()}
    state |= {f"{head_prefix}classifier.{k}": v for k, v in classifier.state_dict().items()}
    return {k: v.half() if v.ndim >= 2 else v.clone() for k, v in state.items()}


@pytest.fixture(scope="module", params=["", "base_model."], ids=["heads-unprefixed", "heads-prefixed"])
def converted(request, authors_parts, tmp_path_factory):
    """The script run on a saved authors' checkpoint; the output directory loaded back."""
    root = tmp_path_factory.mktemp("authors")
    checkpoint = root / "best0.pth"
    torch.save({"model": _authors_state(authors_parts, request.param), "epoch": 30}, checkpoint)
    out = _script_main()(
        [
            "--checkpoint",
            str(checkpoint),
            "--output_dir",
            str(root / "gadms"),
            "--image_size",
            str(IMAGE_SIZE[0]),
            str(IMAGE_SIZE[1]),
        ]
    )
    return GADMSModel.from_pretrained(out).eval(), GADMSProcessor.from_pretrained(out), out, checkpoint


def test_authors_checkpoint_embeddings_match_open_clip(converted, authors_parts):
    model, processor, _, _ = converted
    clip, _, classifier = authors_parts
    batch = processor(text=CAPTIONS, images=random_images(len(CAPTIONS)))
    # Real sentences: our tokenizer gives open_clip's ids, padded with end-of-text where open_clip pads with 0.
    oc_ids = open_clip.get_tokenizer("ViT-B-16")(CAPTIONS)
    valid = batch["attention_mask"].bool()
    assert torch.equal(batch["input_ids"][valid], oc_ids[valid]) and bool((oc_ids[~valid] == 0).all())
    with torch.no_grad():
        image = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ref_image, ref_text = clip.encode_image(batch["pixel_values"]), clip.encode_text(oc_ids)
    assert image.shape == (len(CAPTIONS), EMBED_DIM) and ref_text.abs().mean() > 0.1
    torch.testing.assert_close(image, ref_image, rtol=0, atol=1e-4)
    torch.testing.assert_close(text.pooler_output, ref_text, rtol=0, atol=1e-4)
    torch.testing.assert_close(model.classifier.weight, classifier.weight, rtol=0, atol=0)


def test_authors_checkpoint_mim_logits_match_the_authors_head(converted, authors_parts):
    model, processor, _, _ = converted
    clip, head, _ = authors_parts
    batch = processor(text=CAPTIONS, images=random_images(len(CAPTIONS), seed=1))
    ids, pixels = batch["input_ids"], batch["pixel_values"]
    labels = torch.full_like(ids, -100)
    ours_ids, their_ids = ids.clone(), ids.clone()
    for row, col in [(0, 2), (0, 5), (1, 1), (2, 3), (3, 4), (3, 7)]:
        labels[row, col] = ids[row, col]
        ours_ids[row, col], their_ids[row, col] = MASK_ID, IRRA_MASK_ID  # the same token in either tokenizer
    with torch.no_grad():
        # the fused loss never forms the logits: take the states it reads, then apply the head to them
        ours_states = _captured(
            model.cross_modal.ln_post,
            lambda: model(
                pixel_values=pixels,
                input_ids=ids,
                mim_input_ids=ours_ids,
                mim_labels=labels,
                return_loss=True,
            ),
        )
        ours = model.cross_modal.mlm_head(ours_states)
        # The authors feed every projected text / image token state (after ln_final / ln_post) to the head.
        text_states = _captured(clip.ln_final, lambda: clip.encode_text(their_ids)) @ clip.text_projection
        image_states = _captured(clip.visual.ln_post, lambda: clip.encode_image(pixels)) @ clip.visual.proj
        theirs = head(text_states, image_states)[labels != -100]
    assert ours.shape == (6, MASK_ID + 1) and theirs.shape == (6, MASK_ID)
    torch.testing.assert_close(ours[:, :MASK_ID], theirs, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours[:, MASK_ID], theirs[:, IRRA_MASK_ID], rtol=0, atol=1e-4)


def test_authors_output_dir_has_card_and_weights(converted):
    model, processor, out, checkpoint = converted
    card = (out / "README.md").read_text()
    assert checkpoint.name in card and file_sha256(checkpoint) in card
    assert "source row 49405 copied to row 49408" in card and "GA-DMS / IRRA training checkpoint" in card
    assert (out / "model.safetensors").is_file() and processor.mask_token_id == MASK_ID
    assert model.config.cross_modal_depth == CROSS_DEPTH and model.config.num_identities == NUM_IDS
    assert model.config.image_size == IMAGE_SIZE


def test_plain_openai_clip_matches_open_clip_after_grid_resize(tmp_path, processor):
    square = _open_clip((64, 64), seed=2)  # a 4 x 4 grid, like a 224-pixel CLIP
    state = square.state_dict()
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    model, report = load_authors_checkpoint(path, image_size=IMAGE_SIZE)
    assert report.layout == "OpenAI-format CLIP" and report.fresh_modules == ["cross_modal"]
    assert report.positional_grid.startswith("resized 4x4 -> 6x2") and "logit_scale" in report.ignored
    tokens = model.text_model.embeddings.token_embedding.weight
    torch.testing.assert_close(tokens[MASK_ID], state["token_embedding.weight"].mean(0))

    # Reference: the same weights in an open_clip model built at 96 x 32, its table resized here (bilinear).
    table = state["visual.positional_embedding"]
    grid = table[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, size=(6, 2), mode="bilinear", align_corners=False)
    rect = _open_clip(IMAGE_SIZE, seed=3)
    rect.load_state_dict(
        {**state, "visual.positional_embedding": torch.cat([table[:1], grid.flatten(2).mT[0]])}
    )

    batch = processor(text=CAPTIONS, images=random_images(len(CAPTIONS), seed=2))
    oc_ids = open_clip.get_tokenizer("ViT-B-16")(CAPTIONS)
    with torch.no_grad():
        image = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        torch.testing.assert_close(image, rect.encode_image(batch["pixel_values"]), rtol=0, atol=1e-4)
        torch.testing.assert_close(text.pooler_output, rect.encode_text(oc_ids), rtol=0, atol=1e-4)


class TrainingArgs:
    """Stands for the custom objects training scripts pickle beside the weights."""

    lr = 1e-5


def _pop(key):
    return lambda state: (state.pop(key), {"model": state})[1]


def _add(key, value):
    return lambda state: {"model": {**state, key: value}}


ERRORS = {
    "missing-clip-key": (
        _pop("base_model.visual.transformer.resblocks.1.ln_2.bias"),
        (),
        ["missing keys (1): base_model.visual.transformer.resblocks.1.ln_2.bias"],
    ),
    "missing-head-key": (_pop("mlm_head.ln.weight"), (), ["missing keys (1): mlm_head.ln.weight"]),
    "extra-key": (
        _add("base_model.visual.adapter.weight", torch.zeros(3)),
        (),
        ["unexpected keys (1): base_model.visual.adapter.weight"],
    ),
    "same-weight-twice": (
        _add("base_model.ln_post.weight", torch.ones(EMBED_DIM)),
        (),
        ["name the same weight"],
    ),
    "wrong-shape": (
        _add("base_model.transformer.resblocks.1.mlp.c_fc.weight", torch.zeros(100, TEXT_WIDTH)),
        (),
        [
            "wrong shapes (1)",
            "base_model.transformer.resblocks.1.mlp.c_fc.weight (100, 64)",
            "expects (256, 64)",
        ],
    ),
    "wrong-image-size": (
        lambda state: {"model": state},
        ("--image_size", "384", "128"),
        ["holds 12 patch positions, not the 24x8=192"],
    ),
    "needs-code": (
        lambda state: {"model": state, "args": TrainingArgs()},
        (),
        ["cannot be read without running code", "weights_only", "Unsupported global", "TrainingArgs"],
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_checkpoint_fails_clearly_and_writes_nothing(case, tmp_path, authors_parts):
    edit, extra_args, messages = ERRORS[case]
    checkpoint = tmp_path / "best0.pth"
    torch.save(edit(_authors_state(authors_parts)), checkpoint)
    out = tmp_path / "gadms"
    with pytest.raises(SystemExit) as failure:
        _script_main()(
            [
                "--checkpoint",
                str(checkpoint),
                "--output_dir",
                str(out),
                "--image_size",
                "96",
                "32",
                *extra_args,
            ]
        )
    for message in messages:
        assert message in str(failure.value.code)
    assert sorted(tmp_path.iterdir()) == [checkpoint]  # no output dir, no staging leftovers


def test_non_empty_output_dir_is_refused_before_converting(tmp_path):
    out = tmp_path / "gadms"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not an empty directory"):
        _script_main()(["--checkpoint", str(tmp_path / "absent.pth"), "--output_dir", str(out)])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_wrappers_and_ddp_prefix_are_unwrapped(tmp_path):
    weight = torch.arange(6.0).reshape(2, 3)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {"module.visual.proj": weight}, "optimizer": {"step": 3}}, path)
    assert list(load_state_dict_file(path)) == ["visual.proj"]
    with pytest.raises(CheckpointMismatchError, match="missing keys") as failure:
        convert_openai_state_dict(load_state_dict_file(path))
    assert "visual.conv1.weight" in failure.value.missing
