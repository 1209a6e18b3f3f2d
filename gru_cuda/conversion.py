"""Weight conversion between Keras' GRU layout and `torch.nn.GRU` (cuDNN) layout.

Keras stores `kernel (F, 3H)`, `recurrent_kernel (H, 3H)` and, for `reset_after=True`, a
`bias (2, 3H)` (row 0 input bias, row 1 recurrent bias), gate column blocks in the order
[z, r, h]. `torch.nn.GRU` stores `weight_ih_l0 (3H, F)`, `weight_hh_l0 (3H, H)`,
`bias_ih_l0 (3H,)`, `bias_hh_l0 (3H,)`, gate row blocks in the order [r, z, n]. The two
compute the same function (torch's GRU is Keras' `reset_after=True`, tanh/sigmoid); the
conversion is a gate permutation plus a transpose, exact in every dtype.

`reset_after=False` has no `torch.nn.GRU` equivalent and is refused.

Example:

>>> w = keras_to_torch(kernel, recurrent_kernel, bias)      # dict of torch tensors
>>> torch_gru.load_state_dict(w)                             # nn.GRU(F, H), one layer
>>> kernel, recurrent_kernel, bias = torch_to_keras(**w)
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = ["swap_zr", "keras_to_torch", "torch_to_keras"]


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def swap_zr(a: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Swaps the first two of three equal gate blocks along `dim`.

    Keras' [z, r, h] becomes torch's [r, z, n] and back (the permutation is its own inverse).
    """
    z, r, h = a.chunk(3, dim=dim)
    return torch.cat([r, z, h], dim=dim)


def keras_to_torch(kernel, recurrent_kernel, bias=None) -> Dict[str, torch.Tensor]:
    """Keras `reset_after=True` GRU weights as a one-layer `torch.nn.GRU` state dict.

    Args:
        kernel: `(input_dim, 3 * units)` (tensor or array).
        recurrent_kernel: `(units, 3 * units)`.
        bias: `(2, 3 * units)`, or None for `use_bias=False` (then use `nn.GRU(bias=False)`).

    Returns:
        `{"weight_ih_l0", "weight_hh_l0"[, "bias_ih_l0", "bias_hh_l0"]}`, new contiguous
        tensors (torch tensors keep their dtype and device).

    Raises:
        ValueError: for inconsistent shapes, or a `(3 * units,)` bias (`reset_after=False`
            has no torch equivalent).
    """
    kernel, recurrent_kernel = _as_tensor(kernel), _as_tensor(recurrent_kernel)
    if recurrent_kernel.dim() != 2 or recurrent_kernel.shape[1] != 3 * recurrent_kernel.shape[0]:
        raise ValueError(f"recurrent_kernel must have shape (units, 3 * units), got "
                         f"{tuple(recurrent_kernel.shape)}")
    units = recurrent_kernel.shape[0]
    if kernel.dim() != 2 or kernel.shape[1] != 3 * units:
        raise ValueError(f"kernel must have shape (input_dim, 3 * units) = (input_dim, "
                         f"{3 * units}), got {tuple(kernel.shape)}")
    out = {"weight_ih_l0": swap_zr(kernel, -1).T.contiguous(),
           "weight_hh_l0": swap_zr(recurrent_kernel, -1).T.contiguous()}
    if bias is not None:
        bias = _as_tensor(bias)
        if tuple(bias.shape) == (3 * units,):
            raise ValueError("a (3 * units,) bias belongs to reset_after=False, which "
                             "torch.nn.GRU cannot represent")
        if tuple(bias.shape) != (2, 3 * units):
            raise ValueError(f"bias must have shape (2, 3 * units) = (2, {3 * units}), got "
                             f"{tuple(bias.shape)}")
        out["bias_ih_l0"] = swap_zr(bias[0], -1).contiguous()
        out["bias_hh_l0"] = swap_zr(bias[1], -1).contiguous()
    return out


def torch_to_keras(weight_ih_l0, weight_hh_l0, bias_ih_l0=None, bias_hh_l0=None
                   ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """One `torch.nn.GRU` layer's weights in Keras `reset_after=True` layout.

    Args:
        weight_ih_l0: `(3 * units, input_dim)`, rows [r, z, n].
        weight_hh_l0: `(3 * units, units)`.
        bias_ih_l0, bias_hh_l0: `(3 * units,)` each, or both None (`bias=False`).

    Returns:
        `(kernel (input_dim, 3 * units), recurrent_kernel (units, 3 * units),
        bias (2, 3 * units) or None)`, new contiguous tensors.
    """
    w_ih, w_hh = _as_tensor(weight_ih_l0), _as_tensor(weight_hh_l0)
    if w_hh.dim() != 2 or w_hh.shape[0] != 3 * w_hh.shape[1]:
        raise ValueError(f"weight_hh_l0 must have shape (3 * hidden, hidden), got {tuple(w_hh.shape)}")
    units = w_hh.shape[1]
    if w_ih.dim() != 2 or w_ih.shape[0] != 3 * units:
        raise ValueError(f"weight_ih_l0 must have shape (3 * hidden, input) = ({3 * units}, input), "
                         f"got {tuple(w_ih.shape)}")
    kernel = swap_zr(w_ih.T, -1).contiguous()
    recurrent_kernel = swap_zr(w_hh.T, -1).contiguous()
    if (bias_ih_l0 is None) != (bias_hh_l0 is None):
        raise ValueError("give both bias_ih_l0 and bias_hh_l0, or neither")
    bias = None
    if bias_ih_l0 is not None:
        b_ih, b_hh = _as_tensor(bias_ih_l0), _as_tensor(bias_hh_l0)
        for name, b in (("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
            if tuple(b.shape) != (3 * units,):
                raise ValueError(f"{name} must have shape ({3 * units},), got {tuple(b.shape)}")
        bias = torch.stack([swap_zr(b_ih, -1), swap_zr(b_hh, -1)]).contiguous()
    return kernel, recurrent_kernel, bias
