"""The bridge between Keras 3 (torch backend) RNN layers and gru_cuda's fused op.

Kept free of layer classes so that `GRU`, `GRUCell` and `RNN` share one path: read the
cell's variables as torch tensors (autograd reaches the Keras variables through them), take
the cell's cached dropout masks, and run `gru_cuda.functional.gru` over the whole sequence.
"""
from __future__ import annotations

import keras
import torch

from gru_cuda import activations as gc_activations
from gru_cuda import functional


def require_torch_backend(what: str) -> None:
    """Raises when Keras runs on another backend: the fused op takes torch tensors."""
    backend = keras.backend.backend()
    if backend != "torch":
        raise RuntimeError(
            f"{what} needs Keras 3 on the torch backend (KERAS_BACKEND=torch, set before "
            f"keras is first imported); the active Keras backend is {backend!r}. Use "
            f"keras.layers.{what.rsplit('.', 1)[-1]} on other backends.")


def activation_arg(fn):
    """The gru_cuda form of a Keras activation: its name when the kernels fuse it, else the
    Keras function itself (run per step on the reference path, with Keras's own numerics)."""
    name = keras.activations.serialize(fn)
    if not isinstance(name, str):  # a custom, registered activation
        return fn
    # names gru_cuda does not know (softmax, ...) keep Keras' function, as other unfused ones
    canonical = gc_activations.ALIASES.get(name, name)
    if canonical in gc_activations.FUSED_IDS and keras.activations.get(name) is fn:
        return name
    return fn


def _tensor(value, dtype: torch.dtype):
    if value is None:
        return None
    # `.value` is the torch Parameter (or its autocast/stateless-scope stand-in): using it keeps
    # the variable in the autograd graph.
    t = value.value if isinstance(value, keras.Variable) else value
    return t if t.dtype == dtype else t.to(dtype)


def _stacked(masks, dtype):
    if masks is None:
        return None
    if isinstance(masks, (list, tuple)):  # one mask per gate (Keras' implementation=1)
        masks = torch.stack([_tensor(m, dtype) for m in masks])
    return _tensor(masks, dtype)


def dropout_masks(cell, step_input, state, training):
    """The cell's input and recurrent dropout masks for this call, or None: the masks Keras's
    own cell would multiply by (drawn once per call by `RNN.call` and cached on the cell),
    applied under the same condition (`training` and 0 < rate < 1)."""
    dtype = step_input.dtype
    in_mask = rec_mask = None
    if training and 0.0 < cell.dropout < 1.0:
        in_mask = _stacked(cell.get_dropout_mask(step_input), dtype)
    if training and 0.0 < cell.recurrent_dropout < 1.0:
        rec_mask = _stacked(cell.get_recurrent_dropout_mask(state), dtype)
        if rec_mask.dim() == 2:  # one mask shared by the three gates
            rec_mask = rec_mask.expand(3, *rec_mask.shape)
    return in_mask, rec_mask


def run_sequence(cell, sequences, initial_state, mask=None, training=False, *,
                 go_backwards=False, zero_output_for_mask=False):
    """A whole sequence through the fused op with `cell`'s weights and settings.

    Returns what Keras's `backend.rnn` returns: `(last_output, outputs, [final_state])`,
    outputs `(batch, timesteps, units)` in processing order.
    """
    x = sequences
    dtype = x.dtype
    h0 = _tensor(initial_state, dtype)
    if mask is not None:
        mask = _tensor(mask, torch.bool)
    in_mask, rec_mask = dropout_masks(cell, x[:, 0, :], h0, training)
    outputs, state = functional.gru(
        x, _tensor(cell.kernel, dtype), _tensor(cell.recurrent_kernel, dtype),
        _tensor(cell.bias, dtype) if cell.use_bias else None, h0,
        reset_after=bool(cell.reset_after),
        activation=activation_arg(cell.activation),
        recurrent_activation=activation_arg(cell.recurrent_activation),
        go_backwards=bool(go_backwards), mask=mask,
        zero_output_for_mask=bool(zero_output_for_mask),
        input_dropout_mask=in_mask, recurrent_dropout_mask=rec_mask)
    return outputs[:, -1], outputs, [state]


def named_args(frame_locals: dict) -> dict:
    """An `__init__`'s named arguments from its `locals()`, without self and **kwargs."""
    return {k: v for k, v in frame_locals.items()
            if k not in ("self", "kwargs", "__class__")}


def first(value):
    """Keras passes states and masks either bare or as one-element lists."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value
