"""Batch normalization that stays fast on channels-last CPU tensors with few channels.

PyTorch's CPU kernels vectorize over the innermost dimension, which in channels-last memory is
the channel dimension. With fewer channels than a vector holds (the 8-channel full-resolution
layers of the half-width U-Net), its batch-norm backward ran about 5x slower than on contiguous
memory with two threads (16 x 8 x 128 x 128: 23 ms against 5 ms, forward + backward), which
made channels-last a loss for the whole model. Here the tensor's memory is viewed as rows of
whole pixels about 128 values wide, so every sum and elementwise pass runs over wide rows:
5.6 ms for the same layer. The slow kernel is a multi-threaded one: with one thread PyTorch's
was as fast or faster (16 x 8 x 32 x 32 in bf16: 0.48 ms against 0.72), so it stays in use
there, as in every other case (evaluation, contiguous memory, CUDA, 16 channels or more). The
result equals nn.BatchNorm2d's to rounding (tested).
"""
from __future__ import annotations

import torch
from torch import nn

FEW_CHANNELS = 16
_ROW_WIDTH = 128


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last N x C x H x W tensor's memory as a (pixels / k) x (k * C) view: k whole
    pixels per row, k * C about `_ROW_WIDTH` values."""
    channels = x.shape[1]
    pixels = x.numel() // channels
    k = max(1, _ROW_WIDTH // channels)
    while pixels % k:
        k //= 2
    return x.permute(0, 2, 3, 1).reshape(-1, k * channels)


def _per_channel(rows: torch.Tensor, channels: int) -> torch.Tensor:
    return rows.sum(0).view(-1, channels).sum(0)


class _RowBatchNorm(torch.autograd.Function):
    """Training-mode batch norm on `pixel_rows`; returns the output rows and the batch mean and
    biased variance per channel. The arithmetic is fp32 whatever the input's type, so bf16
    inputs (autocast) are rounded once, on output, as in PyTorch's mixed-type kernel."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, channels: int, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        k, count = rows.shape[1] // channels, rows.numel() // channels
        values = rows.float()
        mean = _per_channel(values, channels) / count
        centred = values - mean.repeat(k)
        var = _per_channel(torch.square(centred), channels) / count
        invstd = torch.rsqrt(var + eps)
        out = torch.addcmul(bias.float().repeat(k), centred, (weight.float() * invstd).repeat(k))
        ctx.save_for_backward(centred, invstd, weight)
        ctx.channels = channels
        return out.to(rows.dtype), mean, var

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_mean, _grad_var):
        centred, invstd, weight = ctx.saved_tensors
        channels = ctx.channels
        k, count = centred.shape[1] // channels, centred.numel() // channels
        grad = grad_out.float().contiguous()
        grad_bias = _per_channel(grad, channels)
        grad_dot_centred = _per_channel(grad * centred, channels)
        scale = weight.float() * invstd
        # dx = scale * (dy - mean(dy) - centred * invstd^2 * mean(dy * centred)), per channel
        slope = scale * invstd * invstd * grad_dot_centred / count
        dx = torch.addcmul((-scale * grad_bias / count).repeat(k), grad, scale.repeat(k))
        dx.addcmul_(centred, slope.repeat(k), value=-1)
        grad_weight = (grad_dot_centred * invstd).to(weight.dtype)
        return dx.to(grad_out.dtype), None, grad_weight, grad_bias.to(weight.dtype), None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters, buffers and state dict) with the row kernel above for
    training on channels-last CPU tensors of fewer than `FEW_CHANNELS` channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._use_rows(x):
            return super().forward(x)
        n, c, h, w = x.shape
        rows, mean, var = _RowBatchNorm.apply(pixel_rows(x), c, self.weight, self.bias, self.eps)
        with torch.no_grad():
            count = x.numel() // c
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / max(count - 1, 1), self.momentum)
            self.num_batches_tracked.add_(1)
        return rows.view(n, h, w, c).permute(0, 3, 1, 2)

    def _use_rows(self, x: torch.Tensor) -> bool:
        return (self.training and self.track_running_stats and self.affine and self.momentum is not None
                and x.device.type == "cpu" and torch.get_num_threads() > 1
                and x.dim() == 4 and 1 < x.shape[1] < FEW_CHANNELS
                and x.numel() > x.shape[1] and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last))
