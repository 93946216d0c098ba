"""An incremental, crash-safe embedding index of a folder of photos, for search by description.

The index lives in `<folder>/.gadms_index/<fingerprint>/`, where the fingerprint hashes the image tower's
weights and the image preprocessing: embeddings are reused only by the very model that made them, and a
second model gets its own index instead of overwriting the first. Photos are read one at a time and
embedded in batches (memory bounded by one decoded photo plus one batch of model inputs, whatever the
folder's size); each batch is saved as it is embedded (`ShardStore`), so a killed run resumes where it
stopped. A rerun embeds only new or changed files (by size and modification time) and forgets deleted ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..evaluation.embedding import embed_images
from .image_reading import IMAGE_SUFFIXES, UnusableImage, read_pixels
from .shard_store import Entry, ShardStore, Signature, file_signature

INDEX_DIR = ".gadms_index"
_IMAGE_TOWER = ("vision_model.", "visual_projection.")


def image_fingerprint(model: torch.nn.Module, processor: Any) -> str:
    """16 hex digits that change with any image-tower weight or image preprocessing setting."""
    digest = hashlib.sha256(processor.image_processor.to_json_string().encode())
    for name, parameter in model.named_parameters():
        if name.startswith(_IMAGE_TOWER):
            digest.update(name.encode())
            data = parameter.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(memoryview(data.numpy()))
    return digest.hexdigest()[:16]


@dataclass
class FolderIndex:
    """The up-to-date index of a folder: rows of `embeddings` follow `names` (paths relative to `folder`)."""

    folder: Path
    names: list[str]
    embeddings: torch.Tensor
    embedded: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)
    problems: list[str] = field(default_factory=list)  # damaged index shards that were ignored

    def summary(self) -> str:
        return (
            f"index: {len(self.names)} images ({self.embedded} embedded now, {self.reused} reused, "
            f"{len(self.skipped)} unreadable)"
        )


def list_images(folder: Path) -> list[Path]:
    """Every file under `folder` with an image suffix, sorted; the index's own folder excluded."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and INDEX_DIR not in path.relative_to(folder).parts
        and not path.is_dir()
    )


def index_folder(
    model: torch.nn.Module,
    processor: Any,
    folder: str | Path,
    batch_size: int = 64,
    progress: bool = True,
) -> FolderIndex:
    """Bring `folder`'s index up to date and return it.

    Unreadable files (not an image, truncated, over Pillow's pixel limit, vanished, unreadable) are
    skipped and listed in `FolderIndex.skipped`, each with its reason; they are tried again next run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    store = ShardStore(folder / INDEX_DIR / image_fingerprint(model, processor))
    stored, problems = store.load()
    entries: dict[str, Entry] = {}
    todo: list[tuple[str, Path]] = []
    skipped: list[tuple[str, str]] = []
    for path in list_images(folder):
        name = path.relative_to(folder).as_posix()
        entry = stored.get(name)
        try:
            current = file_signature(path)
        except OSError as error:  # a broken link, a file deleted meanwhile, no permission
            skipped.append((name, f"{type(error).__name__}: {error}"))
            continue
        if entry is not None and entry.signature == current:
            entries[name] = entry
        else:
            todo.append((name, path))
    reused = len(entries)

    batch: list[tuple[str, Signature, torch.Tensor]] = []
    embedded = 0

    def flush() -> None:
        nonlocal embedded
        if not batch:
            return
        names, signatures, pixels = zip(*batch)
        fresh = embed_images(model, torch.stack(pixels), batch_size=len(batch), progress=False).cpu()
        store.append(list(names), list(signatures), fresh)
        entries.update({n: Entry(s, e) for n, s, e in zip(names, signatures, fresh)})
        embedded += len(batch)
        batch.clear()

    for name, path in tqdm(todo, desc=f"indexing {folder}", unit="image", disable=not progress):
        try:
            signature = file_signature(path)  # before reading: a file changed while read is redone next time
            batch.append((name, signature, read_pixels(path, processor)))
        except OSError as error:  # the file vanished since it was listed
            skipped.append((name, f"{type(error).__name__}: {error}"))
        except UnusableImage as error:
            skipped.append((name, str(error)))
        if len(batch) == batch_size:
            flush()
    flush()

    if embedded or entries.keys() != stored.keys() or store.shard_count != 1:
        store.compact(entries)
    names = sorted(entries)
    embeddings = torch.stack([entries[n].embedding for n in names]) if names else torch.empty(0, 0)
    return FolderIndex(folder, names, embeddings, embedded, reused, sorted(skipped), problems)


__all__ = ["INDEX_DIR", "FolderIndex", "image_fingerprint", "index_folder", "list_images"]
