"""scripts/publish_dataset.py: the exported folder must load on its own, images included."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from gadms_hf.data.corpus import load_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "publish_dataset.py"


@pytest.fixture(scope="module")
def publish():
    spec = importlib.util.spec_from_file_location("publish_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _tmp_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def make_rstp(root: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, np.ndarray]:
    """A tiny RSTPReid folder (the real JSON keys) with those splits; returns each image's pixels by path."""
    entries = [("train", 4, "0004_c1.png"), ("train", 4, "0004_c2.png"), ("train", 7, "0007_c1.png")]
    entries += [("val", 8, "0008_c1.png"), ("test", 9, "0009_c3.png"), ("test", 10, "0010_c1.png")]
    entries = [entry for entry in entries if entry[0] in splits]
    pixels = {}
    (root / "imgs").mkdir(parents=True)
    for seed, (_, _, rel) in enumerate(entries):
        pixels[rel] = np.random.default_rng(seed).integers(0, 256, (40, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels[rel]).save(root / "imgs" / rel)
    annotations = [
        {"id": i, "img_path": p, "captions": [f"first of {p}", f"second of {p}"], "split": s}
        for s, i, p in entries
    ]
    (root / "data_captions.json").write_text(json.dumps(annotations))
    return pixels


def test_export_reloads_without_the_raw_images(publish, tmp_path):
    raw = tmp_path / "rstp"
    pixels = make_rstp(raw)
    out = tmp_path / "export"
    publish.main(
        [
            "--corpus",
            "rstpreid",
            "--data_dir",
            str(raw),
            "--output_dir",
            str(out),
            "--cache_dir",
            str(tmp_path / "c"),
        ]
    )
    built = {
        split: load_corpus("rstpreid", data_dir=raw, split=split, cache_dir=tmp_path / "c")
        for split in ("train", "val", "test")
    }
    shutil.rmtree(raw)
    shutil.rmtree(tmp_path / "c")

    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["configs"][0]["data_files"] == [
        {"split": split, "path": f"data/{split}-*"} for split in ("train", "val", "test")
    ]
    assert "| train | 6 | 3 | 2 |" in card and "RSTPReid" in card

    reloaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "reload"))
    assert sorted(reloaded) == ["test", "train", "val"]
    for split, dataset in reloaded.items():
        assert dataset.features == built[split].features  # Image feature intact
        assert dataset.remove_columns("image").to_list() == built[split].remove_columns("image").to_list()
        for row in dataset:
            np.testing.assert_array_equal(np.asarray(row["image"]), pixels[row["image_path"]])
    stored = reloaded["train"].with_format("arrow")[:]["image"].to_pylist()
    assert all(
        value["bytes"] and "/" not in value["path"] for value in stored
    )  # no absolute local paths leak


def test_a_corpus_without_val_exports_the_splits_it_has(publish, tmp_path):
    raw = tmp_path / "rstp"
    make_rstp(raw, splits=("train", "test"))
    out = tmp_path / "export"
    args = ["--corpus", "rstpreid", "--data_dir", str(raw), "--output_dir", str(out), "--cache_dir", str(tmp_path / "c")]
    publish.main(args)
    assert sorted(p.name.split("-")[0] for p in (out / "data").iterdir()) == ["test", "train"]
    metadata = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert [entry["split"] for entry in metadata["configs"][0]["data_files"]] == ["train", "test"]
    reloaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "reload"))
    assert {split: len(rows) for split, rows in reloaded.items()} == {"train": 6, "test": 4}
    with pytest.raises(ValueError, match=r"has no split\(s\) \['val'\]; it has \['test', 'train'\]"):
        publish.main([*args, "--splits", "train", "val"])


def test_small_max_shard_size_writes_several_shards(publish, tmp_path):
    raw = tmp_path / "rstp"
    make_rstp(raw)
    out = tmp_path / "export"
    stale = out / "data" / "train-00000-of-00009.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    publish.main(
        ["--corpus", "rstpreid", "--data_dir", str(raw), "--output_dir", str(out), "--splits", "train",
         "--max_shard_size", "4KB", "--cache_dir", str(tmp_path / "c")]
    )  # fmt: skip
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert len(shards) > 1 and all(name.startswith("train-") and "-of-" in name for name in shards)
    assert not stale.exists()
    shutil.rmtree(raw)
    reloaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "reload"))
    assert reloaded["caption_id"][:] == list(range(6))


def test_saved_dataset_folder_is_exported(publish, tmp_path):
    raw = tmp_path / "rstp"
    pixels = make_rstp(raw)
    saved = tmp_path / "saved"
    load_corpus("rstpreid", data_dir=raw, split="test", cache_dir=tmp_path / "c").save_to_disk(str(saved))
    out = tmp_path / "export"
    publish.main(["--dataset_path", str(saved), "--output_dir", str(out)])
    shutil.rmtree(raw)
    reloaded = datasets.load_dataset(str(out), split="test", cache_dir=str(tmp_path / "reload"))
    assert isinstance(reloaded.features["image"], datasets.Image)
    np.testing.assert_array_equal(np.asarray(reloaded[0]["image"]), pixels[reloaded[0]["image_path"]])


def test_strict_fails_on_a_truncated_image(publish, tmp_path):
    raw = tmp_path / "rstp"
    make_rstp(raw)
    image = raw / "imgs" / "0009_c3.png"
    image.write_bytes(image.read_bytes()[:100])
    args = ["--corpus", "rstpreid", "--data_dir", str(raw), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=r"Unreadable image .*0009_c3\.png"):
        publish.main([*args, "--strict", "--cache_dir", str(tmp_path / "c1")])
    publish.main([*args, "--splits", "test", "--cache_dir", str(tmp_path / "c2")])
    assert (
        datasets.load_dataset(str(tmp_path / "o"), split="test", cache_dir=str(tmp_path / "r")).num_rows == 2
    )


def test_arguments(publish, capsys):
    with pytest.raises(SystemExit) as exit_info:
        publish.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--push_to_hub", "--strict", "--max_shard_size"))
    assert publish.parse_size("500MB") == 500_000_000 and publish.parse_size("2KiB") == 2048
    with pytest.raises(ValueError, match="Cannot read size '5 parsecs'"):
        publish.parse_size("5 parsecs")
    with pytest.raises(ValueError, match="exactly one of --corpus"):
        publish.main(["--output_dir", "x"])
