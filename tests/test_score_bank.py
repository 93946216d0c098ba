"""TokenScoreBank: memory-mapped storage, sharing across processes, checkpoint round trips."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle

import numpy as np
import pytest
import torch

from gadms_hf.data.score_bank import ARRAY_NAME, METADATA_NAME, TokenScoreBank


def memory_mb(field: str) -> float:
    """A line of /proc/self/status (VmRSS: everything resident, RssAnon: private memory only), in MB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def test_create_read_write_float16(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=10)
    assert len(bank) == 10 and bank.text_length == 77 and bank.dtype == "float16"
    initial = bank.read([0, 9])
    assert initial.dtype == torch.float32 and initial.shape == (2, 77)
    assert torch.allclose(initial, torch.full((2, 77), 0.85), atol=1e-3)
    scores = torch.rand(3, 77, generator=torch.Generator().manual_seed(0))
    bank.write(torch.tensor([2, 5, 7]), scores)
    assert torch.allclose(bank.read([5, 2, 7]), scores[[1, 0, 2]], atol=1e-3)
    assert torch.allclose(bank.read([3]), torch.full((1, 77), 0.85), atol=1e-3)  # untouched row


def test_uint8_stores_rounded_255ths(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=4, text_length=5, dtype="uint8")
    assert torch.equal(bank.read([0]), torch.full((1, 5), round(255 * 0.85) / 255))
    scores = torch.tensor([[0.0, 0.1, 0.5, 0.999, 1.0]])
    bank.write([1], scores)
    assert torch.equal(bank.read([1]), torch.round(scores * 255) / 255)
    assert np.load(tmp_path / "bank" / ARRAY_NAME).dtype == np.uint8


def test_files_are_a_plain_npy_and_json(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=6, text_length=7, initial_score=0.5)
    bank.write([4], torch.full((1, 7), 0.25))
    bank.flush()
    array = np.load(tmp_path / "bank" / ARRAY_NAME)
    assert array.shape == (6, 7) and array.dtype == np.float16
    assert (array[4] == np.float16(0.25)).all() and (array[0] == np.float16(0.5)).all()
    metadata = json.loads((tmp_path / "bank" / METADATA_NAME).read_text())
    assert metadata["num_captions"] == 6 and metadata["text_length"] == 7 and metadata["initial_score"] == 0.5


def test_zero_initial_score_uses_a_sparse_file(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=100_000, initial_score=0.0)
    assert not bank.read([0, 50_000, 99_999]).any()
    assert (tmp_path / "bank" / ARRAY_NAME).stat().st_size >= 100_000 * 77 * 2


def test_reopen_sees_written_rows(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=3)
    bank.write([1], torch.full((1, 77), 0.125))
    bank.flush()
    reopened = TokenScoreBank.open(tmp_path / "bank", readonly=True)
    assert torch.equal(reopened.read([1]), torch.full((1, 77), 0.125))
    with pytest.raises(PermissionError, match="read-only"):
        reopened.write([1], torch.zeros(1, 77))


@pytest.mark.parametrize("bad_id", [-1, 5, 10**9])
def test_out_of_range_caption_id_names_the_id_and_size(tmp_path, bad_id):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=5)
    with pytest.raises(ValueError, match=rf"caption_id {bad_id} is out of range for a score bank of 5"):
        bank.read([0, bad_id])
    with pytest.raises(ValueError, match=rf"caption_id {bad_id}"):
        bank.write([bad_id], torch.zeros(1, 77))


def test_write_validation(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=5)
    with pytest.raises(ValueError, match=r"expected \(1, 77\)"):
        bank.write([0], torch.zeros(1, 76))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bank.write([0], torch.full((1, 77), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        bank.write([0], torch.full((1, 77), float("nan")))
    with pytest.raises(ValueError, match="float tensor"):
        bank.write([0], torch.ones(1, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        bank.read([0.5])
    assert torch.allclose(bank.read([0]), torch.full((1, 77), 0.85), atol=1e-3)  # nothing was written


def test_create_and_open_validation(tmp_path):
    with pytest.raises(ValueError, match="dtype="):
        TokenScoreBank.create(tmp_path / "a", num_captions=2, dtype="float32")
    with pytest.raises(ValueError, match="initial_score="):
        TokenScoreBank.create(tmp_path / "b", num_captions=2, initial_score=1.2)
    with pytest.raises(FileNotFoundError, match=METADATA_NAME):
        TokenScoreBank.open(tmp_path)


def test_pickle_carries_only_the_path_and_reopens_read_only(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=100_000)
    payload = pickle.dumps(bank)
    assert len(payload) < 1024
    copy = pickle.loads(payload)
    assert copy.readonly and len(copy) == len(bank)
    bank.write([99_999], torch.full((1, 77), 0.5))  # written after pickling: still seen
    assert torch.equal(copy.read([99_999]), torch.full((1, 77), 0.5))


def _other_process(bank, path, parent_wrote, child_wrote, results) -> None:
    parent_wrote.wait(60)
    results.put(bank.read([1]).tolist())  # the pickled, read-only bank
    writable = TokenScoreBank.open(path)
    writable.write([2], torch.full((1, 77), 0.75))
    writable.flush()
    child_wrote.set()


def test_two_processes_see_each_others_writes(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=4)
    ctx = mp.get_context("spawn")
    parent_wrote, child_wrote, results = ctx.Event(), ctx.Event(), ctx.Queue()
    args = (bank, str(bank.path), parent_wrote, child_wrote, results)
    child = ctx.Process(target=_other_process, args=args)
    child.start()
    try:
        bank.write([1], torch.full((1, 77), 0.5))
        bank.flush()
        parent_wrote.set()
        assert results.get(timeout=120) == [[0.5] * 77]
        assert child_wrote.wait(60)
        assert torch.equal(bank.read([2]), torch.full((1, 77), 0.75))
    finally:
        child.join(60)
    assert child.exitcode == 0


def test_save_and_load_through_a_checkpoint(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "work", num_captions=8, dtype="uint8")
    saved_row = torch.linspace(0, 1, 77)[None]
    bank.write([3], saved_row)
    checkpoint = bank.save(tmp_path / "checkpoint-10")
    assert (checkpoint / ARRAY_NAME).is_file() and (checkpoint / METADATA_NAME).is_file()
    bank.write([3], torch.zeros(1, 77))  # training goes on after the checkpoint
    bank.flush()

    restored = TokenScoreBank.load(checkpoint, tmp_path / "work")  # resume into the working path
    assert torch.equal(restored.read([3]), torch.round(saved_row * 255) / 255)
    assert restored.dtype == "uint8" and len(restored) == 8 and not restored.readonly
    assert torch.equal(bank.read([3]), torch.zeros(1, 77))  # the old mapping stays valid, untouched
    fresh = TokenScoreBank.load(checkpoint, tmp_path / "elsewhere")
    assert torch.equal(fresh.read([3]), restored.read([3]))
    with pytest.raises(FileNotFoundError, match="holds no saved score bank"):
        TokenScoreBank.load(tmp_path / "nothing", tmp_path / "work")


def test_a_million_captions_stay_small_on_disk_and_in_memory(tmp_path):
    TokenScoreBank.create(tmp_path / "bank", num_captions=1_000_000)
    assert (tmp_path / "bank" / ARRAY_NAME).stat().st_size < 200 * 2**20
    rss_before, anon_before = memory_mb("VmRSS"), memory_mb("RssAnon")
    bank = TokenScoreBank.open(tmp_path / "bank")
    rss_growth = memory_mb("VmRSS") - rss_before
    assert rss_growth < 50, f"opening a 1M-caption bank grew RSS by {rss_growth:.1f} MB"
    # Touched rows are shared page cache (RssFile; the kernel may map whole large folios of it),
    # but private memory must not grow with the bank.
    rows = bank.read(torch.randint(0, 1_000_000, (128,), generator=torch.Generator().manual_seed(0)))
    bank.write(torch.arange(128) * 7000, rows)
    anon_growth = memory_mb("RssAnon") - anon_before
    assert anon_growth < 20, f"reading and writing a batch grew private memory by {anon_growth:.1f} MB"
    assert torch.allclose(bank.read([999_999]), torch.full((1, 77), 0.85), atol=1e-3)


@pytest.mark.slow
def test_ten_million_captions(tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=10_000_000)
    assert (tmp_path / "bank" / ARRAY_NAME).stat().st_size == pytest.approx(10_000_000 * 77 * 2, rel=1e-6)
    assert torch.allclose(bank.read([0, 5_000_000, 9_999_999]), torch.full((3, 77), 0.85), atol=1e-3)
