"""What the layers share: the Keras layer behaviour of every layer (`losses`,
`apply_constraints`, `count_params`), the sequence behaviour of `GRU` and `RNN` (return
options, masks, initial and stateful states, activity regularization) and the one copy of
arrays into parameters behind every `set_weights`."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch

from gru_cuda import constraints as _constraints
from gru_cuda import regularizers as _regularizers
from gru_cuda.layers._checks import _as_tensor, _check_bool


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().to("cpu")
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16
        t = t.float()
    return t.clone().numpy()


def _scalar(value, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.reshape(())
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


@torch.no_grad()
def _copy_into(params: Sequence[torch.Tensor], weights: Sequence, what: str,
               names: Optional[Sequence[str]] = None) -> None:
    """Copies arrays (or tensors) into `params`, cast to each parameter's dtype and device,
    after checking their number and shapes; `what` and `names` word the errors."""
    weights = list(weights)
    if len(weights) != len(params):
        listed = "" if names is None else " " + str(
            [f"{n} {tuple(p.shape)}" for n, p in zip(names, params)])
        raise ValueError(f"{what}: expected {len(params)} arrays{listed}, got {len(weights)}")
    for i, (p, w) in enumerate(zip(params, weights)):
        if tuple(np.shape(w)) != tuple(p.shape):
            subject = "expected shape" if names is None else f"{names[i]} must have shape"
            raise ValueError(f"{what}: {subject} {tuple(p.shape)}, got {tuple(np.shape(w))}")
    for p, w in zip(params, weights):
        src = w.detach() if isinstance(w, torch.Tensor) else torch.as_tensor(np.asarray(w))
        p.copy_(src.to(device=p.device, dtype=p.dtype))


class _KerasLayerMixin:
    """`losses`, `apply_constraints`, `count_params` for every layer of this package."""

    @property
    def losses(self) -> List[torch.Tensor]:
        """Keras' list of scalar losses: the activity penalties of the last call (divided by
        the batch size), then one penalty per regularized weight, recomputed on every read
        (so it is differentiable w.r.t. the current weights). Includes sub-layers."""
        return _regularizers.collect_losses(self)

    def apply_constraints(self) -> None:
        """Projects every constrained weight (this layer and its sub-layers) in place.

        Call it after `optimizer.step()`, or use `gru_cuda.constraints.attach`.
        """
        _constraints.apply_constraints(self)

    def count_params(self) -> int:
        """The number of scalars in the layer's weights (built layers only)."""
        if not self.built:
            raise ValueError(f"{type(self).__name__} is not built yet: call it on an input, "
                             f"call build(input_shape), or give input_size")
        return sum(p.numel() for p in self.parameters())

    def _own_activity_losses(self) -> List[torch.Tensor]:
        return list(getattr(self, "_activity_losses", []))

    def _own_weight_losses(self) -> List[torch.Tensor]:
        return []


class _RecurrentMixin(_KerasLayerMixin):
    """Sequence-level Keras RNN behaviour shared by `GRU` and `RNN`: return options, masks,
    initial and stored (stateful) states, activity regularization."""

    def _init_recurrent(self, return_sequences, return_state, go_backwards, stateful, unroll,
                        time_major, zero_output_for_mask, activity_regularizer):
        self.return_sequences = _check_bool(return_sequences, "return_sequences")
        self.return_state = _check_bool(return_state, "return_state")
        self.go_backwards = _check_bool(go_backwards, "go_backwards")
        self.stateful = _check_bool(stateful, "stateful")
        # Accepted for Keras compatibility; the fused kernel runs either way (same numbers).
        self.unroll = _check_bool(unroll, "unroll")
        self.time_major = _check_bool(time_major, "time_major")
        self.zero_output_for_mask = _check_bool(zero_output_for_mask, "zero_output_for_mask")
        self.activity_regularizer = _regularizers.get(activity_regularizer, "activity_regularizer")
        self._states: Optional[List[torch.Tensor]] = None
        self._activity_losses: List[torch.Tensor] = []

    def _apply(self, fn, *args, **kwargs):
        # Keep the stored (stateful) states with the module on .to()/.cuda()/.double().
        module = super()._apply(fn, *args, **kwargs)
        if self._states is not None:
            self._states = [fn(s) for s in self._states]
        return module

    # ---- states -------------------------------------------------------------------------------

    @property
    def states(self) -> Optional[List[torch.Tensor]]:
        """The stored states of a stateful layer (a list, one `(batch, units)` tensor for a
        GRU), or None before the first call."""
        return None if self._states is None else list(self._states)

    def reset_states(self, states=None) -> None:
        """Resets the stored states of a stateful layer.

        Args:
            states: None (default) zeroes the stored states, as Keras' `reset_state()` does
                (a layer that was never called has nothing to reset). Otherwise the new
                states: a tensor or a list with one `(batch, size)` tensor per state (the
                Keras 2 form); this may change the batch size the layer expects.
        """
        if states is None:
            if self._states is not None:
                self._states = [torch.zeros_like(s) for s in self._states]
            return
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        sizes = self._state_sizes()
        if len(states) != len(sizes):
            raise ValueError(f"{type(self).__name__}.reset_states: expected {len(sizes)} state "
                             f"tensor(s), got {len(states)}")
        new = []
        for s, size in zip(states, sizes):
            s = _as_tensor(s, "states")
            if s.dim() != 2 or s.shape[1] != size:
                raise ValueError(f"{type(self).__name__}.reset_states: each state must have "
                                 f"shape (batch, {size}), got {tuple(s.shape)}")
            new.append(s.detach().clone())
        if len({s.shape[0] for s in new}) != 1:
            raise ValueError("reset_states: the states have different batch sizes")
        self._states = new

    def reset_state(self, states=None) -> None:
        """Alias of `reset_states` (Keras 3's name)."""
        self.reset_states(states)

    # ---- call ---------------------------------------------------------------------------------

    def _layout(self) -> str:
        return "(timesteps, batch, features) with time_major=True" if self.time_major \
            else "(batch, timesteps, features)"

    def _resolve_initial_states(self, initial_state, B: int, x: torch.Tensor):
        # Tensors in x's dtype, one per state; their shapes, devices and dtypes are checked
        # once, by gru() (or by the cell-stepping loop of RNN), not here.
        if self.stateful and self._states is not None and self._states[0].shape[0] != B:
            raise ValueError(
                f"If an RNN is stateful, the batch size of the input sequences must be the same "
                f"as the batch size of its stored state.\n- Expected batch size: "
                f"{self._states[0].shape[0]}\n- Received batch size: {B}\n(To start over with "
                f"another batch size, call reset_states(states) with states of that batch size.)")
        if initial_state is None:
            if self.stateful and self._states is not None:
                return [s.to(device=x.device, dtype=x.dtype) for s in self._states]
            return None
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) \
            else [initial_state]
        sizes = self._state_sizes()
        if len(states) != len(sizes):
            raise ValueError(f"{type(self).__name__}: initial_state must hold {len(sizes)} "
                             f"tensor(s) (one per state), got {len(states)}")
        states = [_as_tensor(s, "initial_state", x.device) for s in states]
        return [s if s.dtype == x.dtype else s.to(x.dtype) for s in states]

    def forward(self, inputs, mask=None, initial_state=None, training=None):
        """Runs the layer over a sequence.

        Args:
            inputs: `(batch, timesteps, features)`, or `(timesteps, batch, features)` with
                `time_major=True`. Cast to the weights' dtype.
            mask: optional bool `(batch, timesteps)` (`(timesteps, batch)` with
                `time_major`), True = use the step. At a masked step the state is carried and
                the output repeats the previous output (or is 0 with `zero_output_for_mask`).
            initial_state: optional `(batch, units)` tensor or list of one per state; it
                overrides the stored state of a stateful layer. None: zeros (or the stored
                state).
            training: apply dropout; None follows `module.training`.

        Returns:
            The output: `(batch, timesteps, units)` with `return_sequences` (time-major with
            `time_major`), else `(batch, units)`, the output of the last processed step.
            With `return_state`, the tuple `(output, *final_states)`.
        """
        self._activity_losses = []
        x = _as_tensor(inputs, f"{type(self).__name__} inputs")
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} expects 3-D inputs {self._layout()}, got "
                             f"{x.dim()}-D shape {tuple(x.shape)}")
        T, B = (x.shape[0], x.shape[1]) if self.time_major else (x.shape[1], x.shape[0])
        # No int(): under torch.export with dynamic shapes these stay symbolic.
        dtype = self._prepare(x)
        if dtype is not None and x.dtype != dtype:
            x = x.to(dtype)
        if mask is not None:  # checked (shape, device) where it is used: gru() or the loop
            mask = _as_tensor(mask, "mask", x.device)
        h0 = self._resolve_initial_states(initial_state, B, x)
        training = self.training if training is None else bool(training)

        outputs, final_states = self._run(x, mask, h0, training, T, B)

        if self.stateful:
            self._states = [s.detach() for s in final_states]
        if self.return_sequences:
            output = outputs
        elif T > 0:
            output = outputs[-1] if self.time_major else outputs[:, -1]
        else:  # no step: the "previous output" Keras starts from is zeros
            output = x.new_zeros(B, outputs.shape[-1])
        result = (output, *final_states) if self.return_state else output
        if self.activity_regularizer is not None:
            returned = result if self.return_state else (result,)
            # Keras: every returned tensor, each penalty divided by the batch size.
            self._activity_losses = [_scalar(self.activity_regularizer(t), t) / B
                                     for t in returned]
        return result

    def _recurrent_config(self) -> dict:
        return dict(return_sequences=self.return_sequences, return_state=self.return_state,
                    go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
                    time_major=self.time_major, zero_output_for_mask=self.zero_output_for_mask,
                    activity_regularizer=self.activity_regularizer)

    def _recurrent_repr(self) -> str:
        parts = []
        for name in ("return_sequences", "return_state", "go_backwards", "stateful",
                     "time_major", "zero_output_for_mask"):
            if getattr(self, name):
                parts.append(f"{name}=True")
        return ", ".join(parts)
