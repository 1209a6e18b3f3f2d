"""The old name of gru_cuda.layers.compose (the R-keras `layer_*` functions)."""
from gru_cuda.layers.compose import *  # noqa: F401,F403
