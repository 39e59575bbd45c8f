"""Shared fixtures: a small demo data store, and job settings that take a second (the schema's
defaults with a few keys changed, typed as the jobs get them)."""
import dataclasses

import pytest

from im_core.config import defaults, resolve_dataset
from im_core.data.store import prepare
from im_core.settings import Augment, PseudoSettings, SelectionSettings, TrainSettings

# what the tests change of the schema's train defaults: a tiny model, a few steps
TRAIN_CHANGES = {"seed": 3, "model": {"alpha": 0.25, "dropout": 0.0}, "batch_size": 4, "lr": 0.003,
                 "weight_decay": 1e-4, "epochs": 1, "steps": 3, "eval_every": 3, "warmup_fraction": 0.0}


def train_params(**changes) -> dict:
    """A training job's params: the schema's defaults of `train` and `model`, the job's fields
    (supervised, labeled split), TRAIN_CHANGES, then `changes`."""
    params = {**defaults("train"), "model": defaults("model"), "trainer": "supervised", "labels": "labeled",
              "copies_seed": 0, "select_metric": "miou"}
    params.update(TRAIN_CHANGES)
    params.update(changes)
    return params


def train_settings(**changes) -> TrainSettings:
    return TrainSettings.from_params(train_params(**changes))


TRAIN_SETTINGS = train_settings()


def pseudo_settings(**changes) -> PseudoSettings:
    """A pseudo-label job's settings: the schema's pseudo_labels defaults (im) with `changes`."""
    section = {**defaults("pseudo_labels"), **changes}
    section.pop("ratios")
    if section["builder"] != "class_balanced":
        section.pop("agreement")
    return PseudoSettings.from_params(section)


def selection_settings(**changes) -> SelectionSettings:
    return SelectionSettings.from_params({**defaults("selection"), **changes})


def augment(**changes) -> Augment:
    """The schema's augment defaults with `changes`."""
    return Augment.from_params({**defaults("train")["augment"], **changes})


def replace(settings, **changes):
    return dataclasses.replace(settings, **changes)


def make_demo_store(path, n_images: int = 24):
    cfg = resolve_dataset("t", {"source": "demo", "n_images": n_images, "size": [16, 16], "seed": 0, "ignore_index": 255,
                                "labeled_fraction": 0.3, "val_fraction": 0.2, "test_fraction": 0.2})
    prepare(cfg, path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_demo_store(tmp_path_factory.mktemp("d") / "data.zarr")


class Interrupted(Exception):
    """What `interrupt_after_saves` raises in place of a kill."""


def interrupt_after_saves(monkeypatch, saves: int) -> None:
    """Make the training loop stop (as a kill would) right after its n-th resume save."""
    from im_core.runtime import resume
    original, count = resume.save, {"n": 0}

    def save_then_stop(path, state):
        original(path, state)
        count["n"] += 1
        if count["n"] == saves:
            raise Interrupted

    monkeypatch.setattr(resume, "save", save_then_stop)


TINY_COMPARISON_DATA = {"source": "demo", "n_images": 40, "size": [32, 32], "seed": 1,
                        "labeled_fraction": 0.2, "val_fraction": 0.2, "test_fraction": 0.2}


def tiny_comparison(methods: list[str], batch_size: int = 4, **comparison) -> dict:
    """A config for end-to-end tests: one tiny demo data set `tiny` and a one-generation
    comparison of `methods` (2 models a generation, IM of the top 2, 4 steps), with the
    comparison's other keys (seeds, reference, ...) from `comparison`."""
    return {"datasets": {"tiny": TINY_COMPARISON_DATA},
            "experiments": {"tiny": {"dataset": "tiny", "generations": 1, "model": {"alpha": 0.25},
                                     "train": {"batch_size": batch_size, "steps": 4, "eval_every": 2,
                                               "predict_batch_size": 32},
                                     "stage0": {"models": 2}, "students": {"models": 2},
                                     "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2}}},
            "comparisons": {"tiny": {"base": "tiny", "generations": 1, "methods": methods, **comparison}}}
