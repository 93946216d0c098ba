"""A searchable gallery: image embeddings computed once, a query answered by one matrix product and a top-k.

Two sources: a folder of photos (through the crash-safe `index_folder`, no identities) or an evaluation
split of a corpus (`load_corpus` + `gallery_and_queries`), which also brings identities and captions, so
hits can be marked right or wrong and an image can be searched for its best-matching captions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.corpus import CORPORA, gallery_and_queries, load_corpus
from ..evaluation.embedding import embed_images, embed_texts
from ..evaluation.ranking import retrieve_topk
from .folder_index import index_folder


@dataclass
class Gallery:
    """Images (rows of `embeddings`, L2-normalised) and, for a corpus split, identities and captions."""

    description: str
    names: list[str]
    embeddings: torch.Tensor
    load_image: Callable[[int], Image.Image]
    person_ids: np.ndarray | None = None
    captions: list[str] | None = None
    caption_embeddings: torch.Tensor | None = None
    caption_person_ids: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def rank(self, query_embedding: torch.Tensor, k: int) -> list[tuple[int, float]]:
        """The k best (row, cosine) for one L2-normalised query embedding, best first, ties by row."""
        scores = self.embeddings @ query_embedding.reshape(-1).to(self.embeddings.dtype)
        top = retrieve_topk(None, None, min(k, len(self)), similarity=scores[None].clone())[0]
        return [(row, float(scores[row])) for row in top.tolist()]

    def best_captions(self, row: int, k: int) -> list[tuple[int, float]]:
        """The k captions (index, cosine) that best describe gallery image `row`; [] without captions."""
        if self.caption_embeddings is None or not len(self.caption_embeddings):
            return []
        scores = self.caption_embeddings @ self.embeddings[row]
        top = retrieve_topk(None, None, min(k, len(scores)), similarity=scores[None].clone())[0]
        return [(index, float(scores[index])) for index in top.tolist()]

    def identities_of(self, text: str) -> set[int]:
        """The identities a text describes when it is one of the gallery's captions (else empty)."""
        if self.captions is None or self.caption_person_ids is None:
            return set()
        wanted = " ".join(text.split())
        return {int(pid) for caption, pid in zip(self.captions, self.caption_person_ids)
                if " ".join(caption.split()) == wanted}


def _thumbnail(image: Image.Image, height: int = 256) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((height, height))
    return image


def folder_gallery(model: Any, processor: Any, folder: str | Path, batch_size: int = 64,
                   progress: bool = True) -> Gallery:
    """A gallery of every readable photo under `folder`, indexed (and re-indexed) incrementally."""
    index = index_folder(model, processor, folder, batch_size=batch_size, progress=progress)
    root = index.folder

    def load(row: int) -> Image.Image:
        with Image.open(root / index.names[row]) as image:
            image.draft("RGB", (512, 512))
            return _thumbnail(image)

    return Gallery(f"folder {root} ({len(index.names):,} images)", index.names, index.embeddings, load,
                   skipped=index.skipped)


def corpus_gallery(model: Any, processor: Any, name: str, split: str = "test", data_dir: str | None = None,
                   batch_size: int = 64, progress: bool = True, **corpus_kwargs: Any) -> Gallery:
    """The retrieval gallery of one corpus split, with its identities and captions embedded too."""
    dataset = load_corpus(name, data_dir=data_dir, split=split, **corpus_kwargs)
    gallery, queries = gallery_and_queries(dataset)
    images = embed_images(model, gallery, processor, batch_size=batch_size, progress=progress).cpu()
    captions = list(queries["caption"])
    texts = embed_texts(model, captions, processor, batch_size=batch_size, progress=progress).cpu()
    person_ids = np.asarray(gallery["person_id"])
    names = [f"image {image_id} (person {pid})" for image_id, pid in zip(gallery["image_id"], person_ids)]
    return Gallery(
        f"{name} {split} split ({len(names):,} images of {len(set(person_ids.tolist())):,} people, "
        f"{len(captions):,} captions)",
        names, images, lambda row: _thumbnail(gallery[row]["image"]), person_ids, captions, texts,
        np.asarray(queries["person_id"]),
    )


def open_gallery(spec: str, model: Any, processor: Any, data_dir: str | None = None, batch_size: int = 64,
                 progress: bool = True) -> Gallery:
    """`spec` is a folder of photos or `corpus[:split]` (e.g. `synth-pedes:test`, the default split test)."""
    if Path(spec).is_dir():
        return folder_gallery(model, processor, spec, batch_size, progress)
    name, _, split = spec.partition(":")
    if name not in CORPORA:
        raise ValueError(
            f"--gallery {spec!r} is neither a folder of images nor a corpus split; corpora: "
            f"{', '.join(sorted(CORPORA))} (e.g. synth-pedes:test)"
        )
    return corpus_gallery(model, processor, name, split or "test", data_dir, batch_size, progress)


__all__ = ["Gallery", "corpus_gallery", "folder_gallery", "open_gallery"]
