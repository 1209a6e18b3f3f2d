"""reset_after=True equals torch.nn.GRU, with the gate order [z, r, h] <-> [r, z, n]."""
import pytest
import torch

from gru_cuda import functional


def reorder(a):  # Keras column blocks [z | r | h] -> torch [r | z | n]
    z, r, h = a.chunk(3, dim=-1)
    return torch.cat([r, z, h], dim=-1)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_nn_gru(dtype, tol, bias):
    B, T, F, H = 4, 7, 5, 6
    net = torch.nn.GRU(F, H, batch_first=True, bias=bias).to(dtype)
    kernel = reorder(net.weight_ih_l0.detach().t()).contiguous()
    recurrent = reorder(net.weight_hh_l0.detach().t()).contiguous()
    b = None
    if bias:
        b = torch.stack([reorder(net.bias_ih_l0.detach()), reorder(net.bias_hh_l0.detach())])
    x = torch.randn(B, T, F, dtype=dtype)
    h0 = torch.randn(B, H, dtype=dtype)
    expected, h_n = net(x, h0.unsqueeze(0))
    kernel.requires_grad_(True)
    out, state = functional.gru(x, kernel, recurrent, b, h0)
    torch.testing.assert_close(out, expected.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(state, h_n[0].detach(), rtol=tol, atol=tol)
    # Gradients agree too (kernel gradient mapped back through the reordering).
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    torch.testing.assert_close(kernel.grad, reorder(net.weight_ih_l0.grad.t()),
                               rtol=tol * 10, atol=tol * 10)
