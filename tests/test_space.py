"""The Space folder runs on its own: its copy of the package, its requirements, no curation/training extras."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gadms_hf.demo.browser import free_port, wait_until_served

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_space", ROOT / "scripts" / "make_space.py")
make_space = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_space)

# Used only by curation (YOLO, OpenCV), checkpoint conversion (open_clip), LoRA and the evaluate module.
NOT_IN_SPACE = {"ultralytics", "opencv-python", "open_clip_torch", "peft", "evaluate"}
BLOCKED_MODULES = ["ultralytics", "cv2", "open_clip", "peft", "evaluate"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()


def test_space_requirements_follow_the_package():
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    space = (ROOT / "spaces" / "gadms-demo" / "requirements.txt").read_text().split()
    assert sorted(space) == sorted(r for r in package if _name(r) not in NOT_IN_SPACE)
    card = (ROOT / "spaces" / "gadms-demo" / "README.md").read_text()
    assert card.startswith("---\n") and "sdk: gradio" in card and "app_file: app.py" in card


def test_assembled_space_serves_the_page_with_its_own_package(tmp_path, tiny_model, processor):
    model, photos = tmp_path / "model", tmp_path / "photos"
    tiny_model.save_pretrained(model)
    processor.save_pretrained(model)
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (120, 50, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    space = make_space.make_space(tmp_path / "space", model, photos)
    assert (space / "gadms_hf" / "demo" / "app.py").is_file() and (space / "model" / "model.safetensors").is_file()

    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), OMP_NUM_THREADS="1",
               GRADIO_ANALYTICS_ENABLED="False")
    # the Space must not need the packages it leaves out: importing them fails in the child
    code = (f"import sys, runpy; sys.modules.update(dict.fromkeys({BLOCKED_MODULES!r})); "
            "import gadms_hf; print('PACKAGE', gadms_hf.__file__, flush=True); "
            "runpy.run_path('app.py', run_name='__main__')")
    server = subprocess.Popen([sys.executable, "-c", code], cwd=space, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_served(f"http://127.0.0.1:{port}/", alive=lambda: server.poll() is None)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/config", timeout=30) as response:
            config = response.read().decode()
        assert "gadms-query" in config and "gadms-error" not in config
        # no run history: the browser would store every answer and each next one would get slower
        assert json.loads(config)["run_history"] is False
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[0]
    assert f"PACKAGE {space / 'gadms_hf' / '__init__.py'}" in log, log[-2000:]
    assert "Traceback" not in log, log[-3000:]
