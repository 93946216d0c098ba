"""TokenScoreBank: one row of GASS token scores per training caption, memory-mapped on disk (docs/method.md §4).

The collator reads a caption's row to decide which tokens to mask; the trainer writes the row back
after each step. The bank is a plain `.npy` file (float16, or uint8 holding `round(255 * s)`) plus a
small JSON sidecar, opened with `numpy.memmap`, so that

- 10M captions x 77 tokens cost about 1.5 GB on disk and almost no process memory;
- data-loader workers share it: a pickled bank carries only its path and reopens the same file
  read-only in the worker, and since every process maps the file shared, a row the main process
  wrote is what a worker reads next;
- it is checkpointed by copying two files (`save`) and restored by copying them back (`load`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ARRAY_NAME = "score_bank.npy"
METADATA_NAME = "score_bank.json"
_FORMAT = "gadms-token-score-bank"
_DTYPES = {"float16": np.float16, "uint8": np.uint8}
_UINT8_SCALE = 255.0
_FILL_CHUNK_BYTES = 64 * 2**20
_WRITE_TOLERANCE = 1e-4


class TokenScoreBank:
    """A memory-mapped `(num_captions, text_length)` table of token scores in [0, 1], indexed by caption id.

    Create one with [`TokenScoreBank.create`], reopen it with [`TokenScoreBank.open`]. `path` is a
    directory holding `score_bank.npy` and `score_bank.json`.
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        metadata_file = self.path / METADATA_NAME
        if not metadata_file.is_file():
            raise FileNotFoundError(f"{metadata_file} not found: create a bank with TokenScoreBank.create()")
        metadata = json.loads(metadata_file.read_text())
        if metadata.get("format") != _FORMAT:
            raise ValueError(f"{metadata_file} is not a token score bank (format={metadata.get('format')!r})")
        self.dtype: str = metadata["dtype"]
        if self.dtype not in _DTYPES:
            raise ValueError(f"{metadata_file}: dtype={self.dtype!r} must be one of {tuple(_DTYPES)}")
        self.initial_score: float = float(metadata["initial_score"])
        expected_shape = (int(metadata["num_captions"]), int(metadata["text_length"]))
        self._array = np.lib.format.open_memmap(self.path / ARRAY_NAME, mode="r" if readonly else "r+")
        if self._array.shape != expected_shape or self._array.dtype != _DTYPES[self.dtype]:
            raise ValueError(
                f"{self.path / ARRAY_NAME} holds {self._array.dtype} {self._array.shape}, but {metadata_file}"
                f" announces {self.dtype} {expected_shape}"
            )

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        num_captions: int,
        text_length: int = 77,
        initial_score: float = 0.85,
        dtype: str = "float16",
    ) -> TokenScoreBank:
        """Write a new bank with every score set to `initial_score` (replacing any bank at `path`).

        The initial value is streamed to the file in 64 MB blocks rather than through the memory map,
        so a 1.5 GB bank is as fast to create as the disk is to write and costs no process memory.
        """
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} must be one of {tuple(_DTYPES)}")
        if num_captions < 1 or text_length < 1:
            raise ValueError(f"num_captions={num_captions} and text_length={text_length} must be positive")
        if not 0.0 <= initial_score <= 1.0:
            raise ValueError(f"initial_score={initial_score} must be in [0, 1]")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np_dtype = np.dtype(_DTYPES[dtype])
        header = {"descr": np.lib.format.dtype_to_descr(np_dtype), "fortran_order": False,
                  "shape": (num_captions, text_length)}
        fill = np.full(text_length, _encode(np.float32(initial_score), dtype), dtype=np_dtype)
        staging = path / (ARRAY_NAME + ".tmp")
        with open(staging, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            if fill.any():
                _write_rows(handle, fill, num_captions)
            else:  # all-zero bytes: a sparse file already reads as zeros
                handle.truncate(handle.tell() + num_captions * fill.nbytes)
        os.replace(staging, path / ARRAY_NAME)
        metadata = {"format": _FORMAT, "version": 1, "num_captions": int(num_captions),
                    "text_length": int(text_length), "dtype": dtype, "initial_score": float(initial_score)}
        (path / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False) -> TokenScoreBank:
        """Open an existing bank; `readonly=True` maps it read-only (what data-loader workers get)."""
        return cls(path, readonly=readonly)

    def __len__(self) -> int:
        return self._array.shape[0]

    @property
    def text_length(self) -> int:
        return self._array.shape[1]

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "read-write"
        return f"TokenScoreBank({str(self.path)!r}, {len(self)} x {self.text_length} {self.dtype}, {mode})"

    def __reduce__(self) -> tuple[type[TokenScoreBank], tuple[str, bool]]:
        # Only the path travels: the worker maps the same file again, read-only.
        return (self.__class__, (str(self.path), True))

    def read(self, caption_ids: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The rows of `caption_ids` as a `(batch, text_length)` float32 tensor in [0, 1]."""
        rows = self._array[self._check_ids(caption_ids)]
        scores = torch.from_numpy(rows.astype(np.float32))
        return scores / _UINT8_SCALE if self.dtype == "uint8" else scores

    def write(self, caption_ids: Sequence[int] | np.ndarray | torch.Tensor, scores: torch.Tensor) -> None:
        """Write `(batch, text_length)` scores in [0, 1] to the rows of `caption_ids` (last repeat wins)."""
        if self.readonly:
            raise PermissionError(f"{self!r} was opened read-only")
        ids = self._check_ids(caption_ids)
        scores = torch.as_tensor(scores)
        if not scores.is_floating_point():
            raise ValueError(f"scores must be a float tensor, got {scores.dtype}")
        if tuple(scores.shape) != (len(ids), self.text_length):
            expected = (len(ids), self.text_length)
            raise ValueError(f"scores have shape {tuple(scores.shape)}, expected {expected}")
        values = scores.detach().float().cpu().numpy()
        if not np.isfinite(values).all():
            raise ValueError("scores contain NaN or infinity")
        if values.min(initial=0.0) < -_WRITE_TOLERANCE or values.max(initial=0.0) > 1.0 + _WRITE_TOLERANCE:
            raise ValueError(f"scores must lie in [0, 1], got range [{values.min()}, {values.max()}]")
        self._array[ids] = _encode(np.clip(values, 0.0, 1.0), self.dtype)

    def flush(self) -> None:
        """Push written rows to the file (other processes already see them through the shared mapping)."""
        if not self.readonly:
            self._array.flush()

    def save(self, directory: str | os.PathLike) -> Path:
        """Copy the bank into `directory` (a checkpoint folder); returns that folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.flush()
        if directory.resolve() != self.path.resolve():
            for name in (ARRAY_NAME, METADATA_NAME):
                _copy_atomic(self.path / name, directory / name)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, path: str | os.PathLike) -> TokenScoreBank:
        """Restore the bank saved in `directory` into the working location `path` and open it read-write.

        The files are replaced atomically, so a process still mapping the old bank keeps reading the
        old rows (never a half-copied file) until it reopens `path`.
        """
        directory, path = Path(directory), Path(path)
        for name in (ARRAY_NAME, METADATA_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory / name} not found: {directory} holds no saved score bank"
                )
        path.mkdir(parents=True, exist_ok=True)
        if directory.resolve() != path.resolve():
            for name in (ARRAY_NAME, METADATA_NAME):
                _copy_atomic(directory / name, path / name)
        return cls(path)

    def _check_ids(self, caption_ids: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        ids = caption_ids.detach().cpu().numpy() if torch.is_tensor(caption_ids) else np.asarray(caption_ids)
        if ids.ndim != 1:
            raise ValueError(f"caption_ids must be one-dimensional, got shape {ids.shape}")
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"caption_ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        bad = ids[(ids < 0) | (ids >= len(self))]
        if bad.size:
            raise ValueError(
                f"caption_id {int(bad[0])} is out of range for a score bank of {len(self)} captions"
            )
        return ids


def _write_rows(handle, row: np.ndarray, count: int) -> None:
    """Append `count` copies of `row` to an open file, in blocks of about 64 MB."""
    rows_per_block = max(1, _FILL_CHUNK_BYTES // row.nbytes)
    block = np.tile(row, (min(rows_per_block, count), 1)).tobytes()
    full_blocks, remainder = divmod(count, rows_per_block)
    for _ in range(full_blocks):
        handle.write(block)
    handle.write(block[: remainder * row.nbytes])


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy through a temporary file and rename, so `target` is never seen half-written."""
    staging = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, staging)
    os.replace(staging, target)


def _encode(scores: np.ndarray | np.floating, dtype: str) -> np.ndarray:
    """Scores in [0, 1] -> stored values (uint8 keeps `round(255 * s)`)."""
    if dtype == "uint8":
        return np.rint(np.asarray(scores) * _UINT8_SCALE).astype(np.uint8)
    return np.asarray(scores).astype(np.float16)


__all__ = ["TokenScoreBank"]
