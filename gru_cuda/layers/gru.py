"""The Gated Recurrent Unit layers: `GRUCell` (one step) and `GRU` (a sequence, one fused
call)."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from gru_cuda import conversion
from gru_cuda._validation import check_initial_state
from gru_cuda.layers._base import _RecurrentMixin
from gru_cuda.layers._checks import _as_tensor
from gru_cuda.layers._gru_weights import _GRUWeights

__all__ = ["GRUCell", "GRU"]


class GRUCell(_GRUWeights):
    """Cell class for the GRU layer: processes one timestep.

    `cell(x_t, h)` returns `(h_new, new_state)` where `new_state` is `[h_new]` when `h` is a
    list (Keras' convention) and `h_new` itself when `h` is a tensor. Wrap it in `RNN` to run
    a sequence: `RNN(GRUCell(units))` runs the fused sequence kernel with the cell's weights
    (one call, not a Python loop) and equals `GRU(units)` with the same weights.

    Args:
        units: positive integer, dimensionality of the output space.
        activation: activation function to use (a Keras name, None for linear, or a
            callable). Default: `"tanh"`.
        recurrent_activation: activation for the update and reset gates. Default:
            `"sigmoid"`.
        use_bias: whether the layer has a bias. Default: True.
        kernel_initializer: initializer of `kernel` (a Keras name, an Initializer or a
            callable). Default: `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Default: `"orthogonal"`.
        bias_initializer: initializer of `bias`. Default: `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: regularizers of the
            weights (`"l1"`, `"l2"`, `"l1_l2"`, a Regularizer or a callable). Default: None.
        kernel_constraint, recurrent_constraint, bias_constraint: constraints of the
            weights (`"max_norm"`, `"non_neg"`, `"unit_norm"`, `"min_max_norm"`, a
            Constraint or a callable). Default: None.
        dropout: float in [0, 1], fraction of the input units to drop. Default: 0.
        recurrent_dropout: float in [0, 1], fraction of the recurrent units to drop.
            Default: 0.
        reset_after: GRU convention: apply the reset gate after (True, default and
            cuDNN-compatible) or before (False) the recurrent matrix multiplication.
        seed: int seed of the dropout masks (reproducible masks), or None (global RNG).
        input_size: number of input features: builds the weights now. Default: built on
            the first call.
        device, dtype: where and in which dtype to create the weights.

    Call arguments:
        inputs: `(batch, features)` tensor.
        states: `(batch, units)` tensor, or a list of one such tensor; None means zeros.
        training: whether dropout applies; None follows `module.training`.

    Dropout masks are drawn on the first training call and reused by later calls until
    `reset_dropout_mask()` / `reset_recurrent_dropout_mask()`, as in Keras, so a manual loop
    over timesteps uses one mask per sequence. `RNN` resets them after every call.

    Example:

    >>> cell = GRUCell(4)
    >>> x = torch.rand(32, 10, 8)
    >>> h = torch.zeros(32, 4)
    >>> for t in range(10):
    ...     out, h = cell(x[:, t], h)
    >>> out.shape
    torch.Size([32, 4])
    """

    # The constructor is _GRUWeights' (the arguments above). The cached dropout masks start
    # empty; a training call draws them.
    _dropout_mask: Optional[torch.Tensor] = None
    _recurrent_dropout_mask: Optional[torch.Tensor] = None

    @property
    def state_size(self) -> int:
        """The size of the (single) state: `units`."""
        return self.units

    @property
    def output_size(self) -> int:
        """The size of the output: `units`."""
        return self.units

    def get_initial_state(self, batch_size: int) -> List[torch.Tensor]:
        """`[zeros(batch_size, units)]` in the weights' dtype and device."""
        if self.built:
            dtype, device = self.kernel.dtype, self.kernel.device
        else:
            dtype = self._factory_dtype or torch.get_default_dtype()
            device = self._factory_device
        return [torch.zeros(batch_size, self.units, dtype=dtype, device=device)]

    def reset_dropout_mask(self) -> None:
        """Forgets the cached input dropout mask (the next training call draws a new one)."""
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self) -> None:
        """Forgets the cached recurrent dropout mask."""
        self._recurrent_dropout_mask = None

    def _cached_dropout_masks(self, batch: int, like: torch.Tensor, training: bool):
        # Keras' DropoutRNNCell: masks are drawn once and reused until reset.
        if not training or (self.dropout == 0 and self.recurrent_dropout == 0):
            return None, None

        def stale(m, tail):
            return (m is None or tuple(m.shape[-2:]) != (batch, tail) or m.device != like.device
                    or m.dtype != like.dtype)
        need_in = self.dropout > 0 and stale(self._dropout_mask, self.input_size)
        need_rec = self.recurrent_dropout > 0 and stale(self._recurrent_dropout_mask, self.units)
        if need_in or need_rec:
            in_mask, rec_mask = self._draw_dropout_masks(batch, like)
            if need_in:
                self._dropout_mask = in_mask
            if need_rec:
                self._recurrent_dropout_mask = rec_mask
        return (self._dropout_mask if self.dropout > 0 else None,
                self._recurrent_dropout_mask if self.recurrent_dropout > 0 else None)

    def forward(self, inputs, states=None, training=None):
        """One GRU step.

        Args:
            inputs: `(batch, features)`.
            states: `(batch, units)` tensor, a list of one, or None (zeros).
            training: apply dropout; None follows `module.training`.

        Returns:
            `(h_new, [h_new])` when `states` is a list or tuple, `(h_new, h_new)` otherwise.
        """
        x = _as_tensor(inputs, "GRUCell inputs")
        if x.dim() != 2:
            raise ValueError(f"GRUCell expects inputs of shape (batch, features), got "
                             f"{x.dim()}-D shape {tuple(x.shape)}")
        batch = x.shape[0]
        dtype = self._build_for_input(int(x.shape[1]), x.device)
        if x.dtype != dtype:
            x = x.to(dtype)
        nested = isinstance(states, (list, tuple))
        if nested:
            if len(states) != 1:
                raise ValueError(f"GRUCell has one state; got a list of {len(states)}")
            h = states[0]
        else:
            h = states
        if h is None:
            h = x.new_zeros(batch, self.units)
        h = _as_tensor(h, "GRUCell states", x.device)
        if h.dtype != dtype:
            h = h.to(dtype)
        # gru() checks it too, as `initial_state`; this check words the error as the cell's
        # own `states` argument.
        check_initial_state(h, x, B=batch, H=self.units, name="states", caller="GRUCell")
        training = self.training if training is None else bool(training)
        masks = self._cached_dropout_masks(batch, x, training)
        outputs, _ = self._run_gru(x.unsqueeze(1), h, None, masks, go_backwards=False,
                                   time_major=False, zero_output_for_mask=False)
        h_new = outputs[:, 0]
        return h_new, ([h_new] if nested else h_new)

    def get_config(self) -> dict:
        """The constructor arguments (resolved objects, not serialized)."""
        return self._cell_config()

    def extra_repr(self) -> str:
        return self._cell_repr()


class GRU(_RecurrentMixin, _GRUWeights):
    """Gated Recurrent Unit - Cho et al. 2014, Keras 3 semantics, on fused kernels.

    Two conventions exist. The default (`reset_after=True`, as in Keras 2.x/3 and cuDNN)
    applies the reset gate after the recurrent matrix multiplication, with separate input and
    recurrent biases; `reset_after=False` (1406.1078v3) applies it to the hidden state
    before the multiplication. With `W = kernel`, `U = recurrent_kernel`, gate blocks
    [z, r, h]:

        z  = recurrent_activation(x W_z + b_iz + h U_z + b_hz)
        r  = recurrent_activation(x W_r + b_ir + h U_r + b_hr)
        h~ = activation(x W_h + b_ih + r * (h U_h + b_hh))      # reset_after=True
        h~ = activation(x W_h + b_h + (r * h) U_h)               # reset_after=False
        h_t = z * h + (1 - z) * h~

    Every configuration (both conventions, any activation pair, masks, `go_backwards`,
    dropout, recurrent dropout) runs as one call of the fused sequence op.

    Args:
        units: positive integer, dimensionality of the output space.
        activation: activation function (a Keras name, None for linear, or a callable).
            Default: `"tanh"`. The Keras names tanh, sigmoid, hard_sigmoid, relu, linear,
            softsign, elu, selu, softplus, swish/silu, gelu, exponential run inside the
            kernels; other names and callables run on the reference path (a per-step loop).
        recurrent_activation: activation of the update and reset gates. Default: `"sigmoid"`.
        use_bias: whether the layer has a bias. Default: True.
        return_sequences: return the whole output sequence (True) or the last output.
            Default: False.
        return_state: also return the final state: `(output, state)`. Default: False.
        go_backwards: process the sequence from the last step to the first and return the
            reversed sequence (in processing order). Default: False.
        stateful: keep the final state of each batch as the initial state of the next call
            (sample i continues sample i). Default: False.
        unroll: accepted for Keras compatibility; has no effect (the fused kernel is used
            either way and the numbers are the same). Default: False.
        time_major: inputs and outputs are `(timesteps, batch, ...)` (the Keras 2 / R
            argument). Default: False.
        reset_after: GRU convention (after = True, default and cuDNN-compatible).
        kernel_initializer: initializer of `kernel`. Default: `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Default: `"orthogonal"`.
        bias_initializer: initializer of `bias`. Default: `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: weight regularizers
            (`"l1"`, `"l2"`, `"l1_l2"`, a Regularizer or a callable). Default: None.
        activity_regularizer: regularizer applied to every returned tensor (output and, with
            `return_state`, the state), divided by the batch size. Default: None.
        kernel_constraint, recurrent_constraint, bias_constraint: weight constraints
            (`"max_norm"`, `"non_neg"`, `"unit_norm"`, `"min_max_norm"`, a Constraint or a
            callable), applied by `apply_constraints()`, never in forward. Default: None.
        dropout: float in [0, 1], fraction of the input units to drop. Default: 0.
        recurrent_dropout: float in [0, 1], fraction of the recurrent units to drop.
            Default: 0.
        zero_output_for_mask: output zeros (instead of the previous output) at masked steps.
            Default: False.
        seed: int seed of the dropout masks, or None (PyTorch's global generator).
        input_size: number of input features: builds the weights now. Default: built on
            the first call.
        device, dtype: where and in which dtype to create the weights (default: the first
            input's device; `torch.get_default_dtype()`).

    Call arguments:
        inputs: `(batch, timesteps, features)` (or time-major).
        mask: optional bool `(batch, timesteps)`, True = use the step.
        initial_state: optional `(batch, units)` tensor (or a list of one).
        training: whether dropout applies; None follows `module.training`.

    Dropout (Keras >= 3.8): masks are drawn once per call (per batch) and reused at every
    timestep, with inverted scaling `1 / (1 - rate)`, in training only. With
    `recurrent_dropout == 0` one input mask is shared by the three gates; otherwise three
    input and three recurrent masks, one per gate. The carried state is never dropped.

    Weights: `kernel (features, 3 * units)`, `recurrent_kernel (units, 3 * units)`, `bias`
    `(2, 3 * units)` (reset_after) or `(3 * units,)`: Keras' layout, so `get_weights()` /
    `set_weights()` exchange weights with `keras.layers.GRU` exactly.

    Example:

    >>> inputs = torch.rand(32, 10, 8)
    >>> gru = GRU(4)
    >>> gru(inputs).shape
    torch.Size([32, 4])
    >>> gru = GRU(4, return_sequences=True, return_state=True)
    >>> whole_sequence_output, final_state = gru(inputs)
    >>> whole_sequence_output.shape, final_state.shape
    (torch.Size([32, 10, 4]), torch.Size([32, 4]))
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, time_major=False, reset_after=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, zero_output_for_mask=False, seed=None, input_size=None,
                 device=None, dtype=None):
        _GRUWeights.__init__(self, units, activation, recurrent_activation, use_bias,
                             kernel_initializer, recurrent_initializer, bias_initializer,
                             kernel_regularizer, recurrent_regularizer, bias_regularizer,
                             kernel_constraint, recurrent_constraint, bias_constraint, dropout,
                             recurrent_dropout, reset_after, seed, input_size, device, dtype)
        self._init_recurrent(return_sequences, return_state, go_backwards, stateful, unroll,
                             time_major, zero_output_for_mask, activity_regularizer)

    def _state_sizes(self) -> List[int]:
        return [self.units]

    def _prepare(self, x: torch.Tensor) -> torch.dtype:
        return self._build_for_input(int(x.shape[-1]), x.device)

    def _run(self, x, mask, h0, training, T, B):
        masks = self._draw_dropout_masks(B, x) if training else (None, None)
        outputs, h = self._run_gru(x, None if h0 is None else h0[0], mask, masks,
                                   go_backwards=self.go_backwards, time_major=self.time_major,
                                   zero_output_for_mask=self.zero_output_for_mask)
        return outputs, [h]

    def get_config(self) -> dict:
        """The constructor arguments (resolved objects, not serialized); with it,
        `GRU.from_config(config)` makes a layer of the same configuration (fresh weights)."""
        return {**self._cell_config(), **self._recurrent_config()}

    def extra_repr(self) -> str:
        rec = self._recurrent_repr()
        return self._cell_repr() + (", " + rec if rec else "")

    # ---- torch.nn.GRU conversion ----------------------------------------------------------------

    @classmethod
    def from_torch(cls, module: nn.GRU, **kwargs) -> "GRU":
        """A `GRU` computing what a one-layer, one-direction `torch.nn.GRU` computes.

        torch's GRU is Keras' `reset_after=True` with tanh/sigmoid; the weights are copied
        with the gate reordering [r, z, n] → [z, r, h] (exact). `time_major` defaults to
        `not module.batch_first`, and the result lives on the module's device and dtype.

        Args:
            module: a `torch.nn.GRU` with `num_layers=1`, `bidirectional=False` (use
                `Bidirectional.from_torch` for a bidirectional one).
            **kwargs: other `GRU` arguments (e.g. `return_sequences=True`).

        Returns:
            A built `GRU`.
        """
        return conversion.gru_from_torch(cls, module, **kwargs)

    def to_torch(self) -> nn.GRU:
        """The equivalent one-layer `torch.nn.GRU` (a copy of the weights).

        Requires `reset_after=True`, tanh and sigmoid. `batch_first = not time_major`. Only
        the cell is converted: `go_backwards`, `return_sequences`, masks, stateful and dropout
        are properties of this layer's call, not of `nn.GRU`'s weights.
        """
        return conversion.gru_to_torch([self], "GRU.to_torch")
