"""examples/search.py: index once, re-embed only new/changed files, skip unreadable images, answer queries."""

import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("search_example", ROOT / "examples" / "search.py")
search = importlib.util.module_from_spec(spec)
spec.loader.exec_module(search)


def _write(folder: Path, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)).save(folder / name)


def test_index_reuse_and_query(tmp_path, tiny_model, processor, capsys):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(4):
        _write(photos, f"p{i}.png", i)
    _write(photos / "sub", "p4.jpg", 4)
    (photos / "broken.jpg").write_bytes(b"not an image")

    search.main(["index", "--model_name_or_path", str(model_dir), "--images", str(photos)])
    out = capsys.readouterr().out
    assert "index: 5 images (5 embedded now, 0 reused, 1 unreadable)" in out and "broken.jpg" in out

    _write(photos, "p0.png", 99)  # changed content and size/mtime
    os.utime(photos / "p0.png", ns=(1, 1))
    (photos / "p3.png").unlink()
    results = search.main(["query", "--model_name_or_path", str(model_dir), "--images", str(photos),
                           "--text", "a man in a red coat", "--top_k", "3", "--grid", str(tmp_path / "grid.png")])
    out = capsys.readouterr().out
    assert "index: 4 images (1 embedded now, 3 reused, 1 unreadable)" in out
    assert len(results) == 3 and all(name in {"p0.png", "p1.png", "p2.png", "sub/p4.jpg"} for name, _ in results)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert (tmp_path / "grid.png").stat().st_size > 1000
