"""The real CLIP BPE tokenizer, built offline from the vocabulary that open_clip ships.

The Hub is not always reachable (CI, air-gapped clusters); open_clip bundles CLIP's merge
list, from which CLIP's 49,408-token vocabulary follows deterministically: 256 byte symbols,
the same with the end-of-word marker, one token per merge, then the two special tokens.
"""

from __future__ import annotations

import gzip
from functools import lru_cache

from transformers import CLIPTokenizer

from .processing_gadms import add_mask_token

CLIP_NUM_MERGES = 49152 - 256 - 2


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map, in vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    import open_clip.tokenizer

    with gzip.open(open_clip.tokenizer.default_bpe(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : CLIP_NUM_MERGES + 1]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_clip_tokenizer(with_mask_token: bool = True, model_max_length: int = 77) -> CLIPTokenizer:
    """CLIP's tokenizer (49,408 tokens, +`<|mask|>` = 49,409) without any download."""
    vocab, merges = _clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)
    if with_mask_token:
        add_mask_token(tokenizer)
    return tokenizer


__all__ = ["build_clip_tokenizer"]
