"""Where a model's weights start: a fresh model, or a parent of an earlier generation to continue
(the consistency trainer's best teacher, `init: parent`; methods/stages.py names the parent)."""
from __future__ import annotations

import logging
import re

import torch

from ..settings import TrainSettings
from ..errors import InputError
from ..io import read_json
from ..methods.stages import parent_id
from ..models import build_model
from ..models.registry import DEFAULT
from ..models.checkpoints import checkpoints_by_id, load_checkpoint
from ..models.losses import output_channels
from ..runtime.numeric_path import NumericPath
from . import trainer_spec

log = logging.getLogger("im_core.train")


def initial_model(settings: TrainSettings, task: str, num_classes: int, extra_class: bool, path: NumericPath,
                  init_selection: str | None, init_checkpoints: list[str] | None, model_id: str = "",
                  in_channels: int = 3, describe: str = "") -> tuple[torch.nn.Module, dict, dict | None]:
    """A fresh model (the settings' architecture; a pretrained encoder with its starting weights,
    models/weights.py), or a parent model of the previous generation to continue from (a trainer
    that always continues its teacher, and `init: parent`); with the model's arguments and its
    parent (model id, checkpoint and path; None for a fresh model)."""
    model_args = settings.model.model_args(in_channels, output_channels(task, num_classes, extra_class))
    always = trainer_spec(settings.trainer).continues_parent
    if not always and not settings.continues_parent:
        weights = settings.model.weights if settings.model.pretrained_encoder else "none"
        return path.model(build_model(**model_args, weights=weights)), model_args, None
    if not (init_selection and init_checkpoints):
        what = (f"trainer {settings.trainer!r} fine-tunes the previous generation's best model" if always
                else f"model {model_id} continues from a parent of the previous generation (init: parent)")
        raise InputError(f"{what}: pass --init-selection and --init-checkpoints")
    init_path = parent_checkpoint(init_selection, init_checkpoints, settings.parent or "rank:0", model_id)
    model, ckpt = load_checkpoint(init_path, torch.device(path.device))
    if ckpt["model_args"]["in_channels"] != in_channels:
        raise InputError(f"{init_path}: the parent reads {ckpt['model_args']['in_channels']}-channel images, this "
                         f"data store holds {in_channels}-channel images")
    theirs = (ckpt["model_args"].get("name", DEFAULT), ckpt["model_args"].get("encoder"))
    if theirs != (settings.model.architecture, settings.model.encoder):
        raise InputError(f"{init_path}: the parent is a {theirs[0]}{' on ' + theirs[1] if theirs[1] else ''}, this "
                         f"model's settings ask for a {settings.model.architecture}"
                         f"{' on ' + settings.model.encoder if settings.model.encoder else ''}; a model continues its "
                         "parent's architecture: give both generations the same model")
    if ckpt["model_args"]["out_channels"] != model_args["out_channels"]:
        raise InputError(f"{init_path}: the parent has {ckpt['model_args']['out_channels']} output channels, this "
                         f"model needs {model_args['out_channels']} (pseudo_labels.label_mode im_class adds one); "
                         "a model can continue only from a parent with the same outputs")
    log.info("%s %s (%s, val mIoU %.4f)%s", "fine-tuning" if always else "continuing from", init_path,
             ckpt["model_id"], ckpt["best_val_miou"], describe)
    parent = {"model_id": ckpt["model_id"], "checkpoint": str(init_path), "path": ckpt.get("lineage", {}).get("path", "")}
    return path.model(model.train()), ckpt["model_args"], parent


def parent_checkpoint(selection: str, checkpoints: list[str], parent: str, model_id: str) -> str:
    """The parent's checkpoint: `rank:<r>` the selection's r-th best (0 = best), `index:<i>` the
    previous generation's model m<i> (the same path), `best_so_far` the best model of every
    generation up to the previous one (the checkpoints must include it); the older names `best` and `same_index`
    (this model's own index) mean rank:0 and index:<this model's index>."""
    if parent in ("best", "same_index"):
        index = re.search(r"_m(\d+)$", model_id)
        if parent == "same_index" and index is None:
            raise InputError(f"model {model_id!r}: parent 'same_index' needs a model id ending in _m<i>")
        parent = "rank:0" if parent == "best" else f"index:{index.group(1)}"
    generation = re.match(r"gen(\d+)_", model_id)
    by_id = checkpoints_by_id(checkpoints)
    try:
        wanted = parent_id(parent, read_json(selection), int(generation.group(1)) if generation else 1)
    except ValueError as e:
        raise InputError(f"model {model_id}: {e} ({selection})") from e
    if parent.startswith("index:"):  # by index: the suffix, whatever the generation's id prefix
        wanted = next((m for m in by_id if m.endswith("_m" + parent.split(":")[1])), wanted)
    if wanted not in by_id:
        raise InputError(f"model {model_id}: its parent {wanted} ({parent}) is not among the checkpoints {checkpoints}")
    return by_id[wanted]
