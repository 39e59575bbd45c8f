"""Segmentation models: the architecture by name (one factory, `build_model`; the table of
architectures and encoders in registry.py), its losses and output discretization, checkpoints
and inference. This module imports no torch at the top: the config checks read the registry."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import ARCHITECTURES, DEFAULT

if TYPE_CHECKING:
    from torch import nn


def build_model(in_channels: int, out_channels: int, alpha: float = 1.0, dropout: float = 0.0,
                name: str = DEFAULT, encoder: str | None = None, weights: str = "none") -> "nn.Module":
    """A segmentation model: the IM authors' 1x1 U-Net of width `alpha` (the default), or
    architecture `name` on `encoder` (models/registry.py) with the encoder's starting `weights`
    (`none`, `imagenet` or a path; models/weights.py). A checkpoint records the other arguments
    as `model_args` (the 1x1 U-Net's: in_channels, out_channels, alpha, dropout; the others':
    in_channels, out_channels, name, encoder), so it rebuilds anywhere without any download."""
    if name == DEFAULT:
        from .unet1x1 import UNet
        return UNet(in_channels, out_channels, alpha=alpha, dropout=dropout)
    if name not in ARCHITECTURES:
        from ..errors import InputError
        raise InputError(f"model.name: {name!r} is not an architecture; one of {list(ARCHITECTURES)}")
    from .smp_models import build
    return build(name, encoder, in_channels, out_channels, weights)


def auxiliary_decoder(model_args: dict) -> "nn.Module":
    """A fresh decoder of the structure of the model `model_args` describe: logits from its
    encoder's features (CCT's auxiliary decoders)."""
    if model_args.get("name", DEFAULT) == DEFAULT:
        from .unet1x1 import Decoder
        return Decoder(model_args["out_channels"], model_args.get("alpha", 1.0))
    return build_model(**model_args).decoder


def count_parameters(model: "nn.Module", include_bn_statistics: bool = True) -> int:
    """Parameter count as Keras reports it: trainable weights plus BatchNorm running mean/var."""
    n = sum(p.numel() for p in model.parameters())
    if include_bn_statistics:
        n += sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return n
