"""Batch normalization that stays fast on channels-last CPU tensors with few channels.

PyTorch's CPU kernels vectorize over the innermost dimension, which in channels-last memory is
the channel dimension. With fewer channels than a vector holds (the 8-channel full-resolution
layers of the half-width U-Net), its batch-norm backward ran about 5x slower than on contiguous
memory with two threads (16 x 8 x 128 x 128: 23 ms against 5 ms, forward + backward), which
made channels-last a loss for the whole model. Here the tensor's memory is viewed as rows of
whole pixels about 128 values wide, and PyTorch's own batch-norm kernels run on those rows,
where they vectorize well: statistics per column merged per channel, normalization, and the
gradient's sums. Each pass reads bf16 input as bf16 (no fp32 copy of the activation is kept),
which is what made this version faster inside the model than the first one (elementwise torch
ops in fp32): the half-width U-Net's training step at 128 px in bf16 went from 152 to 176
images/s with two threads. The slow kernel is a multi-threaded one: with one thread PyTorch's
stays faster (32 px: 870 against 690 images/s for the whole step), so it stays in use there,
as in every other case (evaluation, contiguous memory, CUDA, 16 channels or more). The result
equals nn.BatchNorm2d's to fp32 rounding, except a bf16 input gradient, rounded three times
(tested).
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


def _by_channel(columns: torch.Tensor, channels: int) -> torch.Tensor:
    """A per-column vector of `pixel_rows` (k * C values) as k x C: one row per pixel of a row."""
    return columns.view(-1, channels)


class _RowBatchNorm(torch.autograd.Function):
    """Training-mode batch norm on `pixel_rows`; returns the output rows and the batch mean and
    biased variance per channel. Every pass is one of PyTorch's own batch-norm kernels on the
    rows, whose k * C columns it vectorizes over: statistics per column, merged per channel
    (exactly: the columns of a channel hold equal counts); normalization with those statistics;
    in backward the two sums per column, then the input gradient as two affine passes. They
    compute in fp32 whatever the input's type: the output, the statistics and the parameter
    gradients of a bf16 input (autocast) are rounded once, as in PyTorch's mixed-type kernel; the
    input gradient is the sum of two bf16-rounded terms (rounded three times: its error is about
    1.5x that of one rounding, tested)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, channels: int, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        width = rows.shape[1]
        k = width // channels
        ones, zeros = rows.new_ones(width, dtype=torch.float32), rows.new_zeros(width, dtype=torch.float32)
        _, column_mean, column_invstd = torch.native_batch_norm(rows, ones, zeros, None, None, True, 0.0, 0.0)
        # with eps 0, PyTorch reports a zero variance (a dead channel) as invstd 0
        column_var = torch.where(column_invstd > 0, column_invstd.pow(-2), 0.0)
        column_mean, column_var = _by_channel(column_mean, channels), _by_channel(column_var, channels)
        mean = column_mean.mean(0)
        var = column_var.mean(0) + torch.square(column_mean - mean).mean(0)
        out = torch.batch_norm(rows, weight.float().repeat(k), bias.float().repeat(k), mean.repeat(k), var.repeat(k),
                               False, 0.0, eps, False)
        ctx.save_for_backward(rows, mean, torch.rsqrt(var + eps), weight)
        ctx.channels = channels
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_mean, _grad_var):
        rows, mean, invstd, weight = ctx.saved_tensors
        channels, width = ctx.channels, rows.shape[1]
        k, count = width // channels, rows.numel() // channels
        grad = grad_out.contiguous()
        ones = rows.new_ones(width, dtype=torch.float32)
        # per column: sum(dy * (x - mean)) and sum(dy), in fp32
        _, column_dot, column_sum = torch.ops.aten.native_batch_norm_backward(
            grad, rows, ones, None, None, mean.repeat(k), ones, True, 0.0, [False, True, True])
        grad_dot_centred, grad_bias = _by_channel(column_dot, channels).sum(0), _by_channel(column_sum, channels).sum(0)
        scale = weight.float() * invstd
        # dx = scale * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) per channel,
        # as slope * (x - mean) + shift plus scale * dy: two passes of the inference batch-norm
        # kernel, which reads bf16 and computes in fp32 (a mixed-type elementwise operation on the
        # CPU would first copy each bf16 operand to fp32; those copies were a third of this backward)
        slope = -scale * invstd * invstd * grad_dot_centred / count
        shift = -scale * grad_bias / count
        zeros = torch.zeros_like(ones)
        dx = torch.batch_norm(rows, slope.repeat(k), shift.repeat(k), mean.repeat(k), ones, False, 0.0, 0.0, False)
        dx += torch.batch_norm(grad, scale.repeat(k), zeros, zeros, ones, False, 0.0, 0.0, False)
        return dx, None, (grad_dot_centred * invstd).to(weight.dtype), grad_bias.to(weight.dtype), None


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
