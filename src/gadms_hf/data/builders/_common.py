"""What every corpus builder shares: the row schema, input checks, image checks and the benchmark builder.

All corpora come out with one schema, one row per caption, so that the collator, the trainer and the evaluator
never need to know where a row came from:

- ``image``: the pedestrian image (``datasets.Image``);
- ``caption``: one description of it;
- ``person_id``: identity, contiguous ``0..N-1`` per split for the benchmarks (the ID head needs contiguous
  training labels), the image index for WebPerson (every web image is its own identity);
- ``image_id``: the image, shared by all captions of one image (the retrieval gallery is one row per image_id);
- ``caption_id``: unique and stable per split (the GASS score bank is indexed by it);
- ``image_path``: the image's path relative to the corpus's own image folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import datasets
from PIL import Image

logger = logging.getLogger(__name__)

FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "person_id": datasets.Value("int64"),
        "image_id": datasets.Value("int64"),
        "caption_id": datasets.Value("int64"),
        "image_path": datasets.Value("string"),
    }
)

# How many offending paths a skip report quotes; the rest is only counted.
_REPORTED_PATHS = 5


@dataclass
class PedesConfig(datasets.BuilderConfig):
    """Builder options shared by all corpora.

    Args:
        strict: fail on the first unreadable image instead of skipping it.
        verify_images: decode every image once at build time so that a broken file is skipped (or, with
            ``strict``, reported) here rather than crashing a data-loader worker hours into training.
    """

    strict: bool = False
    verify_images: bool = True


def image_problem(source: str | bytes) -> str | None:
    """Why an image file (path) or encoded image (bytes) cannot be decoded, or ``None`` if it can.

    ``Image.verify`` alone misses truncated JPEGs, so the image is really decoded; JPEGs are decoded at 1/8
    scale (``draft``), which still reads every entropy-coded byte, hence still catches truncation, at about
    half the cost of a full decode. (A process that sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` lets
    truncated files through here, as everywhere else.)
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except FileNotFoundError:
        return "file not found"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"
    return None


class UnreadableImages:
    """Counts skipped images, logs one warning per generator with the first few paths; ``strict`` raises."""

    def __init__(self, strict: bool, where: str) -> None:
        self.strict = strict
        self.where = where
        self.count = 0
        self.examples: list[str] = []

    def add(self, path: str, problem: str) -> None:
        if self.strict:
            raise ValueError(
                f"Unreadable image in {self.where}: {path} ({problem}). Without strict=True it would be skipped."
            )
        self.count += 1
        if len(self.examples) < _REPORTED_PATHS:
            self.examples.append(f"{path} ({problem})")

    def report(self) -> None:
        if self.count:
            more = f" and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
            logger.warning(
                "Skipped %d unreadable image(s) in %s: %s%s",
                self.count,
                self.where,
                "; ".join(self.examples),
                more,
            )


def data_root(data_dir: str | None, layout: str) -> Path:
    """The corpus folder, or an error that shows the expected layout."""
    if data_dir is None:
        raise ValueError(
            f"This corpus is read from local files: pass data_dir=<folder>. Expected layout:\n{layout}"
        )
    root = Path(data_dir).expanduser().resolve()  # the Image feature stores absolute paths
    if not root.is_dir():
        raise FileNotFoundError(f"Corpus folder {root} does not exist. Expected layout:\n{layout}")
    return root


def require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"Image folder {path} does not exist. Expected layout:\n{layout}")
    return path


def read_json_list(path: Path, layout: str) -> list[Any]:
    """Load an annotation file that must hold a JSON list."""
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file {path} does not exist. Expected layout:\n{layout}")
    with path.open(encoding="utf-8") as file:
        try:
            entries = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"Annotation file {path} is not valid JSON: {error}") from error
        except UnicodeDecodeError as error:
            raise ValueError(
                f"Annotation file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                f"{error.start}); re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
            ) from error
    if not isinstance(entries, list):
        raise ValueError(f"Annotation file {path} must hold a JSON list, got {type(entries).__name__}.")
    return entries


def require_field(entry: Any, field: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``entry[field]``, checked to exist and be of ``kind``; ``where`` names the entry and its file."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(entry).__name__}.")
    if field not in entry:
        raise ValueError(f"{where} has no field {field!r} (fields present: {sorted(entry)}).")
    value = entry[field]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where}: field {field!r} must be {expected}, got {value!r}.")
    return value


def require_text(value: Any, name: str, where: str) -> str:
    """A non-blank string, stripped of surrounding white space."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {name} must be a non-blank string, got {value!r}.")
    return value.strip()


def require_captions(value: Any, field: str, where: str) -> list[str]:
    """A non-empty list of non-blank strings, each stripped."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: field {field!r} must be a non-empty list of strings, got {value!r}.")
    return [require_text(caption, f"{field}[{k}]", where) for k, caption in enumerate(value)]


def files_fingerprint(paths: Iterable[Path]) -> str | None:
    """A hash of the names, sizes and modification times of the source files that exist (``None`` if none).

    Used as the builder cache hash, so that editing an annotation file or any image rebuilds the corpus
    instead of silently serving the old cache (a repaired image would stay skipped, an image broken after the
    build would reach training). A folder among ``paths`` counts every file below it; no file is opened, so
    it costs one ``stat`` per file (0.7 s for 100,000 files on a local disk with a warm file-system cache).
    """
    digest = hashlib.sha256()
    found = False
    for path in sorted(paths):
        if path.is_dir():
            digest.update(f"{path.resolve()}/\n".encode())
            for entry in _walk_files(path):
                stat = entry.stat()
                digest.update(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            found = True
        elif path.is_file():
            stat = path.stat()
            digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            found = True
    return digest.hexdigest()[:16] if found else None


def _walk_files(folder: Path) -> Iterator[os.DirEntry]:
    """Every file below ``folder`` (following no links), in a fixed order."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_files(Path(entry.path))
        elif entry.is_file():
            yield entry


class _Record(NamedTuple):
    image_path: str
    person: int | str
    captions: list[str]


class PedesBenchmarkBuilder(datasets.GeneratorBasedBuilder):
    """A text-based person retrieval benchmark: one JSON list of annotated images plus an ``imgs/`` folder.

    Subclasses name the annotation file (and the other names downloaded copies use), the JSON field holding
    the image path, the splits the JSON may use and the corpus metadata. The annotation may also sit in
    ``annotations/``, and the image folders directly in ``data_dir`` when a copy was unpacked without
    ``imgs/``. Images the annotation lists but the copy lacks are reported by folder and skipped (``strict``:
    refused). Ids are assigned per split in annotation order, after unreadable images are dropped, so they
    are contiguous: ``person_id`` in order of first appearance, ``image_id`` per image, ``caption_id`` per
    caption.
    """

    BUILDER_CONFIG_CLASS = PedesConfig
    VERSION = datasets.Version("1.0.0")

    ANNOTATION_FILE: ClassVar[str]
    ANNOTATION_VARIANTS: ClassVar[tuple[str, ...]] = ()
    ANNOTATION_DIRS: ClassVar[tuple[str, ...]] = ("", "annotations")
    IMAGE_DIR: ClassVar[str] = "imgs"
    PATH_FIELD: ClassVar[str]
    SPLITS: ClassVar[tuple[str, ...]]
    DESCRIPTION: ClassVar[str]
    HOMEPAGE: ClassVar[str]
    CITATION: ClassVar[str]

    def __init__(self, *, data_dir: str | None = None, hash: str | None = None, **kwargs: Any) -> None:
        if hash is None and data_dir is not None:
            root = Path(data_dir).expanduser()
            image_dir = self.find_image_dir(root) or root / self.IMAGE_DIR
            hash = files_fingerprint([*self.annotation_candidates(root), image_dir])
        super().__init__(data_dir=data_dir, hash=hash, **kwargs)

    @classmethod
    def annotation_candidates(cls, root: Path) -> list[Path]:
        """Where the annotation may be, in the order it is looked for."""
        names = (cls.ANNOTATION_FILE, *cls.ANNOTATION_VARIANTS)
        return [root / folder / name for folder in cls.ANNOTATION_DIRS for name in names]

    @classmethod
    def find_annotation(cls, root: Path) -> Path | None:
        return next((path for path in cls.annotation_candidates(root) if path.is_file()), None)

    @classmethod
    def find_image_dir(cls, root: Path) -> Path | None:
        """``imgs/``, else ``root`` itself when it holds image folders (a copy unpacked one level up)."""
        if (root / cls.IMAGE_DIR).is_dir():
            return root / cls.IMAGE_DIR
        if root.is_dir() and any(p.is_dir() and p.name not in cls.ANNOTATION_DIRS for p in root.iterdir()):
            return root
        return None

    @classmethod
    def missing_inputs(cls, root: Path) -> list[Path]:
        """The annotation file and image folder, each under its usual name, when no accepted form is present."""
        missing = [] if cls.find_annotation(root) else [root / cls.ANNOTATION_FILE]
        return missing + ([] if cls.find_image_dir(root) else [root / cls.IMAGE_DIR])

    @classmethod
    def layout(cls) -> str:
        fields = ", ".join(repr(f) for f in ("split", "captions", cls.PATH_FIELD, "id"))
        variants = f" (or {' / '.join(cls.ANNOTATION_VARIANTS)})" if cls.ANNOTATION_VARIANTS else ""
        return (
            f"  <data_dir>/{cls.ANNOTATION_FILE}{variants}  JSON list of objects with {fields} "
            f"(split one of {', '.join(cls.SPLITS)}); also accepted in <data_dir>/annotations/\n"
            f"  <data_dir>/imgs/  the images, at each entry's {cls.PATH_FIELD!r} relative to this folder"
        )

    def entry_split(self, entry: dict, where: str) -> str:
        """The split an annotation entry belongs to (its ``split`` field; subclasses may infer it)."""
        return require_field(entry, "split", str, where)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.DESCRIPTION, features=FEATURES, homepage=self.HOMEPAGE, citation=self.CITATION
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        root = data_root(self.config.data_dir, self.layout())
        annotation = self.find_annotation(root) or root / self.ANNOTATION_FILE
        entries = read_json_list(annotation, self.layout())
        if not entries:
            raise ValueError(
                f"Annotation file {annotation} holds an empty list. Expected layout:\n{self.layout()}"
            )
        image_dir = require_dir(self.find_image_dir(root) or root / self.IMAGE_DIR, self.layout())
        records: dict[str, list[_Record]] = {split: [] for split in self.SPLITS}
        for index, entry in enumerate(entries):
            where = f"Entry {index} of {annotation}"
            split = self.entry_split(entry, where)
            if split not in records:
                raise ValueError(f"{where}: split {split!r} is not one of {list(self.SPLITS)}.")
            records[split].append(
                _Record(
                    image_path=require_field(entry, self.PATH_FIELD, str, where),
                    person=require_field(entry, "id", (int, str), where),
                    captions=require_captions(
                        require_field(entry, "captions", list, where), "captions", where
                    ),
                )
            )
        records = self._drop_missing_images(records, image_dir, root, annotation)
        # Records go in a tuple: datasets would shard a list across workers, and the ids must be counted in
        # one pass over the split to stay contiguous.
        return [
            datasets.SplitGenerator(
                name=split, gen_kwargs={"records": tuple(rows), "image_dir": str(image_dir), "split": split}
            )
            for split, rows in records.items()
            if rows
        ]

    def _drop_missing_images(self, records: dict[str, list[_Record]], image_dir: Path, root: Path,
                             annotation: Path) -> dict[str, list[_Record]]:
        """Records whose image file exists; the others reported by folder (whole folders first), or refused."""
        listed = [record.image_path for rows in records.values() for record in rows]
        missing = [path for path in listed if not (image_dir / path).is_file()]
        if not missing:
            return records
        prefix = image_dir.relative_to(root).as_posix() + "/" if image_dir != root else ""
        by_folder: dict[str, list[str]] = {}
        for path in missing:
            by_folder.setdefault(Path(path).parts[0] if len(Path(path).parts) > 1 else "", []).append(path)
        gone = {f: paths for f, paths in by_folder.items() if f and not (image_dir / f).is_dir()}
        folders = ", ".join(f"{prefix}{f}/ ({len(p)} image{'s' if len(p) > 1 else ''})" for f, p in gone.items())
        files = [f"{prefix}{p}" for f, paths in by_folder.items() if f not in gone for p in paths]
        shown = ", ".join(files[:_REPORTED_PATHS]) + (f" and {len(files) - _REPORTED_PATHS} more"
                                                      if len(files) > _REPORTED_PATHS else "")
        details = "; ".join(filter(None, [folders and f"missing folders: {folders}",
                                          files and f"missing files: {shown}"]))
        summary = f"{len(missing)} of {len(listed)} images listed in {annotation} are missing"
        if self.config.strict:
            raise ValueError(f"{summary} under {image_dir}: {details}. Without strict=True they would be skipped.")
        logger.warning("%s, skipped: %s", summary, details)
        absent = set(missing)
        return {split: [r for r in rows if r.image_path not in absent] for split, rows in records.items()}

    def _generate_examples(
        self, records: tuple[_Record, ...], image_dir: str, split: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        unreadable = UnreadableImages(self.config.strict, f"{self.dataset_name} split {split!r}")
        person_ids: dict[int | str, int] = {}
        image_id = caption_id = 0
        try:
            for record in records:
                path = os.path.join(image_dir, record.image_path)
                if self.config.verify_images and (problem := image_problem(path)):
                    unreadable.add(path, problem)
                    continue
                person_id = person_ids.setdefault(record.person, len(person_ids))
                for caption in record.captions:
                    yield (
                        caption_id,
                        {
                            "image": path,
                            "caption": caption,
                            "person_id": person_id,
                            "image_id": image_id,
                            "caption_id": caption_id,
                            "image_path": record.image_path,
                        },
                    )
                    caption_id += 1
                image_id += 1
        finally:
            unreadable.report()
