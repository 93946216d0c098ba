"""What the demo page asks of the model, without any UI: rank the gallery, explain a hit word by word,
and describe an image with its best-matching captions.

Gallery embeddings are computed once when the engine is built; a query costs one text forward, one
(gallery x width) matrix-vector product and a top-k, plus one GASS pass for the word view.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from ..evaluation.embedding import embed_texts
from ..search.gallery import Gallery
from ..search.word_scores import DescriptionScores, word_gass_scores

FOLDER_EXAMPLES = (
    "a woman with long black hair in a red jacket, blue jeans and white shoes",
    "a man in a grey hoodie and black trousers carrying a black backpack",
    "a young man wearing a yellow t-shirt, dark shorts and a cap",
    "a girl in a pink dress holding a small handbag",
)


class QueryError(ValueError):
    """A query the engine cannot answer (e.g. empty); the message is meant for the page."""


@dataclass(frozen=True)
class Hit:
    rank: int
    row: int
    name: str
    score: float
    truth: bool | None  # same identity as the query's caption; None when that is unknown


@dataclass(frozen=True)
class CaptionMatch:
    text: str
    score: float
    truth: bool | None  # the caption describes the image's identity; None without identities


@dataclass
class Answer:
    query: str
    hits: list[Hit]
    words: DescriptionScores  # the query's words scored against `hits[0]`
    captions: list[CaptionMatch]  # best captions for `hits[0]`
    notes: list[str] = field(default_factory=list)


class SearchEngine:
    """Answers queries against one gallery with one model. Safe to call from several threads."""

    def __init__(self, model: Any, processor: Any, gallery: Gallery, top_k: int = 8, num_captions: int = 5):
        if top_k < 1 or num_captions < 1:
            raise ValueError(f"top_k and num_captions must be >= 1, got {top_k} and {num_captions}")
        self.model = model.eval()
        self.processor = processor
        self.gallery = gallery
        self.top_k = top_k
        self.num_captions = num_captions
        # GASS hooks the text tower's attention modules: two passes at once would read each other's tensors.
        self._lock = threading.Lock()

    @property
    def examples(self) -> list[str]:
        """Queries to click: one caption of each of the first identities, or generic ones for a folder."""
        if not self.gallery.captions:
            return list(FOLDER_EXAMPLES)
        chosen, seen = [], set()
        for caption, pid in zip(self.gallery.captions, self.gallery.caption_person_ids):
            if int(pid) not in seen:
                seen.add(int(pid))
                chosen.append(caption)
            if len(chosen) == 4:
                break
        return chosen

    def embed_query(self, text: str) -> torch.Tensor:
        with self._lock:
            return embed_texts(self.model, [text], self.processor, progress=False)[0].cpu()

    def search(self, text: str) -> Answer:
        """The top-k hits for `text`, its words scored against the best hit, and that hit's captions."""
        text = (text or "").strip()
        if not text:
            raise QueryError("Type a description of a person first, e.g. “a woman in a red jacket and blue jeans”.")
        ranked = self.gallery.rank(self.embed_query(text), self.top_k)
        identities = self.gallery.identities_of(text)
        person_ids = self.gallery.person_ids
        hits = [
            Hit(rank, row, self.gallery.names[row], score,
                None if not identities or person_ids is None else int(person_ids[row]) in identities)
            for rank, (row, score) in enumerate(ranked, start=1)
        ]
        words, captions = self.explain(text, hits[0].row)
        notes = []
        if words.truncated:
            kept = [w.text for w in words.words if w.score is not None]
            notes.append(
                f"The description has {words.num_tokens} tokens; the model reads {words.max_tokens}, so it was "
                f"truncated after “{kept[-1] if kept else ''}”: the struck-through words were not used."
            )
        return Answer(text, hits, words, captions, notes)

    def explain(self, text: str, row: int) -> tuple[DescriptionScores, list[CaptionMatch]]:
        """`text`'s words scored against gallery image `row`, and the captions that best match that image."""
        if not 0 <= row < len(self.gallery):
            raise QueryError(f"There is no gallery image {row}; the gallery has {len(self.gallery)}.")
        with self._lock:
            words = word_gass_scores(self.model, self.processor, text, self.gallery.embeddings[row])
        person_ids, caption_ids = self.gallery.person_ids, self.gallery.caption_person_ids
        captions = [
            CaptionMatch(self.gallery.captions[index], score,
                         None if person_ids is None or caption_ids is None
                         else int(caption_ids[index]) == int(person_ids[row]))
            for index, score in self.gallery.best_captions(row, self.num_captions)
        ]
        return words, captions


__all__ = ["Answer", "CaptionMatch", "Hit", "QueryError", "SearchEngine"]
