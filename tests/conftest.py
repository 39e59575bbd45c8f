"""Shared fixtures: a small demo data store and training settings that take a second."""
import pytest

from im_core.config import resolve_dataset
from im_core.data import prepare

TRAIN_SETTINGS = {"seed": 3, "model": {"alpha": 0.25, "dropout": 0.0}, "batch_size": 4, "lr": 0.003,
                  "weight_decay": 1e-4, "epochs": 1, "steps": 3, "eval_every": 3, "warmup_fraction": 0.0,
                  "augment": {"hflip": True, "vflip": False, "scale": [0.5, 1.0]}}


def make_demo_store(path, n_images: int = 24):
    cfg = resolve_dataset("t", {"source": "demo", "n_images": n_images, "size": [16, 16], "seed": 0, "ignore_index": 255,
                                "labeled_fraction": 0.3, "val_fraction": 0.2, "test_fraction": 0.2})
    prepare(cfg, path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_demo_store(tmp_path_factory.mktemp("d") / "data.zarr")
