"""Captioning and the whole curation run, with random-weight YOLO models and a tiny random Qwen2.5-VL.

The tiny vision-language model is a real `Qwen2_5_VLForConditionalGeneration` built from a small
config, with a byte-level BPE tokenizer and a chat template made offline, saved to a folder and
loaded back through `AutoProcessor` / `AutoModelForImageTextToText` exactly like the default
Qwen/Qwen2.5-VL-7B-Instruct. Its captions are gibberish; the plumbing around them is real.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset
from PIL import Image
from transformers import (
    HfArgumentParser,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from gadms_hf.curation import (
    CaptionerConfig,
    CurationSetupError,
    PersonFilterConfig,
    PipelineArguments,
    run_curation,
)
from gadms_hf.curation.captioning import (
    Captioner,
    caption_prompt,
    clean_caption,
    has_unfilled_placeholder,
)
from gadms_hf.curation.report import CurationStats, format_report

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "curate_webperson.py"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
SPECIAL_TOKENS += ["<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# thresholds any random-weight detection passes, so every readable image keeps one person
RELAXED_FILTER = [
    "--detector", "yolo11n.yaml", "--pose_model", "yolo11n-pose.yaml", "--image_size", "256",
    "--min_confidence", "0", "--min_short_side", "0", "--min_aspect_ratio", "0", "--max_aspect_ratio", "1e6",
    "--keypoint_confidence", "0", "--min_visible_keypoints", "0", "--min_head_keypoints", "0",
    "--min_hip_keypoints", "0", "--detector_predict_confidence", "0", "--pose_predict_confidence", "0",
    "--pose_match_iou", "0",
]  # fmt: skip


def build_tiny_vlm(path: Path) -> None:
    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
            fullatt_block_indexes=[1], window_size=56,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    build_tiny_vlm(path)
    return str(path)


@pytest.fixture(scope="module")
def assets() -> Path:
    # located without importing ultralytics (its import patches PIL.Image.open process-wide)
    return Path(importlib.util.find_spec("ultralytics").origin).parent / "assets"


@pytest.fixture
def image_folder(tmp_path, assets) -> Path:
    """Four readable photos (ultralytics' bus and zidane, twice) and one corrupt file."""
    folder = tmp_path / "images"
    folder.mkdir()
    for copy in range(2):
        for name in ("bus.jpg", "zidane.jpg"):
            shutil.copy(assets / name, folder / f"{copy}_{name}")
    (folder / "2_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def parse(argv: list[str]) -> tuple[PipelineArguments, PersonFilterConfig, CaptionerConfig]:
    parser = HfArgumentParser((PipelineArguments, PersonFilterConfig, CaptionerConfig))
    return tuple(parser.parse_args_into_dataclasses(argv))


def curate_argv(input_path, output_dir, vlm: str, *extra: str) -> list[str]:
    return [
        "--input", str(input_path), "--output_dir", str(output_dir), "--caption_model", vlm, "--device", "cpu",
        "--max_new_tokens", "8", "--caption_batch_size", "3", "--io_threads", "2", *RELAXED_FILTER, *extra,
    ]  # fmt: skip


def load_rows(output_dir: Path, cache_dir: Path):
    return load_dataset(str(output_dir), split="train", cache_dir=str(cache_dir))


# --- caption text rules ------------------------------------------------------------------------


def test_caption_prompt_carries_the_papers_rules():
    prompt = caption_prompt("A [gender] wears a [colored top].", max_words=50)
    assert "A [gender] wears a [colored top]." in prompt
    for rule in ("only the pedestrian", "background", "Do not guess", "at most 50 words"):
        assert rule in prompt


def test_clean_caption_enforces_the_word_limit():
    assert clean_caption('  Caption: "A man in a   red coat."\n', 10) == ("A man in a red coat.", False)
    text, truncated = clean_caption("one two three four five, six", 5)
    assert (text, truncated) == ("one two three four five.", True)
    assert clean_caption("   ", 5) == ("", False)


def test_unfilled_placeholders_are_detected():
    assert has_unfilled_placeholder("A man wearing a [colored top].")
    assert not has_unfilled_placeholder("A man wearing a red top.")


# --- the captioner on a real (tiny) vision-language model ---------------------------------------


def test_captioner_batches_and_returns_one_answer_per_pair(tiny_vlm):
    captioner = Captioner(CaptionerConfig(caption_model=tiny_vlm, caption_batch_size=2, max_new_tokens=5))
    images = [Image.new("RGB", (60, 180), c) for c in ("red", "blue", "green")]
    templates = [
        "A [gender] in a [colored top].",
        "The [gender] is [action].",
        "A [gender] with [hairstyle].",
    ]
    answers = captioner(images, templates)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    prompts = captioner.prompts(templates[:1])
    assert "<|image_pad|>" in prompts[0] and "A [gender] in a [colored top]." in prompts[0]
    with pytest.raises(ValueError, match="one each"):
        captioner(images, templates[:2])


def test_unloadable_caption_model_is_one_clear_error():
    with pytest.raises(
        CurationSetupError, match="cannot load the caption processor 'no-such-org/no-such-vlm'"
    ):
        Captioner(CaptionerConfig(caption_model="no-such-org/no-such-vlm"))


# --- the whole run ---------------------------------------------------------------------------------


def test_curation_end_to_end(tiny_vlm, image_folder, tmp_path):
    out = tmp_path / "webperson"
    vlm = str(shutil.copytree(tiny_vlm, tmp_path / "vlm"))  # a private copy, deleted before the rerun
    argv = curate_argv(image_folder, out, vlm, "--shard_size", "2")
    report = run_curation(*parse(argv))
    totals = report["dataset"]
    assert report["units_total"] == report["units_finished"] == 3  # 5 inputs, 2 per unit
    assert totals["images_in"] == 5
    assert totals["rejected"] == {"unreadable_image": 1}
    assert totals["images_kept"] == totals["persons_kept"] == 4
    assert totals["captions_written"] == 8
    assert json.loads((out / "curation_report.json").read_text()) == report
    assert "unreadable_image: 1" in format_report(report)
    assert sorted(os.listdir(out / "data")) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]

    rows = load_rows(out, tmp_path / "cache")
    assert rows.num_rows == 4
    assert rows.column_names[:4] == ["image", "image_path", "caption1", "caption2"]
    sources = sorted(Path(s).name for s in rows["source"])
    assert sources == ["0_bus.jpg", "0_zidane.jpg", "1_bus.jpg", "1_zidane.jpg"]
    assert len(set(rows["image_path"])) == 4
    for row in rows:
        x1, y1, x2, y2 = row["person_box"]
        assert isinstance(row["image"], Image.Image)
        # the crop is the box plus a 10% margin, clipped to the photo
        assert (
            row["image"].width <= round(1.2 * (x2 - x1)) + 2
            and row["image"].height <= round(1.2 * (y2 - y1)) + 2
        )
        assert row["caption1"] and row["caption2"] and row["template1"] != row["template2"]
    same = load_dataset("parquet", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache2"))
    assert same["image_path"] == rows["image_path"]
    card = (out / "README.md").read_text()
    assert "path: data/train-*" in card and "| 5 | 4 | 4 | 8 | 0 |" in card

    # rerun: everything is done, nothing is redone (the deleted model is not even loaded), nothing changes
    before = {p: os.path.getmtime(p) for p in glob.glob(str(out / "data" / "*.parquet"))}
    shutil.rmtree(vlm)
    rerun = run_curation(*parse(argv))
    assert rerun["this_run"]["units_skipped"] == 3 and rerun["this_run"]["units_processed"] == 0
    assert rerun["dataset"] == report["dataset"]
    assert {p: os.path.getmtime(p) for p in before} == before


def test_array_job_shards_cover_the_input_once(tiny_vlm, image_folder, tmp_path):
    out = tmp_path / "webperson"
    first = run_curation(
        *parse(curate_argv(image_folder, out, tiny_vlm, "--shard_size", "1", "--num_shards", "2"))
    )
    assert first["units_finished"] == 3 and first["this_run"]["units_processed"] == 3  # units 0, 2, 4
    assert sorted(os.listdir(out / "data"))[0] == "train-00000-of-00005.parquet"
    argv = curate_argv(
        image_folder, out, tiny_vlm, "--shard_size", "1", "--num_shards", "2", "--shard_index", "1"
    )
    second = run_curation(*parse(argv))
    assert second["units_finished"] == 5 and second["this_run"]["units_processed"] == 2
    assert second["dataset"]["images_in"] == 5 and second["dataset"]["persons_kept"] == 4
    assert load_rows(out, tmp_path / "cache").num_rows == 4


def test_unreachable_url_is_rejected_and_the_run_continues(tiny_vlm, assets, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"http://127.0.0.1:{port}/person.jpg\n{assets / 'bus.jpg'}\n{tmp_path / 'gone.jpg'}\n")
    out = tmp_path / "webperson"
    report = run_curation(
        *parse(curate_argv(listing, out, tiny_vlm, "--url_retries", "1", "--url_backoff", "0"))
    )
    assert report["dataset"]["rejected"] == {"download_failed": 1, "missing_file": 1}
    assert report["dataset"]["persons_kept"] == 1


def test_paper_thresholds_reject_random_detections_with_reasons(tiny_vlm, image_folder, tmp_path):
    out = tmp_path / "webperson"
    argv = curate_argv(image_folder, out, tiny_vlm)
    argv = argv[: argv.index("--min_confidence")]  # keep the models, drop the relaxed thresholds
    report = run_curation(*parse(argv))
    stats = CurationStats.from_dict(report["dataset"])
    assert stats.persons_kept == 0 and stats.images_in == 5
    assert sum(stats.rejected.values()) == 5 and stats.rejected["unreadable_image"] == 1
    shard = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    assert shard.num_rows == 0 and shard.column_names[:4] == ["image", "image_path", "caption1", "caption2"]


def test_bad_model_is_one_error_before_any_work(tiny_vlm, image_folder, tmp_path):
    out = tmp_path / "webperson"
    with pytest.raises(CurationSetupError, match="'no-such-org/no-such-vlm'"):
        run_curation(*parse(curate_argv(image_folder, out, "no-such-org/no-such-vlm")))
    argv = curate_argv(image_folder, out, tiny_vlm)
    argv[argv.index("yolo11n.yaml")] = str(tmp_path / "missing-detector.pt")
    with pytest.raises(CurationSetupError, match="missing-detector.pt"):
        run_curation(*parse(argv))
    assert not out.exists()  # nothing written, not even the manifest


def test_script_reports_setup_errors_as_one_line_and_status_2(image_folder, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("curate_webperson", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "webperson"
    status = script.main(["curate", *curate_argv(image_folder, out, "no-such-org/no-such-vlm")])
    stderr = capsys.readouterr().err
    assert status == 2
    assert stderr.count("error: ") == 1 and "no-such-org/no-such-vlm" in stderr and "Traceback" not in stderr
    assert (
        script.main(["curate", "--input", str(image_folder), "--output_dir", str(out), "--num_shards", "0"])
        == 2
    )
    assert "shard_index" in capsys.readouterr().err
    assert not out.exists()


def test_resume_refuses_different_settings(tiny_vlm, image_folder, tmp_path):
    out = tmp_path / "webperson"
    run_curation(*parse(curate_argv(image_folder, out, tiny_vlm, "--shard_size", "5")))
    with pytest.raises(CurationSetupError, match="shard_size"):
        run_curation(*parse(curate_argv(image_folder, out, tiny_vlm, "--shard_size", "4")))


def test_crash_and_resume_gives_every_row_once(tiny_vlm, assets, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        shutil.copy(assets / ("bus.jpg" if i % 2 else "zidane.jpg"), folder / f"{i}.jpg")
    out = tmp_path / "webperson"
    argv = curate_argv(folder, out, tiny_vlm, "--shard_size", "1")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with open(tmp_path / "log.txt", "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "curate", *argv], stdout=log, stderr=log, env=env
        )
        finished_at_kill = 0
        while process.poll() is None:
            finished_at_kill = len(glob.glob(str(out / "data" / "*.parquet")))
            if finished_at_kill >= 2:
                process.kill()  # SIGKILL: no cleanup, possibly mid-write
                break
            time.sleep(0.02)
        process.wait(timeout=60)
    assert process.returncode == -9, (tmp_path / "log.txt").read_text()[-3000:]
    assert 2 <= finished_at_kill < 8

    report = run_curation(*parse(argv))
    assert report["units_finished"] == 8
    assert report["this_run"]["units_skipped"] >= finished_at_kill
    assert report["this_run"]["units_processed"] == 8 - report["this_run"]["units_skipped"]
    rows = load_rows(out, tmp_path / "cache")
    assert sorted(Path(s).name for s in rows["source"]) == [f"{i}.jpg" for i in range(8)]
    assert len(set(rows["image_path"])) == 8
    assert not [p for p in os.listdir(out / "data") if ".tmp-" in p]
