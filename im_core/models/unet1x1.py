"""The IM authors' small U-Net: 1x1 convolutions around each 3x3, additive skips, width alpha."""
from __future__ import annotations

import torch
from torch import nn

from .batchnorm import BatchNorm2d


def _conv(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.ReLU(inplace=True))


class EncoderBlock(nn.Module):
    """3x3 conv -> 1x1 conv -> BN; returns the skip tensor and its 2x max-pooled version."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            _conv(in_ch, out_ch, 3), _conv(out_ch, out_ch, 1), nn.Dropout2d(dropout), BatchNorm2d(out_ch)
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.body(x)
        return skip, self.pool(skip)


class DecoderBlock(nn.Module):
    """Upsample x2, add the skip, 1x1 conv + BN, 3x3 conv, 1x1 conv, BN."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.body = nn.Sequential(
            _conv(in_ch, in_ch, 1), BatchNorm2d(in_ch),
            _conv(in_ch, in_ch, 3), _conv(in_ch, out_ch, 1), nn.Dropout2d(dropout), BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.body(self.up(x) + skip)


class UNet(nn.Module):
    """The "1x1 U-Net" of the Inconsistency Masks paper.

    Input is a uint8-range float image (0..255); it is divided by 255 inside, as the authors do.
    Spatial size must be divisible by 16.
    """

    def __init__(self, in_channels: int, out_channels: int, alpha: float = 1.0, dropout: float = 0.0):
        super().__init__()
        w = [int(f * alpha) for f in (16, 32, 64, 128, 256)]
        self.stem = nn.Sequential(_conv(in_channels, w[0], 1), BatchNorm2d(w[0]))
        self.enc = nn.ModuleList(
            [EncoderBlock(w[0], w[0], dropout)] + [EncoderBlock(w[i - 1], w[i], dropout) for i in range(1, 4)]
        )
        self.bottleneck = nn.Sequential(
            _conv(w[3], w[4], 3), _conv(w[4], w[3], 1), nn.Dropout2d(dropout), BatchNorm2d(w[3])
        )
        self.dec = nn.ModuleList([DecoderBlock(w[i], w[i - 1] if i else w[0], dropout) for i in (3, 2, 1, 0)])
        self.head = nn.Conv2d(w[0], out_channels, 1)
        _init_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the bottleneck features (N x C x H/16 x W/16), the deepest ones before
        the decoder (what GIST/RIST's consistency loss compares)."""
        features = self.encode(x)
        return self.decode(features), features[0]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features: the bottleneck first, then the skips from the deepest to the
        shallowest (the order the decoder takes them in)."""
        x = self.stem(x / 255.0)
        skips = []
        for block in self.enc:
            skip, x = block(x)
            skips.append(skip)
        return [self.bottleneck(x), *reversed(skips)]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        return run_decoder(self.dec, self.head, features)


def run_decoder(blocks: nn.ModuleList, head: nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    """Logits from encoder features (bottleneck, then skips deepest first) through decoder blocks and a head."""
    x = features[0]
    for block, skip in zip(blocks, features[1:]):
        x = block(x, skip)
    return head(x)


class Decoder(nn.Module):
    """A decoder of the U-Net's structure on its own (CCT's auxiliary decoders)."""

    def __init__(self, out_channels: int, alpha: float = 1.0, dropout: float = 0.0):
        super().__init__()
        w = [int(f * alpha) for f in (16, 32, 64, 128, 256)]
        self.dec = nn.ModuleList([DecoderBlock(w[i], w[i - 1] if i else w[0], dropout) for i in (3, 2, 1, 0)])
        self.head = nn.Conv2d(w[0], out_channels, 1)
        _init_convolutions(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return run_decoder(self.dec, self.head, features)


def _init_convolutions(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
