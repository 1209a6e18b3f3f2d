"""Keras 3 layers on gru_cuda's fused kernels: `GRU`, `GRUCell`, `RNN` (torch backend).

Drop-in replacements for `keras.layers.GRU`, `keras.layers.GRUCell` and `keras.layers.RNN`
(same arguments, weights and configs) whose GRU recurrence runs in gru_cuda's fused op.
Importing this module imports Keras (`import gru_cuda` alone does not) and registers the
layers for `.keras` files under the package name "gru_cuda". Keras must run on the torch
backend: set `KERAS_BACKEND=torch` before Keras is first imported.
"""
from __future__ import annotations

from gru_cuda.keras.cell import GRUCell
from gru_cuda.keras.gru import GRU, RNN

__all__ = ["GRU", "GRUCell", "RNN"]
