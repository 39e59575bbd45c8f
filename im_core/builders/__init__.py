"""Pseudo-label builders by name.

A builder is a class in a module of this package (base.py says what it declares: which teachers
it reads, whether it runs their checkpoints again or reads their stored predictions and
confidence, whether it masks the input, whether one store serves each student) and an entry in
`BUILDERS`, which the config checks, the stage plans, the rules' inputs, the pseudo-label job,
training and the metrics ask. Builder modules import torch only where they run a model, so
Snakemake can read this table when it starts. Adding a builder = its module + its entry (+ its
settings in the schema's `pseudo_labels` block and in settings.PseudoSettings, if it has any).
"""
from __future__ import annotations

from ..errors import InputError
from .base import Builder, NoPseudoLabels
from .class_balanced import ClassBalanced
from .ensembles import InputEnsemble, ModelEnsemble
from .im import InconsistencyMask
from .one_model import BestTeacher, Parent

BUILDERS: dict[str, Builder] = {
    "im": InconsistencyMask(),
    "model_ensemble": ModelEnsemble(),
    "input_ensemble": InputEnsemble(),
    "best_teacher": BestTeacher(),
    "parent": Parent(),
    "class_balanced": ClassBalanced(),
    "none": NoPseudoLabels(),
}


def builder(name: str, where: str = "pseudo_labels.builder") -> Builder:
    if name not in BUILDERS:
        raise InputError(f"{where}: {name!r} is not a pseudo-label builder; builders: {list(BUILDERS)}")
    return BUILDERS[name]
