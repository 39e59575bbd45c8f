"""Typed settings of the jobs, resolved from the validated config in one place (config/resolve.py).

A job gets its settings as one JSON object: `to_params()` is what Snakemake records as the job's
params (a changed setting reruns exactly the jobs it reaches) and what the job's command line
carries; the job reads it back with `from_params()`, which refuses a missing or unknown key by
name. The JSON schema (config.schema.yaml) documents every key and is the one source of
defaults: these classes hold none of their own, and fields that only some jobs have are None
where a job has none (and then left out of the params).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InputError


def _read(cls, params: Mapping[str, Any], where: str, nested: Mapping[str, Any] | None = None):
    """An instance of dataclass `cls` from `params`: every field without a default must be there,
    fields with a default (None) may be missing, and no other key may be; `nested` maps a field to
    the function that reads its value (another dataclass, a tuple)."""
    if not isinstance(params, Mapping):
        raise InputError(f"{where}: expected an object of settings, got {type(params).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in params]
    unknown = sorted(set(params) - set(fields))
    if missing or unknown:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
        raise InputError(f"{where}: {'; '.join(parts)} (settings are resolved from the config by im_core.config; "
                         "a hand-written --settings object needs every key the schema gives a default)")
    values = {}
    for name, value in params.items():
        read = (nested or {}).get(name)
        values[name] = read(value, f"{where}.{name}") if read is not None and value is not None else value
    return cls(**values)


def _params(obj) -> dict:
    """A dataclass as its params: nested ones as objects, tuples as lists, optional fields (those
    with a default) left out where they are None."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.default is None:
            continue
        if dataclasses.is_dataclass(value):
            value = value.to_params()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


class Params:
    """to_params / from_params for a settings dataclass (`NESTED`: field -> reader)."""
    NESTED: dict = {}

    def to_params(self) -> dict:
        return _params(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], where: str = "--settings"):
        return _read(cls, params, where, cls.NESTED)


@dataclass(frozen=True)
class ModelSettings(Params):
    """The model (schema: $defs.model): the 1x1 U-Net's width multiplier and dropout, or an
    architecture on a pretrained encoder (name, encoder, its starting weights, the decoder's
    learning-rate multiplier, the steps its encoder is frozen for, gradient checkpointing). The
    1x1 U-Net's params hold alpha and dropout only, the others' everything but those
    (config/resolve.py; gradient_checkpointing only where it is on), so the params of the default
    model are what they were before there were others. Gradient checkpointing is applied by the
    training set-up (steps/train.py), not by build_model: it is not in model_args, and a
    checkpoint rebuilds the same way with or without it."""
    alpha: float | None = None
    dropout: float | None = None
    name: str | None = None                  # None: the 1x1 U-Net (models/registry.DEFAULT)
    encoder: str | None = None
    weights: str | None = None               # imagenet, none, or a path
    decoder_lr_multiplier: float | None = None
    freeze_encoder_steps: int | None = None  # 0 never, N the first N steps, -1 always
    gradient_checkpointing: bool | None = None  # recompute the encoder in backward; None (left out): off

    @property
    def architecture(self) -> str:
        return self.name or "unet1x1"

    @property
    def pretrained_encoder(self) -> bool:
        return self.architecture != "unet1x1"

    def model_args(self, in_channels: int, out_channels: int) -> dict:
        """What build_model takes and a checkpoint records (never the weights)."""
        if not self.pretrained_encoder:
            return dict(in_channels=in_channels, out_channels=out_channels, alpha=self.alpha, dropout=self.dropout)
        return dict(in_channels=in_channels, out_channels=out_channels, name=self.name, encoder=self.encoder)

    def frozen_at(self, step: int) -> bool:
        """Whether the encoder is frozen at training step `step` (1-based)."""
        steps = self.freeze_encoder_steps or 0
        return steps < 0 or step <= steps


@dataclass(frozen=True)
class Photometric(Params):
    """Photometric noise of a batch: blur sigma, uniform pixel noise, contrast and brightness
    ranges (0 = off). Noisy Student's noise of the pseudo-labeled pairs is one of these."""
    blur: float
    noise: float
    contrast: float
    brightness: float

    @property
    def active(self) -> bool:
        return any(v > 0 for v in (self.blur, self.noise, self.contrast, self.brightness))


def _pair(value, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(f"{where}: expected two numbers, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Augment(Photometric):
    """Flips and scale-crops, then photometric noise (schema: $defs.train.augment)."""
    hflip: bool
    vflip: bool
    scale: tuple[float, float]
    NESTED = {"scale": _pair}

    @property
    def scale_crops(self) -> bool:
        lo, hi = self.scale
        return lo < 1.0 or hi != 1.0

    def with_noise(self, noise: Photometric) -> "Augment":
        return dataclasses.replace(self, blur=noise.blur, noise=noise.noise, contrast=noise.contrast,
                                   brightness=noise.brightness)


@dataclass(frozen=True)
class FeatureConsistency(Params):
    """GIST/RIST's mean-teacher feature consistency: its weight, the EMA decay, the dropout."""
    feature_consistency: float
    ema_decay: float
    feature_dropout: float


@dataclass(frozen=True)
class NumericRequest:
    """What the settings ask of the numerical path (runtime.numeric_path resolves `auto`)."""
    precision: str = "auto"
    channels_last: str | bool = "auto"
    compile: bool = False
    deterministic: bool = False
    cuda_graphs: str | bool = "auto"

    @classmethod
    def of_checkpoint(cls, params: Mapping[str, Any] | None) -> "NumericRequest":
        """The request recorded in a checkpoint's settings; a key an older checkpoint lacks keeps
        the rule's default."""
        params = params or {}
        return cls(**{f.name: params[f.name] for f in dataclasses.fields(cls) if f.name in params})


@dataclass(frozen=True)
class TrainSettings(Params):
    """One training job: the experiment's `train` section in force for its generation, the
    model, its seed and trainer, where it starts and what it trains on (resolve.train_settings)."""
    # the train section (schema: $defs.train)
    batch_size: int
    lr: float
    weight_decay: float
    epochs: int
    steps: int | None
    eval_every: int | None
    warmup_fraction: float
    optimizer: str
    momentum: float
    schedule: str
    poly_power: float
    predict_batch_size: int
    precision: str
    channels_last: str | bool
    compile: bool
    cuda_graphs: str | bool
    deterministic: bool
    augment: Augment
    labeled_copies: int
    # the model and the job
    model: ModelSettings
    seed: int
    trainer: str
    labels: str                      # "labeled" (LDT) or "all" (FDT)
    copies_seed: int                 # the experiment's seed: ALDT's copies are the same for every model
    select_metric: str               # the validation metric that chooses the checkpoint
    dev_images: int | str | None = None
    dev_seed: int | None = None
    patience: int | None = None      # early stopping: validations without a new best before training ends
    # where the weights start and what the batches hold (generations >= 1; methods/stages.py)
    init: str | None = None          # "parent": continue the parent's weights
    parent: str | None = None        # rank:<r>, index:<i> or best_so_far
    labeled_share: float | None = None
    # students that differ beyond their seed: each trains on its own bootstrap resample of the
    # pseudo-labeled pairs (drawn from its seed)
    bootstrap: bool | None = None
    # loss terms that compose with any trainer (students)
    dynamic_gamma: float | None = None
    feature_consistency: FeatureConsistency | None = None
    pseudo_augment: Photometric | None = None   # Noisy Student's noise of the pseudo-labeled pairs
    # the trainer's own settings by key (its TRAINERS row names them, the trainer module reads
    # them), flat in the params beside the others
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    NESTED = {"augment": Augment.from_params, "model": ModelSettings.from_params,
              "feature_consistency": FeatureConsistency.from_params, "pseudo_augment": Photometric.from_params}

    def to_params(self) -> dict:
        params = _params(self)
        return {k: v for k, v in params.items() if k != "options"} | dict(self.options)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], where: str = "--settings") -> "TrainSettings":
        """Keys that are no field of this class are the trainer's own settings (`options`); the
        trainer checks them (steps/train.py: its TRAINERS row names them)."""
        if not isinstance(params, Mapping):
            raise InputError(f"{where}: expected an object of settings, got {type(params).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        options = {k: v for k, v in params.items() if k not in names}
        rest = {k: v for k, v in params.items() if k in names}
        return dataclasses.replace(_read(cls, rest, where, cls.NESTED), options=options)

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps or self.epochs * steps_per_epoch

    def validate_every(self, steps_per_epoch: int) -> int:
        return self.eval_every or steps_per_epoch

    @property
    def numeric(self) -> NumericRequest:
        return NumericRequest(self.precision, self.channels_last, self.compile, self.deterministic, self.cuda_graphs)

    @property
    def continues_parent(self) -> bool:
        return self.init == "parent"


@dataclass(frozen=True)
class PseudoSettings(Params):
    """One pseudo-label job: the experiment's `pseudo_labels` section in force for its generation,
    resolved by its builder (class_balanced: this round's `ratio` in place of `ratios`)."""
    builder: str
    teachers: int
    block_input: bool
    block_output: bool
    label_mode: str
    erode: int
    dilate: int
    filter_class_disagreement: bool
    label_erase: float
    temperature: float
    agreement: bool | None = None
    ratio: float | None = None
    agree: int | None = None          # im: k of n teachers (None: all n)
    per_label: bool | None = None     # im, multi-label: each label's own disagreement (None: the union)
    teacher_generations: int | None = None  # im: teachers from up to this many generations (None: g-1 only)
    soft: bool | None = None          # im: weight each pixel by the teachers' mean confidence (None: hard mask)


@dataclass(frozen=True)
class SelectionSettings(Params):
    """How a generation's models are ranked and how many are kept (schema: $defs.selection)."""
    metric: str
    top_k: int
    dev_images: int | str | None
