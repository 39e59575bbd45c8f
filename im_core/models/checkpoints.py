"""Model checkpoints: a trained model rebuilt from the arguments its checkpoint records."""
from __future__ import annotations

import os

import torch

from . import build_model


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = build_model(**ckpt["model_args"]).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def checkpoints_by_id(checkpoints: list[str]) -> dict[str, str]:
    """Model id -> checkpoint path."""
    return {torch.load(p, map_location="cpu", weights_only=False)["model_id"]: p for p in checkpoints}
