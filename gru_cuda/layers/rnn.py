"""`RNN`: runs a cell over a sequence, in one fused call over a `GRUCell`, else step by step."""
from __future__ import annotations

import copy
import inspect
import numbers
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from gru_cuda._validation import check_initial_state, check_mask
from gru_cuda.layers._base import _copy_into, _RecurrentMixin, _to_numpy
from gru_cuda.layers._gru_weights import _GRUWeights
from gru_cuda.layers.gru import GRUCell

__all__ = ["RNN"]


def _accepts_kwarg(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class RNN(_RecurrentMixin, nn.Module):
    """Base class for recurrent layers: runs a cell over a sequence.

    Over a `GRUCell` it runs the fused sequence kernel with the cell's weights (one call, no
    Python loop), exactly `GRU` with those weights. Any other cell is looped in Python: a
    `torch.nn.Module` with a `state_size` attribute (an int, or a list of ints, one per
    state) whose `forward(inputs, states[, training])` returns `(output, new_states)` — the
    Keras cell protocol. `get_initial_state(batch_size)` and `output_size` are used when the
    cell has them.

    Args:
        cell: a `GRUCell` or another cell (see above). A list of cells (Keras'
            StackedRNNCells) is not supported: stack layers instead.
        return_sequences: return the whole output sequence (True) or the last output.
        return_state: also return the final states: `(output, *states)`.
        go_backwards: process the sequence backwards and return the reversed sequence.
        stateful: keep the final states as the initial states of the next call.
        unroll: accepted for Keras compatibility; no effect.
        time_major: inputs and outputs are `(timesteps, batch, ...)`.
        zero_output_for_mask: output zeros (instead of the previous output) at masked steps.
        activity_regularizer: regularizer applied to every returned tensor, divided by the
            batch size. Default: None.

    Call arguments: as `GRU` (`inputs`, `mask`, `initial_state`, `training`).

    Example:

    >>> inputs = torch.rand(32, 10, 8)
    >>> rnn = RNN(GRUCell(4), return_sequences=True, return_state=True)
    >>> whole_sequence_output, final_state = rnn(inputs)
    >>> whole_sequence_output.shape, final_state.shape
    (torch.Size([32, 10, 4]), torch.Size([32, 4]))
    """

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, time_major=False, zero_output_for_mask=False,
                 activity_regularizer=None):
        nn.Module.__init__(self)
        if isinstance(cell, (list, tuple)):
            raise ValueError("RNN: a list of cells (StackedRNNCells) is not supported; stack "
                             "RNN/GRU layers (e.g. in an nn.Sequential) instead")
        state_size = getattr(cell, "state_size", None)
        if state_size is None:
            raise ValueError(f"RNN: the cell must have a `state_size` attribute (an int, or a "
                             f"list of ints); got {type(cell).__name__}")
        sizes = [state_size] if isinstance(state_size, numbers.Integral) else state_size
        if not isinstance(sizes, (list, tuple)) or not sizes or not all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
            raise ValueError(f"RNN: the cell's state_size must be an int or a list of ints, "
                             f"got {state_size!r}")
        if not callable(cell):
            raise ValueError(f"RNN: the cell must be callable, got {type(cell).__name__}")
        self.cell = cell
        self._init_recurrent(return_sequences, return_state, go_backwards, stateful, unroll,
                             time_major, zero_output_for_mask, activity_regularizer)

    @property
    def built(self) -> bool:
        """Whether the cell's weights exist."""
        return bool(getattr(self.cell, "built", True))

    def _state_sizes(self) -> List[int]:
        s = self.cell.state_size
        return [int(s)] if isinstance(s, numbers.Integral) else [int(v) for v in s]

    def _fused(self) -> bool:
        # A GRUCell subclass that overrides forward gets the generic loop (its own step).
        return isinstance(self.cell, GRUCell) and type(self.cell).forward is GRUCell.forward

    def _prepare(self, x: torch.Tensor) -> Optional[torch.dtype]:
        if isinstance(self.cell, _GRUWeights):
            return self.cell._build_for_input(int(x.shape[-1]), x.device)
        build = getattr(self.cell, "build", None)
        if build is not None and not getattr(self.cell, "built", True):
            B = x.shape[1] if self.time_major else x.shape[0]
            build((int(B), int(x.shape[-1])))
        return None

    def _run(self, x, mask, h0, training, T, B):
        if self._fused():
            cell = self.cell
            try:
                masks = cell._cached_dropout_masks(B, x, training)
                outputs, h = cell._run_gru(x, None if h0 is None else h0[0], mask, masks,
                                           go_backwards=self.go_backwards,
                                           time_major=self.time_major,
                                           zero_output_for_mask=self.zero_output_for_mask)
            finally:  # Keras clears the cell's masks after every RNN call
                cell.reset_dropout_mask()
                cell.reset_recurrent_dropout_mask()
            return outputs, [h]
        return self._loop(x, mask, h0, training, T, B)

    def _initial_cell_states(self, B: int, x: torch.Tensor) -> List[torch.Tensor]:
        get = getattr(self.cell, "get_initial_state", None)
        if get is not None:
            states = get(batch_size=B)
            states = list(states) if isinstance(states, (list, tuple)) else [states]
            return [s.to(device=x.device, dtype=x.dtype) for s in states]
        return [x.new_zeros(B, size) for size in self._state_sizes()]

    def _loop(self, x, mask, h0, training, T, B):
        cell = self.cell
        # The cell is stepped here, not by gru(): this is where mask and states are checked.
        check_mask(mask, x, T=T, B=B, time_major=self.time_major, caller="RNN")
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(torch.bool)
        for s, size in zip(h0 or (), self._state_sizes()):
            check_initial_state(s, x, B=B, H=size, what="(batch, state_size)", caller="RNN")
        states = h0 if h0 is not None else self._initial_cell_states(B, x)
        step = cell.forward if isinstance(cell, nn.Module) else cell
        kwargs = {"training": training} if _accepts_kwarg(step, "training") else {}
        outputs, prev = [], None
        for s in range(T):
            t = T - 1 - s if self.go_backwards else s
            x_t = x[t] if self.time_major else x[:, t]
            out, new_states = cell(x_t, states, **kwargs)
            new_states = list(new_states) if isinstance(new_states, (list, tuple)) else [new_states]
            if mask is not None:
                valid = mask[t] if self.time_major else mask[:, t]
                if prev is None:
                    prev = torch.zeros_like(out)
                keep = valid.view(B, *([1] * (out.dim() - 1)))
                out = torch.where(keep, out, torch.zeros_like(out) if self.zero_output_for_mask
                                  else prev)
                new_states = [torch.where(valid.view(B, *([1] * (n.dim() - 1))), n, o)
                              for n, o in zip(new_states, states)]
            prev, states = out, new_states
            outputs.append(out)
        if outputs:
            stacked = torch.stack(outputs, dim=0 if self.time_major else 1)
        else:
            size = getattr(cell, "output_size", None) or self._state_sizes()[0]
            stacked = x.new_zeros((0, B, size) if self.time_major else (B, 0, size))
        return stacked, states

    # ---- weights ------------------------------------------------------------------------------

    @property
    def weights(self) -> List[nn.Parameter]:
        """The cell's weights (Keras order for a GRUCell)."""
        w = getattr(self.cell, "weights", None)
        return list(w) if isinstance(w, (list, tuple)) else list(self.cell.parameters())

    def get_weights(self) -> List[np.ndarray]:
        """The cell's weights as NumPy arrays (Keras order and layout for a GRUCell)."""
        if hasattr(self.cell, "get_weights"):
            return self.cell.get_weights()
        return [_to_numpy(p) for p in self.cell.parameters()]

    def set_weights(self, weights: Sequence) -> None:
        """Sets the cell's weights from arrays (see `get_weights`)."""
        if hasattr(self.cell, "set_weights"):
            return self.cell.set_weights(weights)
        _copy_into(list(self.cell.parameters()), weights, "RNN.set_weights")

    def _clone_cell(self):
        cell = self.cell
        if isinstance(cell, GRUCell) and type(cell).get_config is GRUCell.get_config:
            return type(cell).from_config(cell.get_config())
        if hasattr(cell, "get_config") and hasattr(type(cell), "from_config"):
            return type(cell).from_config(cell.get_config())
        clone = copy.deepcopy(cell)
        if hasattr(clone, "reset_parameters"):  # fresh weights, as Keras' re-creation gives
            clone.reset_parameters()
        return clone

    def get_config(self) -> dict:
        """The constructor arguments; `cell` is the cell object itself."""
        return {"cell": self.cell, **self._recurrent_config()}

    @classmethod
    def from_config(cls, config: dict) -> "RNN":
        """Creates an RNN from `get_config()`'s dict."""
        return cls(**config)

    def extra_repr(self) -> str:
        return self._recurrent_repr()
