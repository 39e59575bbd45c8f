"""Segmentation models: the architecture by name (one factory), its losses and output
discretization, checkpoints and inference."""
from __future__ import annotations

from torch import nn

from .unet1x1 import UNet


def build_model(in_channels: int, out_channels: int, alpha: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """The IM authors' 1x1 U-Net of width `alpha` (the arguments a checkpoint records as `model_args`)."""
    return UNet(in_channels, out_channels, alpha=alpha, dropout=dropout)


def count_parameters(model: nn.Module, include_bn_statistics: bool = True) -> int:
    """Parameter count as Keras reports it: trainable weights plus BatchNorm running mean/var."""
    n = sum(p.numel() for p in model.parameters())
    if include_bn_statistics:
        n += sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return n
