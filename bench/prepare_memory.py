"""Peak memory and time of building the data store from a folder, against the number of images.

    python bench/prepare_memory.py [--counts 1000 10000] [--size 256] [--threads 2]

For each count it writes a folder source of that many generated RGB PNG images of size x size
and their class-index PNG masks (a few discs on a gradient, compressible like real images),
then runs `im-core prepare` on it in its own process, as the workflow's data job does, and
reports the process's peak resident memory (VmHWM) and wall time, with the size the images
and masks would take held in memory at once. Memory flat in the count is the point: the
store is written while the folder is read. Writes docs/results/prepare_memory.md. Needs about
1.5 GB of disk per 10 000 images at 256².
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from report import markdown_table, publish  # noqa: E402
from stream_memory import run_child, scene  # noqa: E402


def make_folder(root: Path, count: int, size: int) -> None:
    """`count` image/mask PNG pairs in root/images and root/masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for start in range(0, count, 250):
        images, labels = scene(rng, min(250, count - start), size)
        for k, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / "images" / f"img_{start + k:05d}.png", compress_level=1)
            Image.fromarray(label).save(root / "masks" / f"img_{start + k:05d}.png", compress_level=1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", default=None, help="where the generated folders go (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "prepare_memory.md"))
    a = ap.parse_args(argv)
    rows = []
    for count in a.counts:
        folder = Path(tempfile.mkdtemp(prefix=f"prepare{count}_", dir=a.workdir))
        try:
            t0 = time.perf_counter()
            make_folder(folder / "source", count, a.size)
            made = time.perf_counter() - t0
            settings = {"name": "bench", "source": "folder", "path": str(folder / "source"), "task": "multiclass",
                        "class_names": ["background", "a", "b"], "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                        "ignore_index": 255, "seed": 0, "labeled_fraction": 0.1, "val_fraction": 0.1,
                        "test_fraction": 0.2}
            seconds, peak_mb = run_child(["prepare", "--settings", json.dumps(settings), "--threads", str(a.threads),
                                          "--out", str(folder / "data.zarr")])
            in_memory_gb = count * a.size * a.size * 4 / 1e9
            rows.append([count, f"{a.size}x{a.size}", f"{made:.0f}", f"{seconds:.1f}", f"{count / seconds:.0f}",
                         f"{peak_mb:.0f}", f"{in_memory_gb:.2f}"])
            print(rows[-1], flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    growth = ""
    if len(rows) > 1:
        growth = (f"\nFrom {rows[0][0]} to {rows[-1][0]} images ({rows[-1][0] / rows[0][0]:.0f}x): peak memory "
                  f"{float(rows[-1][5]) / float(rows[0][5]):.2f}x, time {float(rows[-1][3]) / float(rows[0][3]):.1f}x.\n")
    text = (f"# Data store preparation: memory and time against the number of images\n\n"
            f"`python bench/prepare_memory.py --counts {' '.join(map(str, a.counts))} --size {a.size} "
            f"--threads {a.threads}` on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
            "`im-core prepare` of a folder of PNG images and class-index PNG masks, in its own process.\n\n"
            + markdown_table(["images", "size", "folder written (s)", "prepare (s)", "images/s", "peak memory (MB)",
                              "images + masks in memory (GB)"], rows) + growth)
    publish(text, a.out)


if __name__ == "__main__":
    main()
