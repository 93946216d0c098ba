"""Crash-safe storage of image embeddings: append-only shards, each published by one atomic rename.

An index of a large folder is written while it is built, one shard per batch, so a run killed at any
point (kill -9, power cut, out of memory) loses at most the batch it was embedding. A shard is a
safetensors file holding the batch's embeddings and, in its metadata, each file's name and signature
(size, modification time). It is written under a temporary name and renamed into place, so a shard
file either is complete or does not exist; a damaged one (a truncated copy, a disk error) is reported
and ignored, never trusted and never an obstacle to the next run. Later shards supersede earlier ones
for the same file; `compact` folds everything into a single shard at the end of a run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "gadms-index-1"
_SHARD = re.compile(r"^(\d{8})-[0-9a-f]{8}\.safetensors$")
_TEMP = re.compile(r"^\.(\d{8})-[0-9a-f]{8}\.(\d+)\.tmp$")

Signature = tuple[int, int]  # (size in bytes, modification time in ns)


@dataclass
class Entry:
    """One indexed file: the signature it had when embedded and its L2-normalised embedding."""

    signature: Signature
    embedding: torch.Tensor


def file_signature(path: Path) -> Signature:
    """What must stay the same for a stored embedding to be reused."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class ShardStore:
    """The shards of one index folder. Not shared between threads; two processes may append at once."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._next = 0
        self._seen: list[Path] = []  # shards read or written by this store, removed by `compact`

    @property
    def shard_count(self) -> int:
        """Shards read or written since the last `compact`."""
        return len(self._seen)

    def _shards(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        shards = [path for path in self.directory.iterdir() if _SHARD.match(path.name)]
        return sorted(shards, key=lambda path: path.name)

    def load(self) -> tuple[dict[str, Entry], list[str]]:
        """Every stored file's newest entry, and a line for each shard that could not be read (ignored)."""
        entries: dict[str, Entry] = {}
        problems: list[str] = []
        for path in self._shards():
            self._next = max(self._next, int(_SHARD.match(path.name).group(1)) + 1)
            self._seen.append(path)  # even a damaged one: `compact` removes it
            try:
                with safe_open(str(path), framework="pt") as handle:
                    metadata = handle.metadata() or {}
                    if metadata.get("format") != FORMAT:
                        raise ValueError(f"metadata format {metadata.get('format')!r}, expected {FORMAT!r}")
                    files = json.loads(metadata["files"])
                    embeddings = handle.get_tensor("embeddings")
                if len(files) != embeddings.shape[0]:
                    raise ValueError(f"{len(files)} file names for {embeddings.shape[0]} embeddings")
            except Exception as error:  # a damaged file can fail in safetensors, json or the checks above
                problems.append(f"ignored unreadable index shard {path} ({type(error).__name__}: {error})")
                continue
            for (name, size, mtime_ns), embedding in zip(files, embeddings):
                entries[name] = Entry((int(size), int(mtime_ns)), embedding)
        return entries, problems

    def append(self, names: list[str], signatures: list[Signature], embeddings: torch.Tensor) -> Path:
        """Publish one shard atomically (temporary file, then rename) and return its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{self._next:08d}-{secrets.token_hex(4)}"
        self._next += 1
        final = self.directory / f"{name}.safetensors"
        temporary = self.directory / f".{name}.{os.getpid()}.tmp"
        files = [[n, size, mtime] for n, (size, mtime) in zip(names, signatures)]
        save_file(
            {"embeddings": embeddings.detach().to(torch.float32).contiguous()},
            str(temporary),
            metadata={"format": FORMAT, "files": json.dumps(files)},
        )
        os.replace(temporary, final)
        self._seen.append(final)
        return final

    def compact(self, entries: dict[str, Entry]) -> None:
        """Replace every shard this store has seen by one holding exactly `entries` (sorted by name).

        The new shard is published before the old ones are removed, so a kill in between leaves
        duplicates that `load` resolves, never a gap. Temporary files of dead writers are removed.
        """
        old = list(self._seen)
        self._seen = []
        if entries:
            names = sorted(entries)
            self.append(names, [entries[n].signature for n in names], torch.stack([entries[n].embedding for n in names]))
        for path in old:
            path.unlink(missing_ok=True)
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                match = _TEMP.match(path.name)
                if match and not _pid_alive(int(match.group(2))):
                    path.unlink(missing_ok=True)


__all__ = ["Entry", "ShardStore", "Signature", "file_signature"]
