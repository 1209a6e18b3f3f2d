"""Keras-style recurrent layers over the fused GRU op: `GRU`, `GRUCell`, `RNN`, `Bidirectional`.

They are `torch.nn.Module`s with Keras 3 semantics (argument names and defaults, weight layout,
masking, `go_backwards`, stateful layers, dropout, regularizers, constraints) and they run a
whole sequence through one call of `gru_cuda.functional.gru` (the fused CPU/CUDA kernels):
no per-step Python for a GRU. The README's "The Keras-style layer API" is a tour.

Differences from Keras that come from PyTorch itself:

* `training=None` follows `module.training` (a fresh module is in training mode: call
  `.eval()` for inference), where Keras defaults to inference outside `fit`.
* Weights are created lazily on the first call (like Keras), on the input's device; give
  `input_size=` (or call `build`) to create them up front, e.g. before making an optimizer.
* Regularization penalties are in `layer.losses` but PyTorch optimizers don't add them:
  add `sum(layer.losses)` to your loss. Constraints are applied by `layer.apply_constraints()`
  or `gru_cuda.constraints.attach(optimizer, model)`, never in forward.

The modules: `gru.py` (`GRUCell`, `GRU`), `rnn.py` (`RNN`), `bidirectional.py`
(`Bidirectional`), `compose.py` (the R-keras `layer_*` functions), and their private parts:
`_gru_weights.py` (the GRU weights, base of `GRUCell` and `GRU`), `_base.py` (what every layer
shares) and `_checks.py` (constructor argument checks). The `torch.nn.GRU` conversions are in
`gru_cuda.conversion`; masks and initial states are checked by `gru_cuda._validation`.
"""
from gru_cuda.layers.bidirectional import Bidirectional
from gru_cuda.layers.gru import GRU, GRUCell
from gru_cuda.layers.rnn import RNN

__all__ = ["GRU", "GRUCell", "RNN", "Bidirectional"]
