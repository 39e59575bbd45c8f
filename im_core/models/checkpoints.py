"""Model checkpoints: read without running code (runtime/safe_load.py), checked, and a trained
model rebuilt from the arguments its checkpoint records."""
from __future__ import annotations

import inspect
import os

import torch

from ..errors import InputError
from ..runtime.safe_load import read_torch_file
from . import build_model

# the keys every model checkpoint of this project holds (steps/train.py writes them)
CHECKPOINT_KEYS = ("state_dict", "model_args", "model_id", "task", "class_names")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A model checkpoint's dict, checked for the keys a model of this project has."""
    ckpt = read_torch_file(path, map_location, "model checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise InputError(f"{path}: not a model checkpoint of this project (it lacks {missing})")
    args = ckpt["model_args"]
    # the architecture's arguments; never `weights` (a rebuilt model gets its weights from the state)
    known = set(inspect.signature(build_model).parameters) - {"weights"}
    if not isinstance(args, dict) or set(args) - known:
        raise InputError(f"{path}: model_args {args!r} are not arguments of this project's model ({sorted(known)})")
    return ckpt


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    ckpt = read_checkpoint(path, device)
    model = build_model(**ckpt["model_args"]).to(device)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError) as e:
        raise InputError(f"{path}: its weights do not fit the model its model_args describe ({str(e)[:300]})") from e
    model.eval()
    return model, ckpt


def checkpoints_by_id(checkpoints: list[str]) -> dict[str, str]:
    """Model id -> checkpoint path."""
    return {read_checkpoint(p)["model_id"]: p for p in checkpoints}
