"""Every code block of README.md runs as printed.

Python and bash blocks run in a subprocess, in a folder that holds what the README says a user has
at that point: `examples/` and `scripts/`, the demo model in `outputs/pretrain-synth` (a tiny random
one), a `photos/` folder, and `python` from this environment. A bash block that needs real data,
the network or minutes of work is skipped only when the line above it says so, with the reason:
`<!-- readme-test: skip: <reason> -->`; the skips are listed in the test report. Output listings
are tagged `text` and not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from gadms_hf import GADMSConfig, GADMSModel

from .conftest import random_images

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(?P<lang>[^\n]*)\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!-- readme-test: skip: (?P<reason>\S.*?) -->")


class Block(NamedTuple):
    line: int
    lang: str
    code: str
    skip: str | None


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        previous = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = SKIP.fullmatch(previous)
        blocks.append(Block(text.count("\n", 0, match.start()) + 1, match["lang"].strip(), match["code"],
                            marker["reason"] if marker else None))
    return blocks


BLOCKS = readme_blocks()
RUNNABLE = [block for block in BLOCKS if block.lang in ("python", "bash")]


def test_every_block_is_tagged_and_only_bash_is_skipped():
    assert RUNNABLE, "README.md has no code blocks?"
    assert [b.line for b in BLOCKS if b.lang not in ("python", "bash", "text")] == []
    assert [b.line for b in BLOCKS if b.skip and b.lang != "bash"] == []


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, processor) -> Path:
    folder = tmp_path_factory.mktemp("readme-user")
    for name in ("examples", "scripts"):
        (folder / name).symlink_to(ROOT / name)
    torch.manual_seed(0)
    GADMSModel(GADMSConfig.tiny()).save_pretrained(folder / "outputs" / "pretrain-synth")
    processor.save_pretrained(folder / "outputs" / "pretrain-synth")
    (folder / "photos").mkdir()
    for index, image in enumerate(random_images(3, 160, 64)):
        image.save(folder / "photos" / f"{index}.jpg")
    return folder


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b.line}-{b.lang}" for b in RUNNABLE])
def test_readme_block_runs(block: Block, user_folder: Path):
    if block.skip:
        pytest.skip(f"README.md line {block.line}: {block.skip}")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               TOKENIZERS_PARALLELISM="false", HF_DATASETS_CACHE=str(user_folder / "ds-cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python`: this venv's
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-c", block.code] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c",
                                                                                 block.code]
    result = subprocess.run(command, cwd=user_folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README.md line {block.line}:\n{block.code}\n{result.stdout[-2000:]}" \
                                   f"{result.stderr[-3000:]}"
