"""Settings that change with the generation: Noisy Student's growing width and input noise.

The ramps end at a fixed generation (`noisy_student.ramp_generations`), not at the experiment's
last one, so raising an experiment's `generations` leaves finished generations' settings alone.
"""
from __future__ import annotations

import dataclasses

from ..settings import Photometric, TrainSettings

NOISE_KEYS = ("blur", "noise", "contrast", "brightness")


def ramp(pair: list[float], generation: int, ramp_generations: int) -> float:
    """Linear from pair[0] at generation 1 to pair[1] at generation `ramp_generations`, then pair[1]."""
    if ramp_generations <= 1:
        return float(pair[1])
    t = min(1.0, max(0.0, (generation - 1) / (ramp_generations - 1)))
    return round(float(pair[0] + t * (pair[1] - pair[0])), 6)


def noisy_student_settings(train: TrainSettings, noisy: dict, generation: int, ramp_generations: int
                           ) -> TrainSettings:
    """A student's training settings with Noisy Student's width and noise for `generation`:
    model.alpha times the width ramp (the 1x1 U-Net's; other architectures have no width); `pseudo_augment`, the input noise of the pseudo-labeled
    pairs (as the IM authors' IM+: the labeled ground truth keeps the experiment's `augment`),
    each noise at least its ramp value."""
    noise = Photometric(**{key: max(getattr(train.augment, key), ramp(noisy[key], generation, ramp_generations))
                           for key in NOISE_KEYS})
    if train.model.pretrained_encoder:  # no width to grow (config/checks.py refuses a width ramp for them)
        return dataclasses.replace(train, pseudo_augment=noise)
    alpha = train.model.alpha * ramp(noisy["width"], generation, ramp_generations)
    return dataclasses.replace(train, model=dataclasses.replace(train.model, alpha=alpha), pseudo_augment=noise)
