"""Captions longer than the 77-token text window are counted and reported per corpus, not cut silently."""

from __future__ import annotations

import logging

import datasets

from gadms_hf.data.caption_length import count_cut_captions
from gadms_hf.training.components import report_cut_captions


def _captions(*word_counts: int) -> datasets.Dataset:
    # "a" is one token: n words + start + end = n + 2 tokens
    return datasets.Dataset.from_dict({"caption": [" ".join(["a"] * n) for n in word_counts]})


def test_count_is_exact_at_the_boundary(tokenizer):
    assert count_cut_captions(_captions(75), tokenizer) == (0, 1)  # 77 tokens fit
    assert count_cut_captions(_captions(76), tokenizer) == (1, 1)  # 78 do not
    assert count_cut_captions(_captions(3, 200, 76, 10), tokenizer, batch_size=2) == (2, 4)


def test_report_names_the_corpus_and_counts(tokenizer, caplog):
    with caplog.at_level(logging.INFO, logger="gadms_hf"):
        report_cut_captions({"cuhk-pedes train": _captions(3, 200, 10), "rstpreid val": _captions(4)}, tokenizer)
    assert "1 of 3 captions longer than 77 tokens were cut (cuhk-pedes train)" in caplog.text
    assert "0 of 1 captions longer than 77 tokens were cut (rstpreid val)" in caplog.text
    warned = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [record.getMessage() for record in warned] == [
        "1 of 3 captions longer than 77 tokens were cut (cuhk-pedes train)"
    ]


def test_a_stream_is_not_read_to_count(tokenizer, caplog):
    stream = _captions(200).to_iterable_dataset()
    with caplog.at_level(logging.INFO, logger="gadms_hf"):
        report_cut_captions({"webperson train": stream}, tokenizer)
    assert "webperson train is streamed: captions longer than 77 tokens are cut without being counted" in caplog.text
