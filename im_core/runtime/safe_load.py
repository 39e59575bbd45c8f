"""Reading the torch files of this project without running code.

Every file the project loads with torch (checkpoints, resume states, done-records) is read with
`weights_only=True`: tensors and plain containers (dict, list, tuple, str, numbers, None) only,
which is all the project writes. A pickle that names any other Python object is refused before
anything of it runs, so a model file handed to a user, or a `.model.pt.resume` left in a shared
results folder, cannot run code when a job loads it.
"""
from __future__ import annotations

import os
import pickle

import torch

from ..errors import InputError


def read_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> dict:
    """The dict a torch file of this project holds, loaded with weights_only=True; InputError
    naming the file where it is not one (not a torch file, truncated, or holding Python objects
    that loading would have to run)."""
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such {what}") from e
    except pickle.UnpicklingError as e:
        # torch's message: a paragraph of advice, then what it refused ("... unsupported GLOBAL posix.system ...")
        parts = [p.strip() for p in str(e).split("\n\n") if p.strip()]
        reason = next((p for p in parts if "GLOBAL" in p or "global" in p.split(" ", 3)[-1][:80]), parts[-1] if parts else "")
        raise InputError(f"{path}: not loaded: this {what} holds Python objects other than tensors and plain "
                         f"containers, which a file of this project never does and which loading could run as "
                         f"code ({reason[:300]})") from e
    except Exception as e:  # noqa: BLE001 - any other failure of torch.load: not a (complete) torch file
        raise InputError(f"{path}: not a {what} of this project (torch cannot read it: "
                         f"{type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a {what} of this project (it holds a {type(data).__name__}, not a dict)")
    return data
