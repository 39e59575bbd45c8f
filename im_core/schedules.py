"""Settings that change with the generation: Noisy Student's growing width and input noise."""
from __future__ import annotations

import copy

NOISE_KEYS = ("blur", "noise", "contrast", "brightness")


def ramp(pair: list[float], generation: int, last_generation: int) -> float:
    """Linear from pair[0] at generation 1 to pair[1] at the last generation."""
    if last_generation <= 1:
        return float(pair[1])
    t = min(1.0, max(0.0, (generation - 1) / (last_generation - 1)))
    return round(float(pair[0] + t * (pair[1] - pair[0])), 6)


def noisy_student_settings(train: dict, noisy: dict, generation: int, last_generation: int) -> dict:
    """A student's training settings with Noisy Student's width and noise for `generation`:
    model.alpha times the width ramp, and each input noise at least its ramp value."""
    out = copy.deepcopy(train)
    out["model"]["alpha"] = train["model"]["alpha"] * ramp(noisy["width"], generation, last_generation)
    for key in NOISE_KEYS:
        out["augment"][key] = max(train["augment"].get(key, 0), ramp(noisy[key], generation, last_generation))
    return out
