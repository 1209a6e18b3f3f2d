"""The one comparison of a result with its float64 reference (or another implementation).

Errors are relative to the reference's scale, `max(max|expected|, 1)`: a GRU's outputs and
states are O(1), and gradients of long sequences grow, so one tolerance per dtype fits every
tensor.
"""
import torch


def _pair(actual, expected, name):
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    return a, e


def max_abs_err(actual, expected, name="", equal_nan=False):
    """(max |actual - expected|, scale) in float64; equal values (infinities included) and, with
    `equal_nan`, NaN in both count as no error; NaN in one only gives an infinite error."""
    a, e = _pair(actual, expected, name)
    if e.numel() == 0:
        return 0.0, 1.0
    finite = e[torch.isfinite(e)]
    scale = max(finite.abs().max().item() if finite.numel() else 0.0, 1.0)
    same = (a == e) | (torch.isnan(a) & torch.isnan(e)) if equal_nan else a == e
    diff = torch.where(same, torch.zeros_like(a), (a - e).abs())
    return diff.nan_to_num(nan=float("inf")).max().item(), scale


def max_rel_err(actual, expected, name="", equal_nan=False):
    """max |actual - expected| / max(max|expected|, 1), in float64."""
    err, scale = max_abs_err(actual, expected, name, equal_nan)
    return err / scale


def assert_close_rel(actual, expected, rtol, name="", atol_floor=None, equal_nan=False):
    """|actual - expected| <= rtol * max(|expected|.max(), 1) elementwise, in float64 (or
    `atol_floor` where that is larger)."""
    err, scale = max_abs_err(actual, expected, name, equal_nan)
    tol = rtol * scale if atol_floor is None else max(rtol * scale, atol_floor)
    assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.3e} (scale {scale:.3e})"
