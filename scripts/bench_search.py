#!/usr/bin/env python
"""How fast the demo answers and how much memory indexing takes (a benchmark, not a test).

    python scripts/bench_search.py query --gallery_size 10000            # per-query latency, tiny model
    python scripts/bench_search.py query --gallery_size 10000 --preset vit_b16
    python scripts/bench_search.py index --photos 1000 --megapixels 3    # peak memory of indexing

`query` times the demo's search path on a gallery of `--gallery_size` cached random embeddings (what a
query costs once the gallery is indexed): the top-k alone (one matrix-vector product + top-k), the text
embedding plus top-k, `SearchEngine.search` (that plus GASS of the query against the best hit and its
captions), and the page's whole handler (that plus thumbnails and HTML). Weights are random: the cost does
not depend on them. `index` writes `--photos` generated JPEG photos, then indexes them in a fresh process
with the tiny model and reports its resident memory before indexing and its peak.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gadms_hf import GADMSConfig, GADMSModel, GADMSProcessor, build_clip_tokenizer, make_image_processor  # noqa: E402
from gadms_hf.demo.engine import FOLDER_EXAMPLES, SearchEngine  # noqa: E402
from gadms_hf.search.gallery import Gallery  # noqa: E402

QUERIES = [*FOLDER_EXAMPLES, "an old man in a brown hat, a green coat and dark trousers"]


def _model(preset: str) -> tuple[GADMSModel, GADMSProcessor]:
    config = GADMSConfig.tiny() if preset == "tiny" else GADMSConfig.vit_b16()
    torch.manual_seed(0)
    model = GADMSModel(config).eval()
    return model, GADMSProcessor(make_image_processor(*config.image_size), build_clip_tokenizer())


def _milliseconds(step, repeats: int) -> tuple[float, float]:
    times = []
    for i in range(repeats + 3):
        begin = time.perf_counter()
        step(QUERIES[i % len(QUERIES)])
        if i >= 3:  # the first calls warm caches and allocators
            times.append(1000 * (time.perf_counter() - begin))
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def bench_query(args: argparse.Namespace) -> None:
    from gadms_hf.demo.app import search_outputs  # Gradio: imported only where the page's handler is timed

    model, processor = _model(args.preset)
    width = model.config.projection_dim
    embeddings = torch.nn.functional.normalize(torch.randn(args.gallery_size, width), dim=-1)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (384, 128, 3), dtype=np.uint8))
    names = [f"photo_{i:05d}.jpg" for i in range(args.gallery_size)]
    gallery = Gallery(f"{args.gallery_size:,} random embeddings", names, embeddings, lambda row: photo)
    engine = SearchEngine(model, processor, gallery, top_k=args.top_k)
    fixed = engine.embed_query(QUERIES[0])
    rows = [
        ("top-k only (matrix-vector product + top-k)", lambda text: gallery.rank(fixed, args.top_k)),
        ("text embedding + top-k", lambda text: gallery.rank(engine.embed_query(text), args.top_k)),
        ("SearchEngine.search (+ GASS word scores of the best hit)", engine.search),
        ("page handler (+ thumbnails and HTML)", lambda text: search_outputs(engine, text)),
    ]
    print(f"{args.preset} model, gallery of {args.gallery_size:,} x {width} embeddings, top {args.top_k}, "
          f"{args.repeats} queries, {torch.get_num_threads()} torch thread(s), {platform.processor() or platform.machine()}")
    print("| step | median ms | p90 ms |\n|---|---:|---:|")
    for label, step in rows:
        median, p90 = _milliseconds(step, args.repeats)
        print(f"| {label} | {median:.1f} | {p90:.1f} |")
    if args.browser:
        median, p90 = bench_browser(engine, args.repeats)
        print(f"| in Chromium: click on Search to hits and words on screen | {median:.1f} | {p90:.1f} |")


# Runs in the page: type the query, click Search, and wait (polling every 2 ms) until its words are shown;
# timed by the browser's own clock, from the click, so the driver's overhead is not counted.
_ROUND_TRIP_JS = """async (query) => {
  const box = document.querySelector('#gadms-query textarea');
  box.value = query;
  box.dispatchEvent(new Event('input', {bubbles: true}));
  await new Promise((done) => setTimeout(done, 50));
  const start = performance.now();
  document.querySelector('#gadms-search').click();
  while (!document.querySelector('#gadms-words')?.innerText.includes(query)) {
    await new Promise((done) => setTimeout(done, 2));
  }
  return performance.now() - start;
}"""


def bench_browser(engine: SearchEngine, repeats: int) -> tuple[float, float]:
    """Median and p90 ms from a click on Search to the query's hits and words on screen, in Chromium."""
    from gadms_hf.demo.app import launch_demo, page_for
    from gadms_hf.demo.browser import chromium, free_port

    demo = page_for(engine, "random weights")
    port = free_port()
    launch_demo(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=120_000)
            page.wait_for_selector("#gadms-search")
            # a new text each time, so that the page must change
            times = [page.evaluate(_ROUND_TRIP_JS, f"{QUERIES[i % len(QUERIES)]} {i}") for i in range(repeats + 3)]
    finally:
        demo.close()
    times = sorted(times[3:])
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def _write_photos(folder: Path, count: int, megapixels: float) -> None:
    """Smooth random pictures (upsampled noise): as costly to decode as photos, a few hundred kB as JPEG."""
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        small.resize((width, height), Image.BICUBIC).save(folder / f"photo_{i:04d}.jpg", quality=90)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def index_child(folder: Path, batch_size: int) -> None:
    """Runs in a fresh process so that its peak memory is the indexing's alone."""
    from gadms_hf.search.folder_index import index_folder

    model, processor = _model("tiny")
    before = _rss_mib()
    begin = time.perf_counter()
    with torch.no_grad():
        index = index_folder(model, processor, folder, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - begin
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{index.summary()} in {seconds:.1f} s ({len(index.names) / seconds:.1f} photos/s)")
    print(f"resident memory before indexing {before:.0f} MiB, peak {peak:.0f} MiB (+{peak - before:.0f} MiB)")


def bench_index(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as folder:
        begin = time.perf_counter()
        _write_photos(Path(folder), args.photos, args.megapixels)
        size = sum(p.stat().st_size for p in Path(folder).iterdir()) / 2**20
        first = next(Path(folder).iterdir())
        with Image.open(first) as image:
            shape = image.size
        print(f"wrote {args.photos} JPEG photos of {shape[0]}x{shape[1]} ({size:.0f} MiB) in "
              f"{time.perf_counter() - begin:.0f} s; indexing them, batch {args.batch_size}:")
        subprocess.run([sys.executable, __file__, "index-child", folder, "--batch_size", str(args.batch_size)],
                       check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", help="per-query latency on a cached gallery")
    query.add_argument("--gallery_size", type=int, default=10_000)
    query.add_argument("--preset", choices=("tiny", "vit_b16"), default="tiny")
    query.add_argument("--top_k", type=int, default=8)
    query.add_argument("--repeats", type=int, default=30)
    query.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    index = commands.add_parser("index", help="peak memory of indexing generated photos")
    index.add_argument("--photos", type=int, default=1000)
    index.add_argument("--megapixels", type=float, default=3.0)
    index.add_argument("--batch_size", type=int, default=64)
    child = commands.add_parser("index-child")
    child.add_argument("folder", type=Path)
    child.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.command == "query":
        bench_query(args)
    elif args.command == "index":
        bench_index(args)
    else:
        index_child(args.folder, args.batch_size)


if __name__ == "__main__":
    main()
