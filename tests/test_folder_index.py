"""The folder index scales: bounded memory, saved as it goes (kill -9 safe), every bad image skipped, progress.

The memory and kill tests drive `examples/search.py` in a real subprocess, as a user would.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from gadms_hf.evaluation.embedding import embed_images
from gadms_hf.search.folder_index import INDEX_DIR, image_fingerprint, index_folder
from gadms_hf.search.shard_store import ShardStore

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "examples" / "search.py"
spec = importlib.util.spec_from_file_location("search_example", SEARCH)
search = importlib.util.module_from_spec(spec)
spec.loader.exec_module(search)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _photo(path: Path, seed: int, size: tuple[int, int] = (40, 90), smooth: bool = False) -> None:
    """A random picture; `smooth` ones are upsampled noise, small on disk but as costly to decode as a photo."""
    rng = np.random.default_rng(seed)
    width, height = size
    if smooth:
        small = Image.fromarray(rng.integers(0, 255, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8))
        small.resize(size, Image.BILINEAR).save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels (the pixel data is an 8x8 image's)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR: width, height, then depth etc., then the CRC
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    return bytes(data)


@pytest.fixture
def model_dir(tmp_path, tiny_model, processor) -> Path:
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _reference(model, processor, folder: Path, names: list[str]) -> torch.Tensor:
    return embed_images(model, [Image.open(folder / n) for n in names], processor, progress=False)


def test_every_kind_of_bad_image_is_skipped_and_listed(tmp_path, model_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        _photo(photos / f"ok{i}.png", i)
    (photos / "bomb.png").write_bytes(_png_claiming(20000, 20000))  # DecompressionBombError: not an OSError
    (photos / "huge.png").write_bytes(_png_claiming(10000, 10000))  # only a warning in Pillow: would be decoded
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 90), "red").save(jpeg, "JPEG")
    (photos / "truncated.jpg").write_bytes(jpeg.getvalue()[:200])
    (photos / "text.png").write_bytes(b"not an image")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "dangling.jpg").symlink_to(photos / "deleted.jpg")  # listed, but stat() fails

    search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(photos)])
    out = capsys.readouterr().out
    assert "index: 3 images (3 embedded now, 0 reused, 6 unreadable)" in out
    lines = {line.split(": ", 1)[0].removeprefix("skipped unreadable image "): line
             for line in out.splitlines() if line.startswith("skipped")}
    assert sorted(Path(p).name for p in lines) == ["bomb.png", "dangling.jpg", "empty.jpg", "huge.png",
                                                   "text.png", "truncated.jpg"]
    assert "400000000 pixels" in lines[str(photos / "bomb.png")]
    assert "decompression-bomb" in lines[str(photos / "huge.png")]
    assert "truncated" in lines[str(photos / "truncated.jpg")]
    assert "FileNotFoundError" in lines[str(photos / "dangling.jpg")]


def test_indexing_shows_progress(tmp_path, model_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        _photo(photos / f"p{i}.png", i)
    search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(photos), "--batch_size", "2"])
    err = capsys.readouterr().err
    assert f"indexing {photos}" in err and "3/3" in err


def _peak_rss_kib(model_dir: Path, folder: Path) -> int:
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['search.py', 'index', '--model_name_or_path', {str(model_dir)!r}, '--images', {str(folder)!r},"
        " '--batch_size', '4']\n"
        f"runpy.run_path({str(SEARCH)!r}, run_name='__main__')\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split("PEAK")[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_memory_does_not_grow_with_the_number_of_photos(tmp_path, model_dir):
    """24 six-megapixel photos (18 MB each decoded) must cost no more peak memory than 2 of them."""
    few, many = tmp_path / "few", tmp_path / "many"
    few.mkdir()
    many.mkdir()
    _photo(few / "p0.png", 0, size=(3000, 2000), smooth=True)
    data = (few / "p0.png").read_bytes()
    (few / "p1.png").write_bytes(data)
    for i in range(24):
        (many / f"p{i:02d}.png").write_bytes(data)
    growth_mib = (_peak_rss_kib(model_dir, many) - _peak_rss_kib(model_dir, few)) / 1024
    assert growth_mib < 150, f"peak memory grew by {growth_mib:.0f} MiB for 22 more photos"


def _shards(photos: Path) -> list[Path]:
    return sorted(photos.glob(f"{INDEX_DIR}/*/*.safetensors"))


def test_kill_9_mid_index_loses_only_the_batch_in_flight(tmp_path, model_dir, tiny_model, processor, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    count = 40
    for i in range(count):
        _photo(photos / f"p{i:03d}.png", i, size=(600, 900), smooth=True)
    command = [sys.executable, str(SEARCH), "index", "--model_name_or_path", str(model_dir),
               "--images", str(photos), "--batch_size", "1"]
    child = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_shards(photos)) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err.decode()[-2000:]}"
    saved = len(ShardStore(_shards(photos)[0].parent).load()[0])
    assert 3 <= saved < count

    search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(photos)])
    out = capsys.readouterr().out
    assert f"index: {count} images ({count - saved} embedded now, {saved} reused, 0 unreadable)" in out
    index = index_folder(tiny_model, processor, photos, progress=False)
    assert index.names == [f"p{i:03d}.png" for i in range(count)] and index.embedded == 0
    assert torch.allclose(index.embeddings, _reference(tiny_model, processor, photos, index.names), atol=1e-5)
    leftovers = [p.name for p in (photos / INDEX_DIR).rglob("*") if p.is_file()]
    assert len(leftovers) == 1 and leftovers[0].endswith(".safetensors"), leftovers


def test_damaged_shards_and_stale_temporary_files_never_block_a_rerun(tmp_path, tiny_model, processor):
    for i in range(5):
        _photo(tmp_path / f"p{i}.png", i)
    store = tmp_path / INDEX_DIR / image_fingerprint(tiny_model, processor)
    first = index_folder(tiny_model, processor, tmp_path, batch_size=2, progress=False)
    (shard,) = list(store.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a shard cut short (disk error)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (store / f".00000099-0badc0de.{dead.pid}.tmp").write_bytes(b"half a shard")  # a writer killed mid-write
    (store / "99999999-deadbeef.safetensors").write_text(json.dumps({"not": "a shard"}))

    again = index_folder(tiny_model, processor, tmp_path, batch_size=2, progress=False)
    assert again.embedded == 5 and again.reused == 0 and len(again.problems) == 2
    assert all("ignored unreadable index shard" in p for p in again.problems)
    assert torch.allclose(again.embeddings, first.embeddings, atol=1e-6)
    assert [p.name for p in store.iterdir()] == [p.name for p in store.glob("*.safetensors")]
    assert len(list(store.iterdir())) == 1


def test_a_model_changed_in_place_re_embeds_everything(tmp_path, model_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        _photo(photos / f"p{i}.png", i)
    search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(photos)])
    from gadms_hf import GADMSModel

    retrained = GADMSModel.from_pretrained(model_dir)
    with torch.no_grad():
        retrained.visual_projection.weight.mul_(-1.0)
    retrained.save_pretrained(model_dir)  # same folder, new weights: the old embeddings are stale
    capsys.readouterr()
    search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(photos)])
    assert "index: 3 images (3 embedded now, 0 reused, 0 unreadable)" in capsys.readouterr().out
    search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(photos)])
    assert "index: 3 images (0 embedded now, 3 reused, 0 unreadable)" in capsys.readouterr().out


def test_cli_errors_are_messages(tmp_path, model_dir, capsys):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    photos = tmp_path / "photos"
    photos.mkdir()
    with pytest.raises(SystemExit):
        search.main(["index", "--model_name_or_path", str(wrong), "--images", str(photos)])
    assert "model_type='bert'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(tmp_path / "nowhere")])
    assert "is not a folder" in capsys.readouterr().err


def test_photos_are_upright_as_their_exif_orientation_says(tmp_path, tiny_model, processor):
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": how phones store portraits
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    index = index_folder(tiny_model, processor, tmp_path, progress=False)
    with Image.open(tmp_path / "portrait.jpg") as stored:
        as_stored = stored.convert("RGB")
    shown = ImageOps.exif_transpose(as_stored)
    assert shown.size == (40, 90)
    expected, sideways = embed_images(tiny_model, [shown, as_stored], processor, progress=False)
    assert torch.allclose(index.embeddings[0], expected, atol=1e-5)
    assert not torch.allclose(index.embeddings[0], sideways, atol=1e-3)
