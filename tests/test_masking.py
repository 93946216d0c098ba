"""Dual masking: selection frequencies against docs/method.md §5's formulas, the BERT rule, eligibility."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gadms_hf import GADMSConfig
from gadms_hf.masking import (
    IGNORE_INDEX,
    MaskingParams,
    dual_mask,
    mim_select_prob,
    noise_select_prob,
)

BOS, EOS, MASK = 49406, 49407, 49408
VOCAB = 49409
ROWS, WORDS = 400, 75  # 30,000 eligible tokens per call
ONLY_MASK = dict(mask_replace_prob=1.0, random_replace_prob=0.0)  # selected <=> replaced by <|mask|>


def word_batch(rows: int = ROWS, words: int = WORDS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` captions of `words` word tokens between start and end, no padding."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 40000, (rows, words + 2), generator=gen)
    ids[:, 0], ids[:, -1] = BOS, EOS
    return ids, torch.ones_like(ids)


def run(ids, scores, attention, params, seed=0, **kwargs):
    kwargs = {"special_ids": [BOS, EOS], "mask_token_id": MASK, "vocab_size": VOCAB, **kwargs}
    generator = torch.Generator().manual_seed(seed)
    return dual_mask(ids, scores, attention, params=params, generator=generator, **kwargs)


def within_3_sigma(count: int, n: int, p: float) -> bool:
    return abs(count / n - p) <= 3 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


def paper_p(s: float) -> float:
    return 0.3 / (1 + math.exp(-20 * (s - 0.1)))


def paper_q(s: float) -> float:
    return 0.2 / (1 + math.exp(-20 * ((1 - s) - 0.9)))


@pytest.mark.parametrize("score", [0.0, 0.05, 0.1, 0.3, 0.5, 0.85, 1.0])
def test_gass_selection_frequencies_follow_the_formulas(score):
    params = MaskingParams(mim_at_least_one=False, **ONLY_MASK)
    ids, attention = word_batch()
    out = run(ids, torch.full(ids.shape, score), attention, params, seed=int(score * 100))
    n = ROWS * WORDS
    mim_selected = int((out.mim_labels != IGNORE_INDEX).sum())
    noise_selected = int((out.noisy_input_ids == MASK).sum())
    assert within_3_sigma(mim_selected, n, paper_p(score)), (mim_selected / n, paper_p(score))
    assert within_3_sigma(noise_selected, n, paper_q(score)), (noise_selected / n, paper_q(score))


def test_initial_score_masks_30_percent_for_mim_and_almost_nothing_as_noise():
    ids, attention = word_batch()
    out = run(ids, torch.full(ids.shape, 0.85), attention, MaskingParams())
    n = ROWS * WORDS
    assert 0.29 < (out.mim_labels != IGNORE_INDEX).sum() / n < 0.31
    assert (out.noisy_input_ids != ids).sum() / n < 1e-3


def test_probability_functions_match_the_paper_and_modes():
    scores = torch.tensor([0.0, 0.1, 0.5, 0.85, 1.0])
    gass = MaskingParams()
    assert torch.allclose(mim_select_prob(scores, gass), torch.tensor([paper_p(s) for s in scores.tolist()]))
    expected_q = torch.tensor([paper_q(s) for s in scores.tolist()])
    assert torch.allclose(noise_select_prob(scores, gass), expected_q)
    random = MaskingParams(masking="random", random_mask_prob=0.15)
    assert torch.equal(mim_select_prob(scores, random), torch.full((5,), 0.15))
    assert not noise_select_prob(scores, random).any()
    none = MaskingParams(masking="none")
    assert not mim_select_prob(scores, none).any() and not noise_select_prob(scores, none).any()


@settings(deadline=None)
@given(scores=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=30))
def test_probabilities_are_bounded_and_monotone(scores):
    scores = torch.tensor(sorted(scores))
    params = MaskingParams()
    p, q = mim_select_prob(scores, params), noise_select_prob(scores, params)
    assert (p >= 0).all() and (p <= params.mim_max_prob + 1e-7).all()
    assert (q >= 0).all() and (q <= params.noise_max_prob + 1e-7).all()
    assert (p.diff() >= -1e-7).all() and (q.diff() <= 1e-7).all()


def test_bert_rule_split():
    params = MaskingParams(masking="random", random_mask_prob=1.0)
    ids, attention = word_batch()
    out = run(ids, torch.zeros(ids.shape), attention, params)
    words = slice(1, -1)
    selected = out.mim_labels[:, words] != IGNORE_INDEX
    assert selected.all()  # probability 1: every word selected and labelled
    assert torch.equal(out.mim_labels[:, words], ids[:, words])
    new, old = out.mim_input_ids[:, words], ids[:, words]
    n = selected.numel()
    masked = int((new == MASK).sum())
    replaced = int(((new != old) & (new != MASK)).sum())
    kept = int((new == old).sum())
    assert masked + replaced + kept == n
    assert within_3_sigma(masked, n, 0.8) and within_3_sigma(replaced, n, 0.1 * (1 - 1 / (VOCAB - 3)))
    assert within_3_sigma(kept, n, 0.1 + 0.1 / (VOCAB - 3))


def test_random_replacements_are_uniform_over_ordinary_tokens():
    # vocabulary 0..11 with start 0, end 5, mask 11: replacements must be uniform over the other nine.
    params = MaskingParams(masking="random", random_mask_prob=1.0, mask_replace_prob=0.0,
                           random_replace_prob=1.0)
    ordinary = torch.tensor([1, 2, 3, 4, 6, 7, 8, 9, 10])
    gen = torch.Generator().manual_seed(1)
    ids = ordinary[torch.randint(0, 9, (300, 52), generator=gen)]
    ids[:, 0], ids[:, -1] = 0, 5
    out = dual_mask(ids, torch.zeros(ids.shape), torch.ones_like(ids), params=params, special_ids=[0, 5],
                    mask_token_id=11, vocab_size=12, generator=gen)
    replacements = out.mim_input_ids[:, 1:-1].flatten()
    assert torch.isin(replacements, ordinary).all()
    counts = torch.bincount(replacements, minlength=12)[ordinary]
    assert all(within_3_sigma(int(c), replacements.numel(), 1 / 9) for c in counts)


def _special_heavy_batch(draw_seed: int, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(draw_seed)
    ids = torch.randint(0, 20, (rows, length), generator=gen)
    specials = torch.tensor([BOS, EOS, MASK])
    ids = torch.where(ids < 6, specials[ids % 3], ids + 100)  # ~30% special tokens anywhere
    attention = (torch.rand((rows, length), generator=gen) < 0.7).long()
    return ids, attention


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 6),
    length=st.integers(1, 24),
    masking=st.sampled_from(["gass", "random", "none"]),
    max_prob=st.sampled_from([0.0, 0.5, 1.0]),
    at_least_one=st.booleans(),
)
def test_ineligible_tokens_are_never_touched(seed, rows, length, masking, max_prob, at_least_one):
    params = MaskingParams(masking=masking, mim_max_prob=max_prob, noise_max_prob=max_prob,
                           random_mask_prob=max_prob, mim_sigmoid_slope=0.0, noise_sigmoid_slope=0.0,
                           mim_at_least_one=at_least_one, noise_at_least_one=at_least_one)
    ids, attention = _special_heavy_batch(seed, rows, length)
    scores = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed))
    out = run(ids, scores, attention, params, seed=seed)
    ineligible = (attention == 0) | torch.isin(ids, torch.tensor([BOS, EOS, MASK]))
    for copy in (out.noisy_input_ids, out.mim_input_ids):
        assert copy.shape == ids.shape and copy.dtype == torch.int64
        assert torch.equal(copy[ineligible], ids[ineligible])
        # replacements are never start/end tokens
        changed = copy != ids
        assert not torch.isin(copy[changed], torch.tensor([BOS, EOS])).any()
    assert (out.mim_labels[ineligible] == IGNORE_INDEX).all()
    labelled = out.mim_labels != IGNORE_INDEX
    assert torch.equal(out.mim_labels[labelled], ids[labelled])
    assert not (out.mim_input_ids != ids)[~labelled].any()  # MIM copy changes only labelled tokens
    if at_least_one and masking != "none":
        has_word = (~ineligible).any(dim=1)
        assert labelled.any(dim=1)[has_word].all()


def test_at_least_one_masks_and_labels_the_first_word():
    ids = torch.tensor([
        [BOS, 320, 786, 533, EOS, EOS],
        [BOS, MASK, 701, 702, EOS, EOS],  # first *word* token is at position 2
        [BOS, EOS, EOS, EOS, EOS, EOS],  # no word token at all
    ])
    attention = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    never = MaskingParams(mim_max_prob=0.0, noise_max_prob=0.0)
    out = run(ids, torch.zeros(ids.shape), attention, never)
    expected_labels = torch.full_like(ids, IGNORE_INDEX)
    expected_labels[0, 1], expected_labels[1, 2] = 320, 701
    assert torch.equal(out.mim_labels, expected_labels)
    assert out.mim_input_ids[0, 1] == MASK and out.mim_input_ids[1, 2] == MASK
    assert torch.equal(out.noisy_input_ids, ids)  # [ours]: no forced noise masking by default

    out = run(ids, torch.zeros(ids.shape), attention, dataclasses.replace(never, noise_at_least_one=True))
    expected = ids.clone()
    expected[0, 1] = expected[1, 2] = MASK
    assert torch.equal(out.noisy_input_ids, expected)

    out = run(ids, torch.zeros(ids.shape), attention, dataclasses.replace(never, mim_at_least_one=False))
    assert (out.mim_labels == IGNORE_INDEX).all() and torch.equal(out.mim_input_ids, ids)


def test_seeded_generator_reproduces_masks():
    ids, attention = word_batch(rows=32)
    scores = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3))
    first, again, other = (run(ids, scores, attention, MaskingParams(), seed=s) for s in (7, 7, 8))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first.mim_input_ids, other.mim_input_ids)


def test_random_mode_ignores_scores_and_keeps_the_alignment_text_clean():
    params = MaskingParams(masking="random", random_mask_prob=0.15, mim_at_least_one=False)
    ids, attention = word_batch()
    n = ROWS * WORDS
    for score in (0.0, 1.0):
        out = run(ids, torch.full(ids.shape, score), attention, params)
        assert torch.equal(out.noisy_input_ids, ids)
        assert within_3_sigma(int((out.mim_labels != IGNORE_INDEX).sum()), n, 0.15)


def test_none_mode_returns_clean_copies_without_labels():
    ids, attention = word_batch(rows=8)
    out = run(ids, torch.rand(ids.shape), attention, MaskingParams(masking="none"))
    assert torch.equal(out.noisy_input_ids, ids) and torch.equal(out.mim_input_ids, ids)
    assert (out.mim_labels == IGNORE_INDEX).all()
    assert out.noisy_input_ids.data_ptr() != ids.data_ptr()  # copies, not views of the input


def test_int32_inputs_give_int64_outputs():
    ids, attention = word_batch(rows=4)
    out = run(ids.int(), torch.full(ids.shape, 0.5, dtype=torch.float16), attention.bool(), MaskingParams())
    assert all(t.dtype == torch.int64 and t.shape == ids.shape for t in out)


def test_shape_mismatch_is_reported():
    ids, attention = word_batch(rows=4)
    with pytest.raises(ValueError, match="scores has shape"):
        run(ids, torch.zeros(4, 10), attention, MaskingParams())
    with pytest.raises(ValueError, match="input_ids must be"):
        run(ids[0], torch.zeros(ids.shape[1]), attention[0], MaskingParams())


def test_params_mirror_the_config():
    config = GADMSConfig(mim_max_prob=0.25, noise_sigmoid_center=0.8, masking="random", use_gass=False)
    params = MaskingParams.from_config(config)
    for f in dataclasses.fields(MaskingParams):
        assert getattr(params, f.name) == getattr(config, f.name), f.name
    assert params.masking == "random" and params.mim_max_prob == 0.25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masking": "bert"}, "masking="),
        ({"mim_max_prob": 1.5}, "mim_max_prob=1.5"),
        ({"mask_replace_prob": 0.9, "random_replace_prob": 0.2}, "must not exceed 1"),
    ],
)
def test_params_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskingParams(**kwargs)
