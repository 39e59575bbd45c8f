"""How much do labels matter on the demo data? One model on the labeled split only (10 %, LDT)
against one model on every training label (FDT), same model, steps and seed.

    python bench/demo_gap.py                 # the config's demo data set, 2400 steps each
    python bench/demo_gap.py --steps 1200

The two trainings run side by side (one thread each). Prints test mIoU of both and the gap,
and writes docs/results/demo_gap.csv. The demo is meant to leave a gap of at least 0.15.
"""
from __future__ import annotations

import argparse
import dataclasses
import copy
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from im_core import metrics  # noqa: E402
from im_core.config import train_settings, validate_config  # noqa: E402
from im_core.data.read import read_split, training_arrays  # noqa: E402
from im_core.data.store import prepare  # noqa: E402
from im_core.io import open_store  # noqa: E402
from im_core.models.checkpoints import load_checkpoint  # noqa: E402
from im_core.models.inference import predict_labels  # noqa: E402
from im_core.runtime.devices import pick_device  # noqa: E402
from im_core.settings import TrainSettings  # noqa: E402
from im_core.steps import train  # noqa: E402


def run_one(name: str, dataset: dict, settings: TrainSettings, workdir: Path) -> dict:
    store = workdir / f"{name}.zarr"
    prepare(dataset, store)
    started = time.time()
    result = train.run(str(store), str(workdir / f"{name}.pt"), settings, threads=1, model_id=name, progress=False)
    model, _ = load_checkpoint(workdir / f"{name}.pt", pick_device())
    st = open_store(store)
    test = read_split(st, "test")
    pred = predict_labels(model, test.images, st.attrs["task"], len(st.attrs["class_names"]))
    scores = metrics.score(pred, test.masks, st.attrs["class_names"], st.attrs["ignore_index"])
    return {"training": name, "labeled_images": len(training_arrays(st).index), "steps": settings.steps,
            "best_val_miou": result["best_val_miou"], "test_miou": scores["miou"],
            "test_miou_per_image": scores["miou_per_image"], "seconds": time.time() - started}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="demo")
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "demo_gap.csv"))
    args = ap.parse_args()
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    exp = config["experiments"][args.experiment]
    dataset = config["datasets"][exp["dataset"]]
    settings = dataclasses.replace(train_settings(exp, 0, 0), steps=args.steps)
    # FDT: the same images and test/val split; every training image labeled.
    full = copy.deepcopy(dataset)
    full["labeled_fraction"] = 1.0
    workdir = REPO / "results" / "bench" / "demo_gap"
    workdir.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(run_one, ["LDT", "FDT"], [dataset, full], [settings] * 2, [workdir] * 2))
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False, float_format="%.4f")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    gap = table.set_index("training").loc["FDT", "test_miou"] - table.set_index("training").loc["LDT", "test_miou"]
    print(f"gap (FDT - LDT) in test mIoU: {gap:.4f}; table: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
