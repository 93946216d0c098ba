"""Corpus builders on tiny corpora written in each raw layout: ids, splits, bad input, unreadable images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets.distributed import split_dataset_by_node
from PIL import Image

from gadms_hf.data.builders._common import FEATURES, image_problem
from gadms_hf.data.builders.cuhk_pedes import CuhkPedes
from gadms_hf.data.builders.webperson import WebPerson
from gadms_hf.data.corpus import CORPORA, gallery_and_queries, load_corpus


@pytest.fixture(autouse=True)
def _tmp_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def write_image(path: Path, seed: int, size: tuple[int, int] = (12, 24)) -> np.ndarray:
    """A small random RGB image, PNG or JPEG by suffix; returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(
        path
    )
    return pixels


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# (split, identity as the JSON has it, relative path, captions): raw ids are sparse and out of order on purpose.
CUHK_ENTRIES = [
    ("train", 17, "CUHK01/0001.png", ["a man in a red coat.", "red coat, black bag "]),
    ("test", 3, "test_query/p1.jpg", ["a woman in white.", "white dress, blue shoes."]),
    ("train", 5, "cam_a/0002.jpg", ["a girl with a yellow umbrella.", "yellow umbrella."]),
    ("train", 17, "CUHK01/0003.png", ["the man in red walks.", "red coat again."]),
    ("val", 40, "val/v1.png", ["an old man with a cane.", "grey hair, cane."]),
    ("test", 9, "test_query/p2.jpg", ["a boy in green shorts.", "green shorts."]),
    ("train", 2, "cam_b/0004.png", ["a person on a bike.", "bike, helmet."]),
    ("test", 3, "test_query/p3.png", ["the same woman in white.", "white dress again."]),
]


def make_cuhk(root: Path, entries=CUHK_ENTRIES) -> Path:
    for seed, (_, _, rel, _) in enumerate(entries):
        write_image(root / "imgs" / rel, seed)
    annotations = [
        {"split": s, "captions": c, "file_path": p, "id": i, "processed_tokens": [c[0].split()]}
        for s, i, p, c in entries
    ]
    (root / "reid_raw.json").write_text(json.dumps(annotations))
    return root


def make_icfg(root: Path) -> Path:
    entries = [
        ("train", 101, "train/0101/a.jpg"),
        ("train", 7, "train/0007/b.jpg"),
        ("train", 101, "train/0101/c.jpg"),
    ]
    entries += [("test", 55, "test/0055/d.jpg"), ("test", 56, "test/0056/e.jpg")]
    for seed, (_, _, rel) in enumerate(entries):
        write_image(root / "imgs" / rel, seed)
    annotations = [
        {"split": s, "captions": [f"caption of {p}"], "file_path": p, "id": i, "processed_tokens": [["x"]]}
        for s, i, p in entries
    ]
    (root / "ICFG-PEDES.json").write_text(json.dumps(annotations))
    return root


def make_rstp(root: Path) -> Path:
    entries = [("train", 4, "0004_c1.jpg"), ("train", 4, "0004_c2.jpg"), ("val", 8, "0008_c1.jpg")]
    entries += [("test", 9, "0009_c3.jpg"), ("test", 10, "0010_c1.jpg"), ("train", 1, "0001_c5.jpg")]
    for seed, (_, _, rel) in enumerate(entries):
        write_image(root / "imgs" / rel, seed)
    annotations = [
        {"id": i, "img_path": p, "captions": [f"first of {p}", f"second of {p}"], "split": s}
        for s, i, p in entries
    ]
    (root / "data_captions.json").write_text(json.dumps(annotations))
    return root


WEB_IMAGES = [f"part{k % 2}/{k:04d}.jpg" for k in range(7)]


def make_webperson_raw(root: Path) -> Path:
    for seed, rel in enumerate(WEB_IMAGES):
        write_image(root / "imgs" / rel, seed)
    annotations = [{rel: {"caption1": f"one {rel}", "caption2": f"two {rel}"}} for rel in WEB_IMAGES]
    (root / "webperson_train.json").write_text(json.dumps(annotations))
    return root


def make_webperson_hub(root: Path, shards: int = 3) -> Path:
    """The Hub form as published: embedded image bytes, shards ``data/train-XXXXX-of-YYYYY.parquet``."""
    images = root.parent / f"{root.name}_src"
    for seed, rel in enumerate(WEB_IMAGES):
        write_image(images / rel, seed)
    table = datasets.Dataset.from_dict(
        {
            "image": [(images / rel).read_bytes() for rel in WEB_IMAGES],
            "image_path": WEB_IMAGES,
            "caption1": [f"one {rel}" for rel in WEB_IMAGES],
            "caption2": [f"two {rel}" for rel in WEB_IMAGES],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "image_path": datasets.Value("string"),
                "caption1": datasets.Value("string"),
                "caption2": datasets.Value("string"),
            }
        ),
    )
    for index in range(shards):
        shard = table.shard(shards, index, contiguous=True)
        shard.to_parquet(str(root / "data" / f"train-{index:05d}-of-{shards:05d}.parquet"))
    return root


def rows(dataset) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "image"} for row in dataset.remove_columns("image")]


def test_cuhk_ids_splits_and_captions(tmp_path):
    root = make_cuhk(tmp_path / "cuhk")
    train = load_corpus("cuhk-pedes", data_dir=root, split="train", cache_dir=tmp_path / "cache")
    assert train.features["image"] == datasets.Image()
    assert train.num_rows == 8  # 4 images x 2 captions, one row per caption
    table = rows(train)
    # identities 17, 5, 17, 2 in annotation order -> 0, 1, 0, 2
    assert [r["person_id"] for r in table] == [0, 0, 1, 1, 0, 0, 2, 2]
    assert [r["image_id"] for r in table] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r["caption_id"] for r in table] == list(range(8))
    assert table[1]["caption"] == "red coat, black bag"  # stripped
    assert table[2]["image_path"] == "cam_a/0002.jpg"
    image = train[0]["image"]
    assert image.size == (12, 24)
    np.testing.assert_array_equal(np.asarray(image), write_image(tmp_path / "again.png", 0))

    test = load_corpus("cuhk-pedes", data_dir=root, split="test", cache_dir=tmp_path / "cache")
    assert [r["person_id"] for r in rows(test)] == [0, 0, 1, 1, 0, 0]  # re-indexed per split
    assert [r["caption_id"] for r in rows(test)] == list(range(6))
    val = load_corpus("cuhk-pedes", data_dir=root, split="val", cache_dir=tmp_path / "cache")
    assert val.num_rows == 2 and set(val["person_id"]) == {0}


def test_caption_ids_are_stable_across_builds_and_streaming(tmp_path):
    root = make_cuhk(tmp_path / "cuhk")
    first = rows(load_corpus("cuhk-pedes", data_dir=root, split="train", cache_dir=tmp_path / "a"))
    second = rows(CuhkPedes(data_dir=str(root), cache_dir=str(tmp_path / "b")).as_streaming_dataset("train"))
    assert first == second


def test_icfg_has_train_and_test_only(tmp_path):
    root = make_icfg(tmp_path / "icfg")
    train = load_corpus("icfg-pedes", data_dir=root, split="train", cache_dir=tmp_path / "cache")
    assert [r["person_id"] for r in rows(train)] == [0, 1, 0]
    assert train["caption"][1] == "caption of train/0007/b.jpg"
    with pytest.raises(ValueError, match="val"):
        load_corpus("icfg-pedes", data_dir=root, split="val", cache_dir=tmp_path / "cache")


def test_rstpreid_splits(tmp_path):
    root = make_rstp(tmp_path / "rstp")
    train = load_corpus("rstpreid", data_dir=root, split="train", cache_dir=tmp_path / "cache")
    assert [r["person_id"] for r in rows(train)] == [0, 0, 0, 0, 1, 1]
    assert [r["image_id"] for r in rows(train)] == [0, 0, 1, 1, 2, 2]
    assert train["image_path"][4] == "0001_c5.jpg"
    val = load_corpus("rstpreid", data_dir=root, split="val", cache_dir=tmp_path / "cache")
    test = load_corpus("rstpreid", data_dir=root, split="test", cache_dir=tmp_path / "cache")
    assert (val.num_rows, test.num_rows) == (2, 4)


def test_gallery_and_queries(tmp_path):
    test = load_corpus(
        "cuhk-pedes", data_dir=make_cuhk(tmp_path / "c"), split="test", cache_dir=tmp_path / "x"
    )
    gallery, queries = gallery_and_queries(test)
    assert gallery.column_names == ["image", "person_id", "image_id"]
    assert gallery["image_id"][:] == [0, 1, 2] and gallery["person_id"][:] == [0, 1, 0]
    assert isinstance(gallery[2]["image"], Image.Image)
    assert queries.column_names == ["caption", "person_id", "caption_id"]
    assert queries["caption_id"][:] == list(range(6))
    with pytest.raises(TypeError, match="map-style"):
        gallery_and_queries(test.to_iterable_dataset())
    broken = test.map(lambda r: {"person_id": r["caption_id"]})
    with pytest.raises(ValueError, match="one image has one identity"):
        gallery_and_queries(broken)


def test_missing_files_name_the_path_and_layout(tmp_path):
    root = make_cuhk(tmp_path / "cuhk")
    (root / "reid_raw.json").unlink()
    assert CORPORA["cuhk-pedes"].missing_files(root) == [root / "reid_raw.json"]
    with pytest.raises(FileNotFoundError, match=r"reid_raw\.json does not exist(.|\n)*imgs/"):
        load_corpus("cuhk-pedes", data_dir=root, cache_dir=tmp_path / "cache")

    root = make_rstp(tmp_path / "rstp")
    for image in (root / "imgs").iterdir():
        image.unlink()
    (root / "imgs").rmdir()
    with pytest.raises(FileNotFoundError, match=r"Image folder .*imgs does not exist(.|\n)*img_path"):
        load_corpus("rstpreid", data_dir=root, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="pass data_dir"):
        load_corpus("icfg-pedes", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="Unknown corpus 'cuhk'"):
        load_corpus("cuhk", data_dir=root)
    with pytest.raises(ValueError, match="leave data_dir unset"):
        load_corpus("synth-pedes", data_dir=root)


def test_synth_pedes_is_delegated_with_the_same_schema(tmp_path):
    sizes = {"num_train_ids": 2, "num_test_ids": 2, "test_images_per_id": 1}
    test = load_corpus("synth-pedes", split="test", cache_dir=tmp_path / "cache", **sizes)
    assert {name: test.features[name] for name in FEATURES} == dict(FEATURES)
    assert gallery_and_queries(test)[0].num_rows == 2
    stream = load_corpus("synth-pedes", split="test", streaming=True, cache_dir=tmp_path / "cache", **sizes)
    assert isinstance(stream, datasets.IterableDataset)
    assert [r["caption_id"] for r in rows(stream)] == test["caption_id"][:]
    every = load_corpus("synth-pedes", split=None, cache_dir=tmp_path / "cache", **sizes)
    assert list(every) == ["train", "val", "test"] and every["test"]["caption_id"] == test["caption_id"][:]


def test_split_none_gives_the_splits_the_folder_has(tmp_path):
    entries = [entry for entry in CUHK_ENTRIES if entry[0] != "val"]
    every = load_corpus("cuhk-pedes", data_dir=make_cuhk(tmp_path / "cuhk", entries), split=None)
    assert isinstance(every, datasets.DatasetDict) and sorted(every) == ["test", "train"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e[2].pop("captions"), r"Entry 2 of .*reid_raw\.json has no field 'captions'"),
        (lambda e: e[4].update(split="trainval"), r"Entry 4 of .*: split 'trainval' is not one of"),
        (
            lambda e: e[1].update(captions=["ok", 3]),
            r"Entry 1 of .*: captions\[1\] must be a non-blank string",
        ),
        (lambda e: e[0].update(id=None), r"Entry 0 of .*: field 'id' must be int or str, got None"),
    ],
)
def test_bad_entries_name_the_entry_and_field(tmp_path, edit, message):
    root = make_cuhk(tmp_path / "cuhk")
    entries = json.loads((root / "reid_raw.json").read_text())
    edit(entries)
    (root / "reid_raw.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=message):
        load_corpus("cuhk-pedes", data_dir=root, cache_dir=tmp_path / "cache")


def test_unreadable_images_are_skipped_counted_and_strict_fails(tmp_path, caplog):
    root = make_cuhk(tmp_path / "cuhk")
    truncate(root / "imgs" / "cam_a/0002.jpg")
    truncate(root / "imgs" / "CUHK01/0003.png")
    assert image_problem(str(root / "imgs" / "cam_a/0002.jpg")) is not None
    assert image_problem(str(root / "imgs" / "cam_b/0004.png")) is None

    with caplog.at_level(logging.WARNING):
        train = load_corpus("cuhk-pedes", data_dir=root, split="train", cache_dir=tmp_path / "cache")
    assert "Skipped 2 unreadable image(s) in cuhk_pedes split 'train'" in caplog.text
    assert "cam_a/0002.jpg" in caplog.text and "CUHK01/0003.png" in caplog.text
    # the two good images keep contiguous ids; identity 5 vanished, so 2 becomes person 1
    assert [(r["image_path"], r["person_id"], r["image_id"]) for r in rows(train)][::2] == [
        ("CUHK01/0001.png", 0, 0),
        ("cam_b/0004.png", 1, 1),
    ]
    assert train["caption_id"][:] == [0, 1, 2, 3]

    with pytest.raises(ValueError, match=r"Unreadable image in cuhk_pedes split 'train': .*cam_a/0002\.jpg"):
        load_corpus("cuhk-pedes", data_dir=root, split="train", strict=True, cache_dir=tmp_path / "cache")


def test_editing_the_annotations_rebuilds(tmp_path):
    root = make_cuhk(tmp_path / "cuhk")
    before = load_corpus("cuhk-pedes", data_dir=root, split="val", cache_dir=tmp_path / "cache")
    entries = json.loads((root / "reid_raw.json").read_text())
    entries[4]["captions"] = ["a new caption."]
    (root / "reid_raw.json").write_text(json.dumps(entries))
    after = load_corpus("cuhk-pedes", data_dir=root, split="val", cache_dir=tmp_path / "cache")
    assert (before.num_rows, after["caption"][:]) == (2, ["a new caption."])


@pytest.mark.parametrize("corpus", ["cuhk-pedes", "webperson"])
def test_changing_images_rebuilds(tmp_path, caplog, corpus):
    """The cache key covers the image folder (names, sizes, mtimes): repaired images come back, images broken
    after the build are skipped with a warning instead of reaching training."""
    if corpus == "cuhk-pedes":
        root, image = make_cuhk(tmp_path / "data"), "cam_a/0002.jpg"
    else:
        root, image = make_webperson_raw(tmp_path / "data"), WEB_IMAGES[2]
    path = root / "imgs" / image
    good = path.read_bytes()

    def paths() -> list[str]:
        return load_corpus(corpus, data_dir=root, cache_dir=tmp_path / "cache")["image_path"][:]

    assert image in paths()

    truncate(path)  # broken after the build
    with caplog.at_level(logging.WARNING):
        assert image not in paths()
    assert "Skipped 1 unreadable image(s)" in caplog.text and image in caplog.text

    path.write_bytes(good)  # repaired
    assert image in paths()
    (root / "imgs" / "notes.txt").write_text("a new file")  # any change of the folder rebuilds; same rows
    assert image in paths()


def test_webperson_raw_form(tmp_path):
    root = make_webperson_raw(tmp_path / "web")
    truncate(root / "imgs" / WEB_IMAGES[3])
    train = load_corpus("webperson", data_dir=root, cache_dir=tmp_path / "cache")
    table = rows(train)
    assert len(table) == 12  # 6 readable images x 2 captions
    kept = [i for i in range(7) if i != 3]
    assert [r["caption_id"] for r in table] == [2 * i + k for i in kept for k in (0, 1)]
    assert [r["person_id"] for r in table] == [i for i in kept for _ in (0, 1)]
    assert [r["image_id"] for r in table] == [r["person_id"] for r in table]
    assert table[0]["caption"] == f"one {WEB_IMAGES[0]}" and table[1]["caption"] == f"two {WEB_IMAGES[0]}"
    assert train[11]["image"].size == (12, 24)


def test_webperson_raw_form_file_locations(tmp_path):
    root = make_webperson_raw(tmp_path / "web")
    (root / "imgs").rename(root / "images")
    (root / "webperson_train.json").rename(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError, match=r"Image folder .*web/imgs does not exist"):
        load_corpus("webperson", data_dir=root, annotation_file=str(tmp_path / "list.json"))
    train = load_corpus(
        "webperson",
        data_dir=root,
        annotation_file=str(tmp_path / "list.json"),
        image_dir="images",
        cache_dir=tmp_path,
    )
    assert train.num_rows == 14 and train[13]["image"].size == (12, 24)


def test_webperson_raw_form_missing_caption(tmp_path):
    root = make_webperson_raw(tmp_path / "web")
    entries = json.loads((root / "webperson_train.json").read_text())
    del entries[5][WEB_IMAGES[5]]["caption2"]
    (root / "webperson_train.json").write_text(json.dumps(entries))
    with pytest.raises(
        ValueError, match=rf"Entry 5 of .*webperson_train\.json \('{WEB_IMAGES[5]}'\) has no field 'caption2'"
    ):
        load_corpus("webperson", data_dir=root, cache_dir=tmp_path / "cache")


def test_webperson_hub_form_built_and_streamed_agree(tmp_path):
    root = make_webperson_hub(tmp_path / "hub")
    built = load_corpus("webperson", data_dir=root, cache_dir=tmp_path / "cache")
    assert built.features == CORPORA["webperson"].builder(data_dir=str(root)).info.features
    expected = [
        {
            "caption": f"{word} {rel}",
            "person_id": i,
            "image_id": i,
            "caption_id": 2 * i + k,
            "image_path": rel,
        }
        for i, rel in enumerate(WEB_IMAGES)
        for k, word in enumerate(("one", "two"))
    ]
    assert rows(built) == expected

    stream = load_corpus("webperson", data_dir=root, streaming=True, cache_dir=tmp_path / "cache")
    assert isinstance(stream, datasets.IterableDataset) and stream.num_shards == 3
    assert stream.features == built.features
    assert rows(stream) == expected
    first = next(iter(stream))
    np.testing.assert_array_equal(np.asarray(first["image"]), np.asarray(built[0]["image"]))

    # Ids come from the source position, so they survive splitting the stream across nodes and shuffling.
    per_node = [rows(split_dataset_by_node(stream, rank=rank, world_size=3)) for rank in range(3)]
    assert sorted((r["caption_id"], r["caption"]) for part in per_node for r in part) == [
        (r["caption_id"], r["caption"]) for r in expected
    ]
    shuffled = rows(stream.shuffle(seed=0, buffer_size=4))
    assert shuffled != expected and sorted(shuffled, key=lambda r: r["caption_id"]) == expected


def test_webperson_hub_form_wrong_columns(tmp_path):
    root = tmp_path / "exported"
    table = datasets.Dataset.from_dict({"caption": ["x"], "person_id": [0]})
    table.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(
        ValueError, match=r"has no column\(s\) \['image', 'image_path', 'caption1', 'caption2'\]"
    ):
        load_corpus("webperson", data_dir=root, cache_dir=tmp_path / "cache")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a folder holding Parquet files or a JSON"):
        WebPerson(data_dir=str(empty), cache_dir=str(tmp_path / "cache")).as_streaming_dataset("train")
    with pytest.raises(
        FileNotFoundError, match="typo is not a folder"
    ):  # a missing path is not taken for a Hub id
        load_corpus("webperson", data_dir=tmp_path / "typo", cache_dir=tmp_path / "cache")


def test_annotation_file_that_is_not_utf8_is_named(tmp_path):
    root = make_cuhk(tmp_path / "cuhk")
    text = (root / "reid_raw.json").read_text().replace("a man in a red coat.", "a man in a café coat.")
    (root / "reid_raw.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"reid_raw\.json is not UTF-8 text.*byte 0xe9 at offset \d+"):
        load_corpus("cuhk-pedes", data_dir=root, cache_dir=tmp_path / "cache")


def _as_caption_all(root: Path, folder: str = "") -> None:
    """The released CUHK-PEDES form: caption_all.json, no 'split' field; identity ranges give the split."""
    entries = json.loads((root / "reid_raw.json").read_text())
    published = {"train": 0, "val": 11003, "test": 12003}  # first id before each split's range
    for entry in entries:
        entry["id"] = published[entry.pop("split")] + 1 + entry["id"]
    (root / "reid_raw.json").unlink()
    (root / folder).mkdir(exist_ok=True)
    (root / folder / "caption_all.json").write_text(json.dumps(entries))


@pytest.mark.parametrize("folder", ["", "annotations"])
def test_cuhk_caption_all_json_is_accepted(tmp_path, folder):
    expected = {
        split: rows(load_corpus("cuhk-pedes", data_dir=make_cuhk(tmp_path / "a"), split=split, cache_dir=tmp_path))
        for split in ("train", "val", "test")
    }
    root = make_cuhk(tmp_path / "b")
    _as_caption_all(root, folder)
    assert CORPORA["cuhk-pedes"].missing_files(root) == []
    for split, table in expected.items():
        got = load_corpus("cuhk-pedes", data_dir=root, split=split, cache_dir=tmp_path / "cache")
        assert rows(got) == table, split


def test_caption_all_entry_outside_the_published_ranges_is_named(tmp_path):
    root = make_cuhk(tmp_path / "cuhk")
    _as_caption_all(root)
    entries = json.loads((root / "caption_all.json").read_text())
    entries[3]["id"] = 20000
    (root / "caption_all.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"Entry 3 of .*caption_all\.json has no 'split'.*id 20000.*1-11003"):
        load_corpus("cuhk-pedes", data_dir=root, cache_dir=tmp_path / "cache")


def test_images_unpacked_without_the_imgs_folder_are_found(tmp_path):
    root = make_cuhk(tmp_path / "cuhk")
    for folder in list((root / "imgs").iterdir()):
        folder.rename(root / folder.name)
    (root / "imgs").rmdir()
    assert CORPORA["cuhk-pedes"].missing_files(root) == []
    train = load_corpus("cuhk-pedes", data_dir=root, split="train", cache_dir=tmp_path / "cache")
    assert train.num_rows == 8 and train[0]["image"].size == (12, 24)


def test_missing_image_folders_are_listed_exactly(tmp_path, caplog):
    root = make_cuhk(tmp_path / "cuhk")
    for folder in ("cam_a", "test_query"):
        for image in (root / "imgs" / folder).iterdir():
            image.unlink()
        (root / "imgs" / folder).rmdir()
    (root / "imgs" / "CUHK01" / "0003.png").unlink()
    with pytest.raises(ValueError, match=r"imgs/cam_a/ \(1 image\), imgs/test_query/ \(3 images\).*"
                                         r"imgs/CUHK01/0003\.png"):
        load_corpus("cuhk-pedes", data_dir=root, strict=True, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        train = load_corpus("cuhk-pedes", data_dir=root, split="train", cache_dir=tmp_path / "cache")
    assert "5 of 8 images listed in" in caplog.text and "are missing, skipped" in caplog.text
    assert "missing folders: imgs/cam_a/ (1 image), imgs/test_query/ (3 images)" in caplog.text
    assert "missing files: imgs/CUHK01/0003.png" in caplog.text
    assert sorted(set(train["image_path"])) == ["CUHK01/0001.png", "cam_b/0004.png"]
