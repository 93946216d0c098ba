"""Exact Rank-k, mAP and mINP of a scored retrieval problem (docs/method.md §7), and its top-k lists.

Only torch and numpy: the `evaluate` metric module, the benchmark script and the search gallery rank
with these functions without loading a model or `datasets` (`embedding.py` embeds, then ranks here).

The ranking never sorts a whole gallery row. Only the items that can rank above some correct
item matter: those scoring at least the query's lowest correct score (its "candidates"; with a
trained model a few percent of the gallery). They are found with one comparison of the score
chunk against that floor and sorted by (query, score descending, gallery index ascending), which
is exactly the stable descending order of the full row restricted to them, so a correct item's
1-based rank is its place in its query's sorted candidates.

When a chunk has many candidates (a weak model, random scores), a path linear in the gallery
size takes over: every pair gets one int64 key that orders it as a *stable* descending sort
would (the similarity's float32 bit pattern, made monotone, in the high 32 bits and the reversed
gallery index in the low 32), and the correct items' ranks come from one `searchsorted` of each
row against its few correct keys and a histogram. Both are exact and need no Python loop over
queries; work is done in chunks of queries so memory stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

Direction = Literal["t2i", "i2t"]
Matrix = torch.Tensor | np.ndarray

_INT64_MAX = torch.iinfo(torch.int64).max


def as_ids(ids: Sequence[Any] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """`ids` as a 1-D numpy array of integer or string identities; `name` says which in the error."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one identity per item (1-D), got shape {array.shape}")
    if array.dtype.kind not in "iuUSO":
        raise ValueError(f"{name} must hold integer or string identities, got dtype {array.dtype}")
    return array


def identity_codes(query_ids: np.ndarray, gallery_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map both id arrays onto one range of integer codes (ids may be ints or strings)."""
    numeric = [ids.dtype.kind in "iu" for ids in (query_ids, gallery_ids)]
    if numeric[0] != numeric[1]:
        raise ValueError(
            f"query ids ({query_ids.dtype}) and gallery ids ({gallery_ids.dtype}) must both be integers "
            "or both be strings; a mix would never match"
        )
    _, codes = np.unique(np.concatenate([query_ids, gallery_ids]), return_inverse=True)
    codes = codes.reshape(-1)
    return codes[: len(query_ids)], codes[len(query_ids) :]


# The candidate path is taken while a chunk's candidates are at most this share of its scores: each costs
# about 40 bytes (indices, key, sort order), so memory stays within the key path's 16 bytes per score.
_CANDIDATE_SHARE = 0.25


def _check_finite(scores: torch.Tensor) -> None:
    low, high = torch.aminmax(scores)  # one pass, no mask; NaN propagates into both
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise ValueError("similarities contain NaN or inf; check the embeddings (or the similarity matrix)")


def _ranking_keys(scores: torch.Tensor, checked: bool = False) -> torch.Tensor:
    """int64 keys, one per score, whose descending order is the stable descending order of `scores`.

    `scores` (queries x gallery, float32, owned by the caller) is overwritten.
    """
    if not checked:
        _check_finite(scores)
    scores.add_(0.0)  # -0.0 -> +0.0, so that the two zeros tie as they do in a float sort
    bits = scores.view(torch.int32)
    bits ^= (bits >> 31) & 0x7FFFFFFF  # negative floats: reverse their order, keep them below positives
    keys = bits.to(torch.int64)
    keys <<= 32
    gallery_size = scores.shape[1]
    keys |= torch.arange(gallery_size - 1, -1, -1, device=keys.device, dtype=torch.int64)
    return keys


def _candidate_ranks(
    scores: torch.Tensor,
    floor: torch.Tensor,
    counts: torch.Tensor,
    row_codes: torch.Tensor,
    gallery_codes: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor | None:
    """1-based ranks (n, width) of each row's correct items, best first (padding slots hold 0), from the
    items scoring at least `floor`, the row's lowest correct score; `None` when those are more than
    `_CANDIDATE_SHARE` of the scores. `row_codes` / `gallery_codes` are the identity codes of the rows and
    of the gallery; `mask` is a reusable bool buffer of at least `scores.numel()` elements."""
    num_rows, gallery_size = scores.shape
    candidate = torch.ge(scores, floor.unsqueeze(1), out=mask.view(-1)[: scores.numel()].view(scores.shape))
    on_cpu = scores.device.type == "cpu"
    # numpy counts and finds set bits several times faster than torch on the CPU
    total = np.count_nonzero(candidate.numpy()) if on_cpu else int(torch.count_nonzero(candidate))
    if total > _CANDIDATE_SHARE * scores.numel():
        return None
    if on_cpu:
        flat = np.flatnonzero(candidate.numpy())
        values = torch.from_numpy(scores.numpy().reshape(-1)[flat])
        flat = torch.from_numpy(flat)
    else:
        flat = candidate.view(-1).nonzero().squeeze(1)
        values = scores.view(-1)[flat]
    rows = flat // gallery_size  # row-major: gallery index ascending within a row
    index = flat - rows * gallery_size
    del flat
    bits = (values + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes +0.0, so the two zeros tie
    bits ^= (bits >> 31) & 0x7FFFFFFF  # a signed integer in the order of the floats
    # ascending (row, -score): ~bits reverses the order without overflow, + 2**31 makes it non-negative
    keys = (rows << 32) | ((~bits).to(torch.int64) + 2**31)
    order = keys.sort(stable=True).indices  # stable: equal scores keep the lower gallery index first
    del keys, bits, values
    rows, index = rows[order], index[order]
    per_row = torch.bincount(rows, minlength=num_rows)
    place = torch.arange(len(rows), device=rows.device) - (per_row.cumsum(0) - per_row)[rows]
    # every correct item scores at least the floor, so all are here, each row's in rank order
    found = (gallery_codes[index] == row_codes[rows]).nonzero().squeeze(1)
    found_rows = rows[found]
    width = int(counts.max())
    slot = torch.arange(len(found), device=rows.device) - (counts.cumsum(0) - counts)[found_rows]
    ranks = torch.zeros(num_rows * width, dtype=torch.int64, device=rows.device)
    ranks[found_rows * width + slot] = place[found] + 1
    return ranks.view(num_rows, width)


def _key_ranks(
    scores: torch.Tensor, correct_index: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """1-based ranks (n, width) of each row's correct items, best first (padding slots hold 0), in time
    linear in the gallery size: one `searchsorted` of every key against the row's few correct keys and a
    histogram. `scores` (already checked finite) is overwritten."""
    num_rows, width = valid.shape
    device = scores.device
    keys = _ranking_keys(scores, checked=True)
    correct_keys = keys.gather(1, correct_index).masked_fill_(~valid, _INT64_MAX).sort(dim=1).values
    # below[q, g]: how many correct keys of query q are smaller than gallery item g's key
    below = torch.searchsorted(correct_keys, keys, out_int32=True)
    del keys
    below += (torch.arange(num_rows, device=device, dtype=torch.int32) * (width + 1))[:, None]
    histogram = torch.bincount(below.view(-1), minlength=num_rows * (width + 1)).view(num_rows, width + 1)
    del below
    # rank of the t-th smallest correct key (the worst-ranked first): 1 + number of items above it
    worst_first = 1 + histogram.flip(1).cumsum(1).flip(1)[:, 1:]
    slots = torch.arange(width, device=device)
    best_first = worst_first.gather(1, (counts[:, None] - 1 - slots[None, :]).clamp_(min=0))
    return best_first.masked_fill_(~valid, 0)


def check_direction(direction: str) -> None:
    """Refuse anything but `"t2i"` and `"i2t"`, before any work is done."""
    if direction not in ("t2i", "i2t"):
        raise ValueError(
            f"direction must be 't2i' (text queries) or 'i2t' (image queries), got {direction!r}"
        )


def _score_chunks(
    query_embeds: Matrix | None,
    gallery_embeds: Matrix | None,
    similarity: Matrix | None,
    rows: np.ndarray,
    chunk_size: int,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (row indices, float32 scores of those rows against the whole gallery), one chunk at a time.

    From embeddings, every chunk's scores are written into one buffer: a chunk is the caller's to
    overwrite, but only until it asks for the next one.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if similarity is None:
        query = F.normalize(torch.as_tensor(query_embeds).detach().float(), dim=-1)
        gallery_t = F.normalize(torch.as_tensor(gallery_embeds).detach().float().to(query.device), dim=-1).T
        buffer = torch.empty(min(chunk_size, len(rows)) * gallery_t.shape[1], device=query.device)
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        if similarity is None:
            if chunk[-1] - chunk[0] == len(chunk) - 1:  # rows ascend, so these are consecutive: no copy
                part = query[chunk[0] : chunk[-1] + 1]
            else:
                part = query[torch.from_numpy(chunk).to(query.device)]
            out = buffer[: len(chunk) * gallery_t.shape[1]].view(len(chunk), gallery_t.shape[1])
            scores = torch.mm(part, gallery_t, out=out)
        elif isinstance(similarity, torch.Tensor):
            index = torch.from_numpy(chunk).to(similarity.device)
            scores = similarity.detach().index_select(0, index).float()  # a copy: ours to overwrite
        else:
            scores = torch.from_numpy(np.asarray(similarity[chunk], dtype=np.float32))  # fancy index copies
        yield chunk, scores.contiguous()


def _resolve_inputs(
    query_embeds: Matrix | None,
    gallery_embeds: Matrix | None,
    query_ids: Any,
    gallery_ids: Any,
    similarity: Matrix | None,
    direction: str,
) -> tuple[Matrix | None, Matrix | None, Matrix | None, np.ndarray, np.ndarray]:
    """Validate shapes and swap roles for image-to-text, so the rest only knows 'queries' and 'gallery'."""
    check_direction(direction)
    query_ids = as_ids(query_ids, "query_ids")
    gallery_ids = as_ids(gallery_ids, "gallery_ids")
    if similarity is not None:
        if query_embeds is not None or gallery_embeds is not None:
            raise ValueError("pass either embeddings or `similarity`, not both")
        if tuple(similarity.shape) != (len(query_ids), len(gallery_ids)):
            raise ValueError(
                f"similarity must have shape (len(query_ids), len(gallery_ids)) = "
                f"({len(query_ids)}, {len(gallery_ids)}), got {tuple(similarity.shape)}"
            )
    else:
        if query_embeds is None or gallery_embeds is None:
            raise ValueError("pass query_embeds and gallery_embeds, or a `similarity` matrix")
        for name, embeds, ids in (
            ("query", query_embeds, query_ids),
            ("gallery", gallery_embeds, gallery_ids),
        ):
            if embeds.ndim != 2 or embeds.shape[0] != len(ids):
                raise ValueError(
                    f"{name}_embeds must have shape ({name} count = {len(ids)}, dim), got {tuple(embeds.shape)}"
                )
        if query_embeds.shape[1] != gallery_embeds.shape[1]:
            raise ValueError(
                f"query and gallery embeddings differ in width: {query_embeds.shape[1]} vs {gallery_embeds.shape[1]}"
            )
    if len(query_ids) == 0 or len(gallery_ids) == 0:
        raise ValueError(f"nothing to rank: {len(query_ids)} queries, {len(gallery_ids)} gallery items")
    if direction == "i2t":
        similarity = similarity.T if similarity is not None else None
        query_embeds, gallery_embeds = gallery_embeds, query_embeds
        query_ids, gallery_ids = gallery_ids, query_ids
    return query_embeds, gallery_embeds, similarity, query_ids, gallery_ids


def rank_metrics(
    query_embeds: Matrix | None,
    gallery_embeds: Matrix | None,
    query_ids: Any,
    gallery_ids: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    similarity: Matrix | None = None,
    direction: Direction = "t2i",
    skip_unmatched: bool = False,
) -> dict[str, float]:
    """Rank-k, mAP and mINP (percentages) of a retrieval problem, as docs/method.md §7 defines them.

    Arguments are named from the text-to-image view: queries are captions, the gallery is images.
    `direction="i2t"` ranks the captions for every image instead (same arguments, roles swapped).

    Args:
        query_embeds, gallery_embeds: (n, d) embeddings (torch or numpy); cosine similarity is used,
            so they need not be normalised. Leave both `None` when `similarity` is given.
        query_ids, gallery_ids: identity of every query / gallery item (integers or strings).
        ks: the k of each Rank-k; reported as `"R{k}"`.
        chunk_size: queries scored at once. Extra memory is about 17 bytes x chunk_size x gallery size,
            plus one normalised copy of the embeddings.
        similarity: a (n_query, n_gallery) score matrix (torch, numpy or numpy memmap) to rank instead of
            embeddings; it is ranked in float32.
        direction: `"t2i"` (default) or `"i2t"`.
        skip_unmatched: a query whose identity has no item in the gallery has no defined AP or INP.
            By default that raises, because in every benchmark each query has a match and a miss
            means a broken split. With `True` such queries are left out of every mean and their
            count is logged as a warning.

    Returns:
        `{"R1": ..., "R5": ..., "R10": ..., "mAP": ..., "mINP": ...}` (one `R{k}` per k), floats in [0, 100].

    Ties are broken by gallery index (lower first), so results never change between runs.
    """
    ks = tuple(ks)
    if not ks or any(not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    query_embeds, gallery_embeds, similarity, query_ids, gallery_ids = _resolve_inputs(
        query_embeds, gallery_embeds, query_ids, gallery_ids, similarity, direction
    )
    query_codes, gallery_codes = identity_codes(query_ids, gallery_ids)
    num_codes = int(max(query_codes.max(), gallery_codes.max())) + 1
    per_identity = np.bincount(gallery_codes, minlength=num_codes)
    first_of_identity = np.cumsum(per_identity) - per_identity
    gallery_by_identity = np.argsort(gallery_codes, kind="stable")

    num_correct = per_identity[query_codes]
    unmatched = np.flatnonzero(num_correct == 0)
    if len(unmatched) and not skip_unmatched:
        examples = ", ".join(f"#{i} (id {query_ids[i : i + 1].tolist()[0]!r})" for i in unmatched[:5])
        raise ValueError(
            f"{len(unmatched)} of {len(query_ids)} queries have no gallery item of their identity, e.g. "
            f"{examples}; fix the split or pass skip_unmatched=True to leave them out"
        )
    if len(unmatched):
        logger.warning(
            "%d of %d queries have no gallery item of their identity and are left out of the metrics",
            len(unmatched),
            len(query_ids),
        )
    rows = np.flatnonzero(num_correct > 0)
    if len(rows) == 0:
        raise ValueError("no query has a gallery item of its identity")

    hits = {k: 0 for k in ks}
    ap_sum = 0.0
    inp_sum = 0.0
    # the candidate path's comparison buffer, allocated once: fresh pages cost as much as the comparison
    mask = gallery_codes_t = None
    for chunk, scores in _score_chunks(query_embeds, gallery_embeds, similarity, rows, chunk_size):
        _check_finite(scores)
        device = scores.device
        counts = torch.from_numpy(num_correct[chunk]).to(device)
        width = int(counts.max())
        slots = torch.arange(width, device=device)
        valid = slots[None, :] < counts[:, None]
        # gallery indices of each query's correct items, padded to `width`
        starts = torch.from_numpy(first_of_identity[query_codes[chunk]]).to(device)
        positions = (starts[:, None] + slots[None, :]).clamp_(max=len(gallery_by_identity) - 1)
        correct_index = torch.from_numpy(gallery_by_identity).to(device)[positions]
        if mask is None:
            mask = torch.empty(scores.numel(), dtype=torch.bool, device=device)
            gallery_codes_t = torch.from_numpy(gallery_codes).to(device)
        floor = scores.gather(1, correct_index).masked_fill_(~valid, torch.inf).amin(dim=1)
        row_codes = torch.from_numpy(query_codes[chunk]).to(device)
        ranks = _candidate_ranks(scores, floor, counts, row_codes, gallery_codes_t, mask)
        if ranks is None:
            ranks = _key_ranks(scores, correct_index, valid, counts)
        del scores
        ranks = ranks.double()  # best-ranked correct item first; padding slots are masked below
        order_in_list = (slots[None, :] + 1).double().expand(len(chunk), width)
        best_rank = ranks[:, 0]
        worst_rank = ranks.gather(1, (counts - 1)[:, None]).squeeze(1)
        ap_sum += float(torch.where(valid, order_in_list / ranks, 0.0).sum(1).div(counts).sum())
        inp_sum += float((counts / worst_rank).sum())
        for k in ks:
            hits[k] += int((best_rank <= k).sum())

    total = len(rows)
    metrics = {f"R{k}": 100.0 * hits[k] / total for k in ks}
    metrics["mAP"] = 100.0 * ap_sum / total
    metrics["mINP"] = 100.0 * inp_sum / total
    return metrics


def retrieve_topk(
    query_embeds: Matrix | None,
    gallery_embeds: Matrix | None,
    k: int,
    *,
    chunk_size: int = 1024,
    similarity: Matrix | None = None,
) -> torch.Tensor:
    """Gallery indices of each query's k best matches, best first, in the same stable order as `rank_metrics`."""
    if similarity is not None:
        num_queries, gallery_size = similarity.shape
    else:
        if query_embeds is None or gallery_embeds is None:
            raise ValueError("pass query_embeds and gallery_embeds, or a `similarity` matrix")
        num_queries, gallery_size = query_embeds.shape[0], gallery_embeds.shape[0]
    if not 1 <= k <= gallery_size:
        raise ValueError(f"k must be between 1 and the gallery size {gallery_size}, got {k}")
    rows = np.arange(num_queries)
    parts = [
        _ranking_keys(scores).topk(k, dim=1).indices.cpu()
        for _, scores in _score_chunks(query_embeds, gallery_embeds, similarity, rows, chunk_size)
    ]
    return torch.cat(parts)


__all__ = [
    "Direction",
    "Matrix",
    "as_ids",
    "check_direction",
    "identity_codes",
    "rank_metrics",
    "retrieve_topk",
]
