"""Hugging Face Space entry point of the GA-DMS person-search demo (`python app.py`).

`scripts/make_space.py` assembles the Space: this file, `requirements.txt`, the `gadms_hf` package, a
model folder in `model/` and, optionally, a folder of photos in `gallery/`. Two Space variables change
what it serves: GADMS_MODEL (a folder or Hub id, default `model`) and GADMS_GALLERY (a folder or a
corpus split, default `gallery/` when present, else the SynthPEDES test split).
"""

import os

from gadms_hf.demo.app import build_demo, launch_demo

MODEL = os.environ.get("GADMS_MODEL", "model")
GALLERY = os.environ.get("GADMS_GALLERY", "gallery" if os.path.isdir("gallery") else "synth-pedes:test")

demo = build_demo(MODEL, GALLERY)

if __name__ == "__main__":
    launch_demo(demo, host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
                port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
