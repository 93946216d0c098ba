"""Embed a gallery and its queries with a model, then rank them: the model-facing half of evaluation.

`ranking.py` scores embeddings it is given; this module makes them, from PIL images, tensors or a
`datasets.Dataset`, with the model in eval mode and restored afterwards, so the same functions serve the
benchmarks, `RetrievalEvalCallback` in the middle of training, the search gallery and the demo.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from PIL import Image
from tqdm.auto import tqdm
from transformers import ImageProcessingMixin, ProcessorMixin

from .ranking import Direction, as_ids, check_direction, identity_codes, rank_metrics, retrieve_topk


def _model_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


def _pixel_values(batch: list[Any], processor_or_transform: Any) -> torch.Tensor:
    """Turn one batch of images (PIL / arrays / already-transformed tensors) into a (B, 3, H, W) tensor."""
    if all(isinstance(item, torch.Tensor) for item in batch):
        return torch.stack(batch)
    if processor_or_transform is None:
        raise ValueError(
            "images are not tensors, so a processor or transform is needed to turn them into pixels"
        )
    images = [
        item.convert("RGB") if isinstance(item, Image.Image) and item.mode != "RGB" else item
        for item in batch
    ]
    if isinstance(processor_or_transform, (ProcessorMixin, ImageProcessingMixin)):
        return processor_or_transform(images=images, return_tensors="pt")["pixel_values"]
    return torch.stack([torch.as_tensor(processor_or_transform(image)) for image in images])


def _image_batches(images_or_dataset: Any, batch_size: int) -> Iterator[list[Any]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(images_or_dataset), batch_size):
        try:
            batch = images_or_dataset[start : start + batch_size]
        except OSError as error:  # an unreadable image: skipping it would shift every later gallery id
            raise ValueError(
                f"could not decode the images of rows {start}-{start + batch_size - 1}: {error}"
            ) from error
        if isinstance(images_or_dataset, Dataset):
            # a dataset with a transform yields `pixel_values`; a plain one decodes its `image` column
            column = next((name for name in ("pixel_values", "image") if name in batch), None)
            if column is None:
                raise ValueError(
                    f"image dataset rows need an 'image' or 'pixel_values' field, got {list(batch)}"
                )
            batch = batch[column]
        yield list(batch)


@torch.no_grad()
def embed_images(
    model: torch.nn.Module,
    images_or_dataset: Sequence[Any] | torch.Tensor | Dataset,
    processor_or_transform: Any = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """L2-normalised float32 image embeddings (on `device`) from `model.get_image_features`.

    `images_or_dataset` is a sequence of PIL images / arrays / (3, H, W) tensors, an (N, 3, H, W) tensor of
    pixel values, or a `datasets.Dataset` with an `image` (or transformed `pixel_values`) column.
    Non-tensor images go through `processor_or_transform`: a `GADMSProcessor`, an image processor,
    or any callable image -> (3, H, W) tensor. `device` defaults to the model's; the model is put in
    eval mode for the pass and restored afterwards, so this is safe in the middle of training.
    """
    device = _model_device(model, device)
    was_training = model.training
    model.eval()
    parts = []
    try:
        total = -(-len(images_or_dataset) // batch_size)
        for batch in tqdm(
            _image_batches(images_or_dataset, batch_size),
            total=total,
            disable=not progress,
            desc="embedding images",
        ):
            pixels = _pixel_values(batch, processor_or_transform).to(device)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                features = model.get_image_features(pixel_values=pixels).pooler_output
            parts.append(F.normalize(features.float(), dim=-1))
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("no images to embed")
    return torch.cat(parts)


@torch.no_grad()
def embed_texts(
    model: torch.nn.Module,
    captions: Sequence[str],
    processor: Any,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """L2-normalised float32 caption embeddings (on `device`) from `model.get_text_features`.

    `processor` is a `GADMSProcessor` (fixed 77-token padding) or a bare tokenizer (padded to the
    longest caption of the batch; the causal text tower makes the two give the same embeddings).
    """
    captions = list(captions)
    if not captions:
        raise ValueError("no captions to embed")
    bad = next((i for i, caption in enumerate(captions) if not isinstance(caption, str)), None)
    if bad is not None:
        raise ValueError(f"captions must be strings; caption #{bad} is {type(captions[bad]).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _model_device(model, device)
    was_training = model.training
    model.eval()
    parts = []
    try:
        starts = range(0, len(captions), batch_size)
        for start in tqdm(starts, disable=not progress, desc="embedding captions"):
            batch = captions[start : start + batch_size]
            if isinstance(processor, ProcessorMixin):
                tokens = processor(text=batch, return_tensors="pt")
            else:
                tokens = processor(batch, padding=True, truncation=True, return_tensors="pt")
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                features = model.get_text_features(
                    input_ids=tokens["input_ids"].to(device),
                    attention_mask=tokens["attention_mask"].to(device),
                ).pooler_output
            parts.append(F.normalize(features.float(), dim=-1))
    finally:
        model.train(was_training)
    return torch.cat(parts)


def _require_columns(dataset: Dataset, name: str, columns: tuple[str, ...]) -> Dataset:
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}")
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {dataset.column_names}")
    # drop any user transform: images go through `processor`, ids and captions are read raw
    return dataset.select_columns(list(columns)).with_format(None)


def evaluate_retrieval(
    model: torch.nn.Module,
    processor: Any,
    gallery: Dataset,
    queries: Dataset,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    direction: Direction = "t2i",
    return_topk: int | None = None,
    chunk_size: int = 1024,
    skip_unmatched: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed `gallery` (columns `image`, `person_id`) and `queries` (`caption`, `person_id`), then rank.

    Returns `rank_metrics`'s dict. With `return_topk=k` it also holds `"topk_indices"` (LongTensor
    (n_ranked, k), best first: gallery rows for t2i, query rows for i2t) and `"topk_correct"` (bool,
    same shape: whether that item has the ranked item's identity), what `plot_retrieval_grid` draws.
    """
    check_direction(direction)
    gallery = _require_columns(gallery, "gallery", ("image", "person_id"))
    queries = _require_columns(queries, "queries", ("caption", "person_id"))
    gallery_ids = as_ids(
        gallery.select_columns("person_id").with_format("numpy")[:]["person_id"], "gallery person_id"
    )
    query_ids = as_ids(
        queries.select_columns("person_id").with_format("numpy")[:]["person_id"], "queries person_id"
    )
    image_embeds = embed_images(
        model, gallery.select_columns("image"), processor, batch_size, device, progress=progress
    )
    text_embeds = embed_texts(model, queries["caption"], processor, batch_size, device, progress=progress)
    result: dict[str, Any] = rank_metrics(
        text_embeds,
        image_embeds,
        query_ids,
        gallery_ids,
        ks=ks,
        chunk_size=chunk_size,
        direction=direction,
        skip_unmatched=skip_unmatched,
    )
    if return_topk is not None:
        if direction == "t2i":
            ranked, candidates, ranked_ids, candidate_ids = text_embeds, image_embeds, query_ids, gallery_ids
        else:
            ranked, candidates, ranked_ids, candidate_ids = image_embeds, text_embeds, gallery_ids, query_ids
        topk = retrieve_topk(ranked, candidates, return_topk, chunk_size=chunk_size)
        ranked_codes, candidate_codes = identity_codes(ranked_ids, candidate_ids)
        result["topk_indices"] = topk
        result["topk_correct"] = torch.from_numpy(candidate_codes[topk.numpy()] == ranked_codes[:, None])
    return result


__all__ = ["embed_images", "embed_texts", "evaluate_retrieval"]
