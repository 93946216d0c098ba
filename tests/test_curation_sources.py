"""Curation input: planning into work units, reading each input form, fetching and decoding."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import socket
import tarfile
import threading

import pytest
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from gadms_hf.curation.errors import CurationSetupError
from gadms_hf.curation.report import RejectReason
from gadms_hf.curation.sources import (
    FetchSettings,
    SourceRef,
    decode_image,
    load_image,
    plan_input,
    read_unit,
)

NO_RETRY = FetchSettings(timeout=2.0, retries=0, backoff=0.0)


def jpeg(width: int = 24, height: int = 48, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "sub/c.jpeg", "d.JPG", "e.jpg"):
        (folder / name).write_bytes(jpeg())
    (folder / "notes.txt").write_text("not an image")
    return folder


def closed_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_folder_is_planned_into_ordered_units(image_folder):
    plan = plan_input(str(image_folder), shard_size=2)
    assert plan.format == "folder"
    names = [p[len(str(image_folder)) + 1 :] for p in plan.items]
    assert names == ["a.jpg", "b.png", "d.JPG", "e.jpg", "sub/c.jpeg"]  # txt skipped, sorted, recursive
    assert [(u.index, u.start, u.stop) for u in plan.units] == [(0, 0, 2), (1, 2, 4), (2, 4, 5)]
    refs = read_unit(plan, plan.units[2])
    assert [r.source for r in refs] == [plan.items[4]] and refs[0].data is None


def test_plan_digest_ignores_where_the_input_is_mounted(image_folder, tmp_path):
    moved = tmp_path / "elsewhere" / "imgs"
    shutil.copytree(image_folder, moved)
    assert (
        plan_input(str(image_folder), shard_size=2).digest() == plan_input(str(moved), shard_size=2).digest()
    )
    assert (
        plan_input(str(image_folder), shard_size=2).digest()
        != plan_input(str(image_folder), shard_size=3).digest()
    )


def test_list_file_with_urls_and_relative_paths(tmp_path):
    (tmp_path / "x.jpg").write_bytes(jpeg())
    listing = tmp_path / "inputs.txt"
    listing.write_text("# comment\nx.jpg\n\nhttps://example.org/y.jpg\n")
    plan = plan_input(str(listing), shard_size=10)
    assert plan.format == "list"
    assert plan.items == [str(tmp_path / "x.jpg"), "https://example.org/y.jpg"]
    assert len(plan.units) == 1


def test_parquet_image_column_is_read_by_row_range(tmp_path):
    features = Features({"image": Image(), "caption": Value("string")})
    rows = {"image": [{"bytes": jpeg(color=c), "path": None} for c in ("red", "green", "blue")] * 3}
    rows["caption"] = [f"c{i}" for i in range(9)]
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "part.parquet"), batch_size=2)
    plan = plan_input(str(tmp_path / "part.parquet"), shard_size=4)
    assert (plan.format, plan.column, plan.column_kind) == ("parquet", "image", "image")
    assert [(u.start, u.stop) for u in plan.units] == [(0, 4), (4, 8), (8, 9)]
    refs = read_unit(plan, plan.units[1])
    assert [r.source for r in refs] == [f"part.parquet#{i}" for i in range(4, 8)]
    dominant = [max(range(3), key=decode_image(r.data).getpixel((5, 5)).__getitem__) for r in refs]
    assert dominant == [1, 2, 0, 1]  # rows 4..7 are green, blue, red, green


def test_parquet_url_column_and_missing_column(tmp_path):
    Dataset.from_dict({"url": ["http://a/1.jpg", "http://a/2.jpg"], "text": ["x", "y"]}).to_parquet(
        str(tmp_path / "coyo.parquet")
    )
    plan = plan_input(str(tmp_path), shard_size=10)
    assert (plan.format, plan.column, plan.column_kind) == ("parquet", "url", "url")
    assert [r.source for r in read_unit(plan, plan.units[0])] == ["http://a/1.jpg", "http://a/2.jpg"]
    with pytest.raises(CurationSetupError, match="no column 'photo'"):
        plan_input(str(tmp_path), image_column="photo")


def test_webdataset_tar_shards_are_one_unit_each(tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard}.tar", "w") as archive:
            for key in range(3):
                for name, payload in ((f"{key:04d}.jpg", jpeg()), (f"{key:04d}.txt", b"alt text")):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
    plan = plan_input(str(tmp_path), shard_size=1)  # shard_size does not split tar shards
    assert plan.format == "webdataset" and [u.stop for u in plan.units] == [None, None]
    refs = read_unit(plan, plan.units[1])
    assert [r.source for r in refs] == [f"shard-1.tar::{k:04d}.jpg" for k in range(3)]
    assert all(decode_image(r.data).size == (24, 48) for r in refs)


def test_glob_input(image_folder):
    plan = plan_input(str(image_folder / "*.jpg"), shard_size=10)
    assert plan.format == "folder" and len(plan.items) == 2  # a.jpg, e.jpg (glob is case-sensitive)


def test_bad_input_fails_before_any_work(tmp_path):
    with pytest.raises(CurationSetupError, match="does not exist"):
        plan_input(str(tmp_path / "nope"))
    with pytest.raises(CurationSetupError, match="matches no file"):
        plan_input(str(tmp_path / "*.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CurationSetupError, match="holds no image"):
        plan_input(str(tmp_path / "empty"))
    with pytest.raises(CurationSetupError, match="unknown input format"):
        plan_input(str(tmp_path), input_format="zip")


def test_unreadable_and_missing_images_are_rejected_with_a_reason(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    assert load_image(SourceRef(str(tmp_path / "broken.jpg")), NO_RETRY) == (
        None,
        RejectReason.UNREADABLE_IMAGE,
    )
    assert load_image(SourceRef(str(tmp_path / "gone.jpg")), NO_RETRY) == (None, RejectReason.MISSING_FILE)
    assert load_image(SourceRef("x.tar::k.jpg", b""), NO_RETRY) == (None, RejectReason.UNREADABLE_IMAGE)
    image, reason = load_image(SourceRef("mem", jpeg(30, 60)), NO_RETRY)
    assert reason is None and image.mode == "RGB" and image.size == (30, 60)


def test_exif_orientation_is_applied():
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated by 90 degrees
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 20), "red").save(buffer, format="JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue()).size == (20, 40)


def test_unreachable_url_is_rejected_after_bounded_retries():
    url = f"http://127.0.0.1:{closed_port()}/person.jpg"
    settings = FetchSettings(timeout=1.0, retries=2, backoff=0.0)
    assert load_image(SourceRef(url), settings) == (None, RejectReason.DOWNLOAD_FAILED)


def test_dropped_connections_are_retried_a_bounded_number_of_times():
    attempts, done = [], threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.1)

        def accept_and_hang_up() -> None:
            while not done.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                attempts.append(1)
                connection.close()

        thread = threading.Thread(target=accept_and_hang_up, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/person.jpg"
        result = load_image(SourceRef(url), FetchSettings(timeout=2.0, retries=2, backoff=0.0))
        done.set()
        thread.join(timeout=5)
    assert result == (None, RejectReason.DOWNLOAD_FAILED)
    assert len(attempts) == 3  # one try + two retries


def test_url_download_and_http_errors(http_root):
    root, base = http_root
    (root / "p.jpg").write_bytes(jpeg(16, 40))
    (root / "junk.jpg").write_bytes(b"<html>not an image</html>")
    image, reason = load_image(SourceRef(f"{base}/p.jpg"), NO_RETRY)
    assert reason is None and image.size == (16, 40)
    assert load_image(SourceRef(f"{base}/missing.jpg"), NO_RETRY) == (None, RejectReason.DOWNLOAD_FAILED)
    assert load_image(SourceRef(f"{base}/junk.jpg"), NO_RETRY) == (None, RejectReason.UNREADABLE_IMAGE)
    too_small_limit = FetchSettings(timeout=2.0, retries=0, backoff=0.0, max_bytes=10)
    assert load_image(SourceRef(f"{base}/p.jpg"), too_small_limit) == (None, RejectReason.DOWNLOAD_FAILED)
