"""The channels-last batch norm for few channels against PyTorch's own."""
import pytest
import torch

from im_core.models.batchnorm import BatchNorm2d, pixel_rows


@pytest.fixture(autouse=True)
def two_threads():
    """The row kernel is used with several threads only."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _pair(channels: int, seed: int = 0) -> tuple[torch.nn.BatchNorm2d, BatchNorm2d]:
    torch.manual_seed(seed)
    reference = torch.nn.BatchNorm2d(channels)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2.0)
        reference.bias.uniform_(-1.0, 1.0)
    ours = BatchNorm2d(channels)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.mark.parametrize("shape", [(4, 8, 32, 32), (3, 3, 5, 7), (2, 15, 6, 6), (1, 2, 1, 3)])
def test_matches_pytorch_in_training(shape):
    reference, ours = _pair(shape[1])
    torch.manual_seed(1)
    x = torch.randn(shape) * 3 + 2
    grad = torch.randn(shape)
    x_ref = x.clone().requires_grad_()
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    for _ in range(2):   # twice, so the running statistics are compared after two updates
        out_ref, out = reference(x_ref), ours(x_cl)
        (out_ref * grad).sum().backward()
        (out * grad).sum().backward()
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_cl.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    assert int(ours.num_batches_tracked) == 2


def test_bf16_inputs_are_computed_in_fp32():
    reference, ours = _pair(8)
    x = (torch.randn(4, 8, 16, 16) * 2 + 1).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x_ref = x.float().requires_grad_()          # the fp32 truth on the same (bf16) values
    x_bf16 = x.clone().requires_grad_()
    out_ref, out = reference(x_ref), ours(x_bf16)
    out_ref.backward(grad.float())
    out.backward(grad)
    assert out.dtype == torch.bfloat16 and x_bf16.grad.dtype == torch.bfloat16
    # one rounding to bf16 (8 significant bits) of the fp32 result, statistics and parameter grads in fp32
    torch.testing.assert_close(out.float(), out_ref, rtol=2**-8, atol=1e-6)
    # the input gradient: two bf16-rounded terms summed in bf16; its error is 1.43-1.52x that of
    # the fp32 truth rounded once (six seeds), and within two bf16 steps of the largest gradient
    error = (x_bf16.grad.float() - x_ref.grad).norm()
    rounded_once = (x_ref.grad.bfloat16().float() - x_ref.grad).norm()
    assert 0 < error <= 1.75 * rounded_once
    torch.testing.assert_close(x_bf16.grad.float(), x_ref.grad, rtol=0, atol=2**-7 * x_ref.grad.abs().max().item())
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)


def test_other_cases_are_pytorchs_kernel():
    reference, ours = _pair(8)
    x = torch.randn(2, 8, 8, 8)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert ours._use_rows(x_cl) and not ours._use_rows(x)   # contiguous input
    torch.set_num_threads(1)
    assert not ours._use_rows(x_cl)                          # one thread
    torch.set_num_threads(2)
    torch.testing.assert_close(ours(x), reference(x))
    ours.eval(), reference.eval()
    assert not ours._use_rows(x_cl)                          # evaluation
    torch.testing.assert_close(ours(x_cl), reference(x_cl))


def test_pixel_rows_is_a_view_of_whole_pixels():
    x = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).view(2, 4, 3, 5).contiguous(memory_format=torch.channels_last)
    rows = pixel_rows(x)
    assert rows.data_ptr() == x.data_ptr() and rows.shape[1] % 4 == 0 and rows.shape[1] <= 128
    assert torch.equal(rows.reshape(-1, 4), x.permute(0, 2, 3, 1).reshape(-1, 4))


def test_constant_and_offset_channels():
    """A dead channel (all zeros after a ReLU: PyTorch reports its variance as invstd 0) and one
    whose mean is 100 times its spread: finite, and PyTorch's result to fp32 rounding (the input
    gradient, computed as a * x + b per channel, loses about two digits on the offset channel)."""
    reference, ours = _pair(4)
    torch.manual_seed(2)
    x = torch.randn(2, 4, 16, 16)
    x[:, 1] = 0.0
    x[:, 2] = x[:, 2] * 0.1 + 10.0
    grad = torch.randn(x.shape)
    x_ref = x.clone().requires_grad_()
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    assert ours._use_rows(x_cl)
    out_ref, out = reference(x_ref), ours(x_cl)
    (out_ref * grad).sum().backward()
    (out * grad).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x_cl.grad).all()
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x_cl.grad, x_ref.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.running_var, reference.running_var)
