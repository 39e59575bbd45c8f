"""Peak memory and time of prediction and pseudo-label building against the unlabeled split's size.

    python bench/stream_memory.py [--counts 1000 10000] [--size 256] [--teachers 3]

For each count it writes (chunk by chunk, so the generator itself stays small) a data store
whose unlabeled split holds that many generated images of size x size and the predictions of
`--teachers` teachers that disagree on random patches, then runs, each as its own process
as the workflow does:
- `im-core predict` of one untrained U-Net (α = 0.25) over the unlabeled split;
- `im-core pseudo`, the IM builder over the teachers' predictions;
and reports each process's peak resident memory (its VmHWM) and wall time. The
growth from the smaller to the larger count shows whether memory is flat in the data size.
Writes docs/results/stream_memory.md. Needs about 4 GB of disk per 10 000 images at 256².
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from im_core.io import create_array, open_store, write_json  # noqa: E402
from report import markdown_table, publish  # noqa: E402

CHUNK = 512  # a multiple of the stores' chunks (io.chunk_shape), so no chunk is written twice
CLASSES = 3


def scene(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """n images of a few flat discs on a gradient (compressible, like real images) and their labels."""
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        img = np.broadcast_to(((xx + yy) * 60 // size)[..., None], (size, size, 3)).astype(np.uint8).copy()
        for c in (1, 2):
            cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 16, size // 5))]
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[disc] = (90 * c, 200 - 60 * c, 60 * c)
            labels[i][disc] = c
        images[i] = img
    return images, labels


def make_inputs(folder: Path, count: int, size: int, teachers: int) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(0)
    data = open_store(folder / "data.zarr", mode="w")
    arrays = {
        "images": create_array(data, "images", (count, size, size, 3), np.uint8, ("image", "y", "x", "channel")),
        "masks": create_array(data, "masks", (count, size, size), np.uint8, ("image", "y", "x")),
    }
    preds = []
    for t in range(teachers):
        group = open_store(folder / f"teacher{t}.zarr", mode="w")
        sub = group.require_group("unlabeled")
        preds.append(create_array(sub, "labels", (count, size, size), np.uint8, ("image", "y", "x")))
        create_array(sub, "index", (count,), np.int64, ("image",))[:] = np.arange(count)
        group.attrs.update({"kind": "im_core.predictions", "model_id": f"gen0_m{t}", "task": "multiclass"})
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        images, labels = scene(rng, n, size)
        arrays["images"][start:start + n] = images
        arrays["masks"][start:start + n] = labels
        for t, p in enumerate(preds):
            noisy = labels.copy()
            y, x = rng.integers(0, size - size // 4, 2)
            noisy[:, y:y + size // 4, x:x + size // 4] = t % CLASSES  # each teacher errs on its own patch
            p[start:start + n] = noisy
    create_array(data, "split", (count,), np.uint8, ("image",))[:] = 1  # all unlabeled
    create_array(data, "has_mask", (count,), bool, ("image",))[:] = True
    data.attrs.update({"kind": "im_core.data", "dataset": "stream_bench", "source": "generated", "task": "multiclass",
                       "class_names": ["background", "a", "b"], "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                       "ignore_index": 255, "split_codes": {"labeled": 0, "unlabeled": 1, "val": 2, "test": 3},
                       "names": [f"img_{i:05d}" for i in range(count)], "size": [size, size]})
    return folder / "data.zarr", [folder / f"teacher{t}.zarr" for t in range(teachers)]


def untrained_checkpoint(path: Path) -> Path:
    import torch
    from im_core.models import build_model
    args = dict(in_channels=3, out_channels=CLASSES, alpha=0.25, dropout=0.0)
    torch.save({"state_dict": build_model(**args).state_dict(), "model_args": args, "model_id": "bench",
                "generation": 0, "settings": {}}, path)
    return path


def run_child(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `python -m im_core.cli <args>` in its own process."""
    # VmHWM, not ru_maxrss: the latter survives exec and would report this (parent) process's peak
    code = ("import sys; from im_core.cli import main\n"
            "assert main(sys.argv[1:]) == 0\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].replace('VmHWM:', 'PEAK_RSS_KB'))")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"im-core {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    peak = [line for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KB")][-1].replace("kB", "")
    return seconds, int(peak.split()[1]) / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--teachers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", default=None, help="where the generated stores go (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "stream_memory.md"))
    a = ap.parse_args(argv)
    rows = []
    for count in a.counts:
        folder = Path(tempfile.mkdtemp(prefix=f"stream{count}_", dir=a.workdir))
        try:
            t0 = time.perf_counter()
            data, teachers = make_inputs(folder, count, a.size, a.teachers)
            made = time.perf_counter() - t0
            selection = folder / "selection.json"
            write_json(selection, {"ranking": [f"gen0_m{t}" for t in range(a.teachers)],
                                   "selected": [f"gen0_m{t}" for t in range(a.teachers)]})
            ckpt = untrained_checkpoint(folder / "model.pt")
            predict = run_child(["predict", "--checkpoint", str(ckpt), "--data", str(data), "--splits", "unlabeled",
                                 "--batch-size", "64", "--threads", str(a.threads), "--out", str(folder / "pred.zarr")])
            settings = {"builder": "im", "teachers": a.teachers, "block_input": True, "block_output": True,
                        "label_mode": "ignore", "erode": 0, "dilate": 0, "filter_class_disagreement": False}
            pseudo = run_child(["pseudo", "--data", str(data), "--selection", str(selection), "--predictions",
                                *map(str, teachers), "--settings", json.dumps(settings), "--generation", "1",
                                "--out", str(folder / "pseudo.zarr")])
            im = float(open_store(folder / "pseudo.zarr").attrs["mean_im_fraction"])
            raw_gb = count * a.size * a.size * (3 + 1 + 1 + 1 * a.teachers) / 1e9
            rows.append({"images": count, "size": a.size, "inputs_gb_uncompressed": raw_gb, "generate_s": made,
                         "predict_s": predict[0], "predict_peak_mb": predict[1],
                         "pseudo_s": pseudo[0], "pseudo_peak_mb": pseudo[1], "im_fraction": im})
            print(json.dumps(rows[-1]), flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    publish(markdown_table(
        ["unlabeled images", "size", "inputs (GB, uncompressed)", "predict: s", "predict: peak MB",
         f"pseudo (IM, {a.teachers} teachers): s", "pseudo: peak MB"],
        [[r["images"], f"{r['size']}²", f"{r['inputs_gb_uncompressed']:.1f}", f"{r['predict_s']:.0f}",
          f"{r['predict_peak_mb']:.0f}", f"{r['pseudo_s']:.0f}", f"{r['pseudo_peak_mb']:.0f}"] for r in rows]), a.out)


if __name__ == "__main__":
    main()
