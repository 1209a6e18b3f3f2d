"""gru_cuda.keras.GRU in a Keras 3 model, next to keras.layers.GRU with the same weights.

A text-like task: integer sequences padded with zeros at random places (Embedding with
mask_zero=True, so the mask has holes), the target is the mean of the non-padding tokens /
vocab. Two identical models are built, one with keras.layers.GRU and one with
gru_cuda.keras.GRU (reset_after=False and recurrent dropout: Keras' per-step loop on the torch
backend), given the same initial weights and trained with the same batches. The script prints
both loss histories (equal to rounding), the time per epoch of each, and saves and reloads the
gru_cuda model as a .keras file.

    KERAS_BACKEND=torch python examples/keras_gru.py            # CPU or GPU, about a minute
    KERAS_BACKEND=torch python examples/keras_gru.py --epochs 5 --seq-len 200
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import keras  # noqa: E402
import numpy as np  # noqa: E402

import gru_cuda.keras  # noqa: E402  (registers gru_cuda>GRU for .keras files)


def make_data(n, seq_len, vocab, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, size=(n, seq_len)).astype("int32")
    x[rng.random((n, seq_len)) < 0.25] = 0  # padding anywhere: a mask with holes
    kept = np.maximum((x > 0).sum(1, keepdims=True), 1)
    y = (x.sum(1, keepdims=True) / kept / vocab).astype("float32")
    return x, y


def make_model(gru_layer, seq_len, vocab, units):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((seq_len,), dtype="int32"),
        keras.layers.Embedding(vocab, 16, mask_zero=True),
        gru_layer(units, reset_after=False, recurrent_dropout=0.1, dropout=0.1, seed=1,
                  return_sequences=True),
        gru_layer(units // 2),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--samples", type=int, default=512)
    args = p.parse_args()
    vocab = 50
    x, y = make_data(args.samples, args.seq_len, vocab, seed=0)

    theirs = make_model(keras.layers.GRU, args.seq_len, vocab, args.units)
    ours = make_model(gru_cuda.keras.GRU, args.seq_len, vocab, args.units)
    ours.set_weights(theirs.get_weights())  # same layout: an exact copy

    history = {}
    for name, model in (("keras.layers.GRU", theirs), ("gru_cuda.keras.GRU", ours)):
        t0 = time.perf_counter()
        h = model.fit(x, y, epochs=args.epochs, batch_size=64, shuffle=False, verbose=0)
        per_epoch = (time.perf_counter() - t0) / args.epochs
        history[name] = h.history["loss"]
        losses = " ".join(f"{v:.5f}" for v in h.history["loss"])
        print(f"{name:<20} loss per epoch: {losses}   ({per_epoch:.2f} s/epoch)")
    gap = np.max(np.abs(np.subtract(*history.values())) / np.abs(history["keras.layers.GRU"]))
    print(f"largest relative difference of the two loss histories: {gap:.1e}")

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        ours.save(path)
        loaded = keras.saving.load_model(path)
    same = np.array_equal(keras.ops.convert_to_numpy(loaded(x[:8])),
                          keras.ops.convert_to_numpy(ours(x[:8])))
    print(f"reloaded from .keras: {type(loaded.layers[1]).__module__}."
          f"{type(loaded.layers[1]).__name__}, same outputs: {same}")


if __name__ == "__main__":
    main()
