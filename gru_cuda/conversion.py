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

The layers' conversions (`GRU.from_torch` / `GRU.to_torch`, `Bidirectional.from_torch` /
`Bidirectional.to_torch`) are thin methods over `gru_from_torch`, `bidirectional_from_torch`
and `gru_to_torch` below.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

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
        raise ValueError(f"weight_hh_l0 must have shape (3 * hidden, hidden), got "
                         f"{tuple(w_hh.shape)}")
    units = w_hh.shape[1]
    if w_ih.dim() != 2 or w_ih.shape[0] != 3 * units:
        raise ValueError(f"weight_ih_l0 must have shape (3 * hidden, input) = ({3 * units}, "
                         f"input), got {tuple(w_ih.shape)}")
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


# ---- layers <-> torch.nn.GRU modules ----------------------------------------------------------
# The layer classes come in as arguments (the methods pass their own class), so this module
# needs no import of gru_cuda.layers.

def _layer_from_module(cls, module: nn.GRU, suffix: str, **kwargs):
    """One direction (`suffix` "" or "_reverse") of `module` as a built layer of class `cls`."""
    w_ih = getattr(module, "weight_ih_l0" + suffix)
    kwargs.setdefault("time_major", not module.batch_first)
    layer = cls(module.hidden_size, use_bias=module.bias, input_size=module.input_size,
                device=w_ih.device, dtype=w_ih.dtype, **kwargs)
    b_ih = getattr(module, "bias_ih_l0" + suffix) if module.bias else None
    b_hh = getattr(module, "bias_hh_l0" + suffix) if module.bias else None
    kernel, recurrent_kernel, bias = torch_to_keras(
        w_ih.detach(), getattr(module, "weight_hh_l0" + suffix).detach(),
        None if b_ih is None else b_ih.detach(), None if b_hh is None else b_hh.detach())
    layer.set_weights([kernel, recurrent_kernel] + ([bias] if bias is not None else []))
    return layer


def gru_from_torch(cls, module: nn.GRU, **kwargs):
    """`GRU.from_torch` (see there) for the layer class `cls`."""
    if not isinstance(module, nn.GRU):
        raise TypeError(f"GRU.from_torch expects a torch.nn.GRU, got {type(module).__name__}")
    if module.num_layers != 1:
        raise ValueError(f"GRU.from_torch converts one layer; the module has "
                         f"num_layers={module.num_layers}: stack one GRU per layer")
    if module.bidirectional:
        raise ValueError("GRU.from_torch: the module is bidirectional; use "
                         "Bidirectional.from_torch")
    for key, allowed in (("reset_after", True), ("activation", "tanh"),
                         ("recurrent_activation", "sigmoid"), ("use_bias", module.bias)):
        if key in kwargs and kwargs.pop(key) != allowed:
            raise ValueError(f"GRU.from_torch: torch.nn.GRU has {key}={allowed!r}")
    for key in ("units", "input_size", "device", "dtype"):
        if key in kwargs:
            raise ValueError(f"GRU.from_torch: {key} comes from the module; don't pass it")
    return _layer_from_module(cls, module, "", **kwargs)


def bidirectional_from_torch(cls, layer_cls, module: nn.GRU, merge_mode: str, **kwargs):
    """`Bidirectional.from_torch` (see there): a `cls` wrapper over two `layer_cls` layers."""
    if not isinstance(module, nn.GRU) or not module.bidirectional or module.num_layers != 1:
        raise ValueError("Bidirectional.from_torch expects a one-layer bidirectional "
                         "torch.nn.GRU")
    for key in ("go_backwards", "units", "input_size", "device", "dtype", "use_bias",
                "reset_after", "activation", "recurrent_activation"):
        if key in kwargs:
            raise ValueError(f"Bidirectional.from_torch: {key} comes from the module; "
                             f"don't pass it")
    forward = _layer_from_module(layer_cls, module, "", **kwargs)
    backward = _layer_from_module(layer_cls, module, "_reverse",
                                  **{**kwargs, "go_backwards": True})
    return cls(forward, merge_mode=merge_mode, backward_layer=backward)


def _check_convertible(layer, what: str) -> None:
    if not layer.built:
        raise ValueError(f"{what}: the layer is not built yet")
    if not layer.reset_after:
        raise ValueError(f"{what}: reset_after=False has no torch.nn.GRU equivalent")
    if layer.activation != "tanh" or layer.recurrent_activation != "sigmoid":
        raise ValueError(f"{what}: torch.nn.GRU only computes activation='tanh', "
                         f"recurrent_activation='sigmoid'; got {layer.activation!r}, "
                         f"{layer.recurrent_activation!r}")


def gru_to_torch(layers, what: str) -> nn.GRU:
    """A one-layer `torch.nn.GRU` with a copy of the weights of `layers`: `[gru]`, or
    `[forward, backward]` for a bidirectional one (`what` names the caller in errors)."""
    for layer in layers:
        _check_convertible(layer, what)
    first = layers[0]
    if len({(layer.units, layer.input_size, layer.use_bias) for layer in layers}) != 1:
        raise ValueError(f"{what}: the two layers differ in units, input size or use_bias")
    module = nn.GRU(first.input_size, first.units, bias=first.use_bias,
                    bidirectional=len(layers) == 2, batch_first=not first.time_major,
                    device=first.kernel.device, dtype=first.kernel.dtype)
    state = {}
    for layer, suffix in zip(layers, ("", "_reverse")):
        weights = keras_to_torch(layer.kernel.detach(), layer.recurrent_kernel.detach(),
                                 None if layer.bias is None else layer.bias.detach())
        state.update({name + suffix: value for name, value in weights.items()})
    module.load_state_dict(state)
    return module
