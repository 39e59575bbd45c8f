"""Trainers by name: how a model's loss is made from its batches.

A trainer is a module of this package with a `Trainer` class (trainers/base.py: what it draws
besides the labeled batch, its loss terms, its state for resume) and a row in `TRAINERS` saying
where it may run and what it needs, which the config checks, the rules' inputs and the training
job ask. The table holds no code, so reading it (Snakemake does, at the start of every run)
imports no torch. Adding a trainer = its module + its row (+ its settings in the schema's
`trainer` block, named in the row's `settings`).

Loss terms that compose with any trainer (mean_teacher.py: GIST/RIST's feature consistency;
dynamic.py: DST's dynamic loss) are settings of the students, not trainers.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError


@dataclass(frozen=True)
class TrainerSpec:
    module: str                     # the module of this package that holds its `Trainer`
    stage0: bool = True             # may train gen0 (from scratch, on the labeled split)
    students: bool = True           # may train the students of generations >= 1
    pseudo_labels: bool = True      # its students learn from pseudo-labels (False: builder 'none' goes with it)
    continues_parent: bool = False  # always starts from the previous generation's best model
    searchable: bool = False        # GIST/RIST's searches (students.search) continue their parents with it
    one_forward: bool = False       # calls the model once per batch, as a CUDA graph replay needs
    draws_unlabeled: bool = False   # draws an unlabeled batch of the batch size every step (its budget: 2 x the batch)
    settings: tuple[str, ...] = ()  # keys of the trainer's schema block that are its own settings
    problems: Callable[[dict], list[str]] | None = None  # checks of its own settings (the config's trainer block)
    summary: str = ""


def _cct_problems(section: dict) -> list[str]:
    if not any(section["cct"]["decoders"].values()):
        return ["cct.decoders: no auxiliary decoder; give at least one perturbation a count"]
    return []


def _continuous_problems(section: dict) -> list[str]:
    errors = []
    if section.get("feature_consistency"):
        errors.append(f"feature_consistency: the mean-teacher feature term does not compose with "
                      f"trainer {section['trainer']!r} (it runs the labeled batch with its unlabeled one); set it to 0")
    strong = section["continuous"]["strong"]
    for key in ("blur_sigma", "cutmix_area", "cutmix_ratio"):
        low, high = strong[key]
        if low > high:
            errors.append(f"continuous.strong.{key}: [{low}, {high}] is no range (low > high)")
    return errors


CONTINUOUS = dict(settings=("continuous",), problems=_continuous_problems, draws_unlabeled=True)

TRAINERS: dict[str, TrainerSpec] = {
    "supervised": TrainerSpec("supervised", searchable=True, one_forward=True,
                              summary="cross-entropy on the labeled images (and the generation's pseudo-labels)"),
    "consistency": TrainerSpec("consistency", stage0=False, pseudo_labels=False, continues_parent=True,
                               settings=("consistency_weight",), draws_unlabeled=True,
                               summary="the previous generation's best fine-tuned: cross-entropy plus an MSE between "
                                       "its probabilities on two noised views of unlabeled images"),
    "cct": TrainerSpec("cct", students=False, settings=("cct",), problems=_cct_problems, draws_unlabeled=True,
                       summary="cross-consistency training: auxiliary decoders on perturbed encoder features of "
                               "unlabeled images agree with the main decoder (Ouali et al., CVPR 2020)"),
    "fixmatch": TrainerSpec("fixmatch", **CONTINUOUS,
                            summary="FixMatch: the strong view of each unlabeled image learns the weak view's "
                                    "confident prediction (Sohn et al., NeurIPS 2020)"),
    "unimatch": TrainerSpec("unimatch", **CONTINUOUS,
                            summary="UniMatch: FixMatch with two strong views and a feature-perturbation stream "
                                    "(Yang et al., CVPR 2023)"),
    "unimatch_v2": TrainerSpec("unimatch_v2", **CONTINUOUS,
                               summary="UniMatch V2: pseudo-labels from an EMA teacher, complementary channel "
                                       "dropout on two strong views (Yang et al., TPAMI 2025)"),
}
# the trainers that learn from the unlabeled images in every step (their `continuous` block)
CONTINUOUS_TRAINERS = ("fixmatch", "unimatch", "unimatch_v2")


def trainer_spec(name: str, where: str = "trainer") -> TrainerSpec:
    if name not in TRAINERS:
        raise InputError(f"{where}: {name!r} is not a trainer; trainers: {list(TRAINERS)}")
    return TRAINERS[name]


def trainer_problems(name: str, section: dict) -> list[str]:
    """What is wrong with the trainer block `section` for trainer `name`'s own settings."""
    spec = trainer_spec(name)
    return spec.problems(section) if spec.problems and section.get("trainer") == name else []


def load_trainer(name: str):
    """The `Trainer` class of trainer `name` (imports its module, and torch)."""
    return importlib.import_module(f"{__name__}.{trainer_spec(name).module}").Trainer
