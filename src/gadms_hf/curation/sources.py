"""Where curation input comes from, and how it is cut into resumable work units.

Four input forms are accepted: an image folder, a text file of URLs or paths (one a line),
Parquet files (an image-bytes column, or a URL column such as COYO's `url`), and WebDataset
`.tar` shards. Every form is planned into the same list of `WorkUnit`s (a slice of one input
file), so the number of units and their order depend only on the input: any process that
plans the same input agrees on which unit is which, which is what lets an array job split
the units by index and a rerun skip the finished ones.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from .errors import CurationSetupError
from .extras import import_curation_extra
from .report import RejectReason

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
INPUT_FORMATS = ("auto", "folder", "list", "parquet", "webdataset")
URL_SCHEMES = ("http://", "https://")
_IMAGE_COLUMN_GUESSES = ("image", "jpg", "img")
_URL_COLUMN_GUESSES = ("url", "URL", "image_url")


@dataclass(frozen=True)
class WorkUnit:
    """Items `start:stop` of one input file (`stop=None`: to its end; used for whole .tar shards)."""

    index: int
    path: str
    start: int
    stop: int | None


@dataclass(frozen=True)
class SourceRef:
    """One input image: what the `source` column records, and its bytes when already in hand."""

    source: str
    data: bytes | None = None


@dataclass
class InputPlan:
    """The input resolved into files and work units."""

    format: str
    root: str
    files: list[str]
    units: list[WorkUnit]
    column: str | None = None
    column_kind: str | None = None  # "image" or "url" for Parquet input
    items: list[str] = field(default_factory=list, repr=False)  # folder / list input: every path or URL

    def digest(self) -> str:
        """Fingerprint of the unit layout, independent of where the input is mounted."""
        layout = {
            "format": self.format,
            "column": self.column,
            "units": [(os.path.relpath(u.path, self.root), u.start, u.stop) for u in self.units],
            "items": [i if i.startswith(URL_SCHEMES) else os.path.relpath(i, self.root) for i in self.items],
        }
        return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class FetchSettings:
    """Bounded network behaviour for URL inputs."""

    timeout: float = 10.0
    retries: int = 2
    backoff: float = 1.0
    max_bytes: int = 32 * 1024 * 1024


def _expand(input_path: str) -> tuple[str, list[str]]:
    """(root folder, matches) for a path or a glob pattern; the root anchors relative names."""
    if any(ch in input_path for ch in "*?["):
        matches = sorted(glob.glob(input_path, recursive=True))
        if not matches:
            raise CurationSetupError(f"the input pattern {input_path!r} matches no file")
    elif os.path.exists(input_path):
        matches = [input_path]
    else:
        raise CurationSetupError(f"the input {input_path!r} does not exist")
    parents = [os.path.abspath(m if os.path.isdir(m) else os.path.dirname(m) or ".") for m in matches]
    return os.path.commonpath(parents), matches


def _detect_format(matches: list[str]) -> str:
    first = matches[0]
    if os.path.isdir(first):
        names = os.listdir(first)
        if any(n.endswith(".tar") for n in names):
            return "webdataset"
        if any(n.endswith(".parquet") for n in names):
            return "parquet"
        return "folder"
    if first.endswith(".parquet"):
        return "parquet"
    if first.endswith(".tar"):
        return "webdataset"
    if first.lower().endswith(IMAGE_EXTENSIONS):
        return "folder"
    return "list"


def _files_with_suffix(matches: list[str], suffix: str) -> list[str]:
    files = []
    for match in matches:
        if os.path.isdir(match):
            files += sorted(os.path.join(match, n) for n in os.listdir(match) if n.endswith(suffix))
        elif match.endswith(suffix):
            files.append(match)
    return files


def _image_files(matches: list[str]) -> list[str]:
    files = []
    for match in matches:
        if os.path.isdir(match):
            for dirpath, dirnames, filenames in os.walk(match):
                dirnames.sort()
                files += [
                    os.path.join(dirpath, n)
                    for n in sorted(filenames)
                    if n.lower().endswith(IMAGE_EXTENSIONS)
                ]
        elif match.lower().endswith(IMAGE_EXTENSIONS):
            files.append(match)
    return files


def _list_items(list_file: str) -> list[str]:
    """URLs and paths from a text file; relative paths are taken relative to the file's folder."""
    base = os.path.dirname(os.path.abspath(list_file))
    items = []
    with open(list_file, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            items.append(
                line if line.startswith(URL_SCHEMES) or os.path.isabs(line) else os.path.join(base, line)
            )
    return items


def _parquet_column(path: str, image_column: str | None, url_column: str | None) -> tuple[str, str]:
    names = pq.read_schema(path).names
    for wanted, kind in ((image_column, "image"), (url_column, "url")):
        if wanted is not None:
            if wanted not in names:
                raise CurationSetupError(
                    f"the Parquet file {path!r} has no column {wanted!r}; its columns: {names}"
                )
            return wanted, kind
    for guesses, kind in ((_IMAGE_COLUMN_GUESSES, "image"), (_URL_COLUMN_GUESSES, "url")):
        for guess in guesses:
            if guess in names:
                return guess, kind
    raise CurationSetupError(
        f"the Parquet file {path!r} has neither an image column {_IMAGE_COLUMN_GUESSES} nor a URL column "
        f"{_URL_COLUMN_GUESSES}; pass --image_column or --url_column (its columns: {names})"
    )


def _chunks(path: str, count: int, shard_size: int, first_index: int) -> list[WorkUnit]:
    return [
        WorkUnit(first_index + i, path, start, min(start + shard_size, count))
        for i, start in enumerate(range(0, count, shard_size))
    ]


def plan_input(
    input_path: str,
    input_format: str = "auto",
    shard_size: int = 1000,
    image_column: str | None = None,
    url_column: str | None = None,
) -> InputPlan:
    """Resolve `input_path` (path or glob) into files and work units of at most `shard_size` images.

    WebDataset shards are not split: each `.tar` is one unit, since it is already a shard chosen by
    whoever wrote it, and counting its members would mean reading every shard in every process.
    """
    if input_format not in INPUT_FORMATS:
        raise CurationSetupError(f"unknown input format {input_format!r}; expected one of {INPUT_FORMATS}")
    if shard_size < 1:
        raise CurationSetupError(f"shard_size must be >= 1, got {shard_size}")
    root, matches = _expand(input_path)
    fmt = _detect_format(matches) if input_format == "auto" else input_format
    plan = InputPlan(format=fmt, root=root, files=[], units=[])
    if fmt in ("folder", "list"):
        if fmt == "folder":
            plan.items = _image_files(matches)
        else:
            for match in matches:
                if os.path.isdir(match):
                    raise CurationSetupError(
                        f"list input {match!r} is a folder; expected a text file of URLs/paths"
                    )
                plan.items += _list_items(match)
        plan.files = [os.path.abspath(m) for m in matches]
        plan.units = _chunks(plan.files[0], len(plan.items), shard_size, 0)
    elif fmt == "parquet":
        plan.files = _files_with_suffix(matches, ".parquet")
        for path in plan.files:
            column, kind = _parquet_column(path, image_column, url_column)
            if plan.column not in (None, column):
                raise CurationSetupError(
                    f"Parquet files disagree on the image column: {plan.column!r} and {column!r} ({path!r})"
                )
            plan.column, plan.column_kind = column, kind
            plan.units += _chunks(path, pq.ParquetFile(path).metadata.num_rows, shard_size, len(plan.units))
    else:
        plan.files = _files_with_suffix(matches, ".tar")
        plan.units = [WorkUnit(i, path, 0, None) for i, path in enumerate(plan.files)]
    if not plan.units:
        raise CurationSetupError(f"the input {input_path!r} (format {fmt!r}) holds no image")
    return plan


def _parquet_rows(path: str, column: str, start: int, stop: int) -> list:
    """Values of `column` for rows start:stop, reading only the row groups that hold them."""
    parquet = pq.ParquetFile(path)
    values, offset = [], 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if offset + rows > start and offset < stop:
            chunk = parquet.read_row_group(group, columns=[column]).column(column).to_pylist()
            values += chunk[max(start - offset, 0) : stop - offset]
        offset += rows
        if offset >= stop:
            break
    return values


def _tar_refs(path: str) -> list[SourceRef]:
    name = os.path.basename(path)
    refs = []
    try:
        with tarfile.open(path, mode="r") as archive:
            for member in archive:
                if member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS):
                    handle = archive.extractfile(member)
                    refs.append(SourceRef(f"{name}::{member.name}", handle.read() if handle else b""))
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"cannot read the WebDataset shard {path!r}: {exc}") from exc
    return refs


def read_unit(plan: InputPlan, unit: WorkUnit) -> list[SourceRef]:
    """The images of one unit, in input order."""
    if plan.format in ("folder", "list"):
        return [SourceRef(item) for item in plan.items[unit.start : unit.stop]]
    if plan.format == "webdataset":
        return _tar_refs(unit.path)
    name = os.path.basename(unit.path)
    values = _parquet_rows(unit.path, plan.column, unit.start, unit.stop)
    if plan.column_kind == "url":
        return [
            SourceRef(str(value) if value else f"{name}#{unit.start + i}") for i, value in enumerate(values)
        ]
    refs = []
    for i, value in enumerate(values):
        if isinstance(value, dict):  # a `datasets` Image column: {"bytes": ..., "path": ...}
            data, path = value.get("bytes"), value.get("path")
            refs.append(
                SourceRef(path, None)
                if data is None and path
                else SourceRef(f"{name}#{unit.start + i}", data)
            )
        else:
            refs.append(SourceRef(f"{name}#{unit.start + i}", value))
    return refs


def _download(url: str, settings: FetchSettings) -> bytes | None:
    """The body of `url`, or None after `retries` extra attempts (client errors are not retried)."""
    request = urllib.request.Request(url, headers={"User-Agent": "gadms-hf-curation/0.1"})
    for attempt in range(settings.retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout) as response:
                body = response.read(settings.max_bytes + 1)
            return body if len(body) <= settings.max_bytes else None
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code != 429:
                return None
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if attempt < settings.retries:
            time.sleep(settings.backoff * 2**attempt)
    return None


def decode_image(data: bytes) -> Image.Image | None:
    """RGB image with EXIF orientation applied, or None when the bytes are not a readable image.

    Decoded with OpenCV rather than `PIL.Image.open`: importing ultralytics replaces
    `Image.open` with a wrapper that, on unidentifiable bytes, tries to pip-install a HEIF plugin,
    which a web crawl full of broken files must never trigger. `cv2.imdecode` returns None on
    bad input, honours EXIF orientation and caps the pixel count (CV_IO_MAX_IMAGE_PIXELS).
    """
    if not data:
        return None
    cv2 = import_curation_extra("cv2")
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if array is None or array.ndim != 3 or min(array.shape[:2]) < 1:
        return None
    return Image.fromarray(cv2.cvtColor(array, cv2.COLOR_BGR2RGB))


def load_image(ref: SourceRef, settings: FetchSettings) -> tuple[Image.Image | None, RejectReason | None]:
    """(image, None) or (None, reason): fetch the bytes if needed and decode them."""
    data = ref.data
    if data is None:
        if ref.source.startswith(URL_SCHEMES):
            data = _download(ref.source, settings)
            if data is None:
                return None, RejectReason.DOWNLOAD_FAILED
        else:
            try:
                with open(ref.source, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                return None, RejectReason.MISSING_FILE
            except OSError:
                return None, RejectReason.UNREADABLE_IMAGE
    image = decode_image(data)
    return (image, None) if image is not None else (None, RejectReason.UNREADABLE_IMAGE)


__all__ = [
    "WorkUnit",
    "SourceRef",
    "InputPlan",
    "FetchSettings",
    "plan_input",
    "read_unit",
    "load_image",
    "decode_image",
    "IMAGE_EXTENSIONS",
    "INPUT_FORMATS",
]
