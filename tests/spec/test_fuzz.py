"""Fuzzed bad and unusual input: always a clear exception or a correct result, never a crash.

Covered, through gru_cuda.functional.gru and the raw ops torch.ops.gru_cuda.gru_forward /
gru_backward (whose checks live in csrc/gru_checks.cpp):

* random mutations of a valid call: wrong shapes and ranks, zero-size dimensions, wrong dtypes
  (integers, bool, complex, mismatched floating types), another device (meta; CPU tensors with
  CUDA inputs when CUDA exists), non-tensors, non-contiguous and overlapping-memory layouts
  (transposed views, `expand`ed stride-0 tensors, overlapping `as_strided` windows);
  an exception must be a ValueError / TypeError / RuntimeError whose message names the
  argument; a result must match gru_cuda.reference.gru (forward and gradients);
* NaN / Inf in one batch row stays in that row (forward and input gradients);
* huge values (1e30) give the reference's (saturated) numbers;
* every single zero-size dimension.

On a GPU the "cuda" variants run the same fuzz on CUDA tensors; run them under
compute-sanitizer to check for illegal memory accesses and races:

    compute-sanitizer --tool memcheck  python -m pytest -q tests/spec/test_fuzz.py -k cuda
    compute-sanitizer --tool racecheck python -m pytest -q tests/spec/test_fuzz.py -k cuda

GRU_FUZZ_ITERATIONS scales the number of random cases (default 1 = the CI size).
"""
from __future__ import annotations

import os
import random
import re

import pytest
import torch

import gru_cuda
from gru_cuda import reference
from gru_cuda.functional import gru

from compare import assert_close_rel
from markers import requires_cuda
from problems import as_dict, make_problem

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]  # the cuda marker skips without a GPU
ITER = max(1, int(os.environ.get("GRU_FUZZ_ITERATIONS", "1")))

ARG_NAMES = ("x", "kernel", "recurrent_kernel", "bias", "initial_state", "mask",
             "input_dropout_mask", "recurrent_dropout_mask")
# The raw op's C++ messages name h0 "initial_state".
ALIASES = {"h0": "initial_state", "initial_state": "h0"}
CLEAR_EXCEPTIONS = (ValueError, TypeError, RuntimeError)


def _problem(rng: random.Random, device, dtype=torch.float32, time_major=False):
    """A random valid call of gru(): (tensors by argument name, options)."""
    B, T, F, H = rng.randint(1, 4), rng.randint(1, 5), rng.randint(1, 4), rng.choice([1, 2, 3, 5])
    reset_after = rng.random() < 0.6
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    bias, h0, mask, r = rng.random() < 0.8, rng.random() < 0.6, rng.random() < 0.5, rng.random()
    args, kw = make_problem(B=B, T=T, F=F, H=H, reset_after=reset_after, bias=bias,
                            initial_state=h0, mask=mask, input_dropout=1 if r < 0.3 else
                            3 if r < 0.5 else 0, recurrent_dropout=rng.random() < 0.4,
                            time_major=time_major, dtype=dtype, device=device, scale=0.5,
                            bias_scale=0.3, mask_keep=0.7, keep=0.75, generator=g)
    a = as_dict(args, kw)
    opts = dict(reset_after=reset_after, go_backwards=rng.random() < 0.5, time_major=time_major,
                zero_output_for_mask=rng.random() < 0.3,
                activation=rng.choice(["tanh", "tanh", "softsign", "relu", "gelu"]),
                recurrent_activation=rng.choice(["sigmoid", "sigmoid", "hard_sigmoid"]))
    return a, opts


# ---- mutations --------------------------------------------------------------------------------
# Each takes (rng, tensor, other device) and returns the replacement value.

def _bad_shape(rng, t, _):
    shape = list(t.shape)
    kind = rng.choice(["grow", "shrink", "add_dim", "drop_dim", "zero"])
    i = rng.randrange(len(shape))
    if kind == "grow":
        shape[i] += rng.randint(1, 2)
    elif kind == "shrink" and shape[i] > 1:
        shape[i] -= 1
    elif kind == "add_dim":
        shape.insert(rng.randrange(len(shape) + 1), rng.randint(1, 2))
    elif kind == "drop_dim" and len(shape) > 1:
        del shape[i]
    else:
        shape[i] = 0
    if t.dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool, device=t.device)
    return torch.randn(shape, dtype=torch.float64).to(t.device, t.dtype)


def _bad_dtype(rng, t, _):
    dtype = rng.choice([torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64,
                        torch.float64, torch.float16, torch.bfloat16, torch.float32])
    if dtype.is_complex:
        return t.to(torch.float32).to(dtype)
    return t.to(dtype)


def _other_device(rng, t, other):
    return t.to(other)


def _not_a_tensor(rng, t, _):
    return rng.choice([t.tolist(), 1.5, "x", object()])


def _non_contiguous(rng, t, _):
    """Same values, other strides: a transposed copy viewed back, or a strided slice."""
    if t.dim() >= 2 and rng.random() < 0.5:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    big = torch.zeros(*t.shape, 2, dtype=t.dtype, device=t.device)
    big[..., 1] = t
    return big[..., 1]


def _expanded(rng, t, _):
    """Stride-0 (overlapping) memory: row 0 repeated along dimension 0."""
    return t[:1].expand(t.shape) if t.dim() >= 1 and t.shape[0] > 0 else t


def _overlapping_windows(rng, t, _):
    """Overlapping as_strided windows over a short buffer: every element aliases others."""
    if t.dim() < 2 or t.numel() == 0:
        return t
    strides = [1] * t.dim()  # every dimension steps by one element: heavy overlap
    size = sum((s - 1) for s in t.shape) + 1
    if t.dtype == torch.bool:
        buf = (torch.rand(size) > 0.3).to(t.device)
    else:
        buf = torch.randn(size, dtype=torch.float64).to(t.device, t.dtype)
    return buf.as_strided(t.shape, strides)


MUTATIONS = {
    "shape": _bad_shape, "dtype": _bad_dtype, "device": _other_device,
    "not_a_tensor": _not_a_tensor, "non_contiguous": _non_contiguous, "expanded": _expanded,
    "overlapping": _overlapping_windows,
}


def _mutate(rng, a, device):
    # meta counts as another device; with CUDA inputs a CPU tensor is the realistic mistake
    other = rng.choice(["cpu", "meta"]) if device == "cuda" else "meta"
    done = []
    for _ in range(rng.choice([1, 1, 1, 2])):
        present = [k for k in ARG_NAMES if isinstance(a[k], torch.Tensor)]
        name = rng.choice(present)
        kind = rng.choice(list(MUTATIONS))
        a[name] = MUTATIONS[kind](rng, a[name], other)
        done.append((name, kind))
    return done


# ---- oracle -----------------------------------------------------------------------------------

def _tol(dtype):
    return {torch.float64: 1e-10, torch.float32: 2e-5}.get(dtype, 3e-2)


def _as_ref(t):
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float64)
    return t.contiguous()


def _cotangents(out, state):
    """Random float64 cotangents for (outputs, final state), drawn in that order."""
    return (torch.randn(out.shape, dtype=torch.float64),
            torch.randn(state.shape, dtype=torch.float64))


def _check_against_reference(a, opts, out, state, grads=None, cot=None):
    ra = {k: _as_ref(v) for k, v in a.items()}
    diff = [k for k in ("x", "kernel", "recurrent_kernel", "bias", "initial_state")
            if ra[k] is not None]
    for k in diff:
        ra[k].requires_grad_(grads is not None)
    want_out, want_state = reference.gru(ra["x"], ra["kernel"], ra["recurrent_kernel"],
                                         ra["bias"], ra["initial_state"],
                                         **{k: ra[k] for k in ARG_NAMES[5:]}, **opts)
    # tol of the scale plus tol of the element: within twice tol of the scale.
    tol = 2 * _tol(a["x"].dtype)
    assert_close_rel(out, want_out, tol, "outputs", equal_nan=True)
    assert_close_rel(state, want_state, tol, "final_state", equal_nan=True)
    if grads is None:
        return
    loss = (want_out * cot[0]).sum() + (want_state * cot[1]).sum()
    want_grads = torch.autograd.grad(loss, [ra[k] for k in diff], allow_unused=True) \
        if loss.requires_grad else (None,) * len(diff)
    for k, got, want in zip(diff, grads, want_grads):
        want = torch.zeros_like(ra[k]) if want is None else want
        got = torch.zeros_like(a[k]) if got is None else got
        assert_close_rel(got, want, tol, f"grad {k}", equal_nan=True)


def _names_an_argument(message: str, names) -> bool:
    """The message names one of `names` as a word (so "kernel" is not found in
    "recurrent_kernel", nor "x" in "expected")."""
    names = set(names) | {ALIASES[n] for n in names if n in ALIASES}
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message)
               for n in names)


def _run_functional_case(rng, device, with_grad):
    a, opts = _problem(rng, device, dtype=rng.choice([torch.float32, torch.float64]),
                       time_major=rng.random() < 0.3)
    done = _mutate(rng, a, device)
    diff = []
    if with_grad:
        for k in ("x", "kernel", "recurrent_kernel", "bias", "initial_state"):
            t = a[k]
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type != "meta":
                a[k] = t.detach().requires_grad_()  # same storage and strides as mutated
                diff.append(k)
    try:
        out, state = gru(*(a[k] for k in ARG_NAMES[:5]), **{k: a[k] for k in ARG_NAMES[5:]},
                         **opts)
    except CLEAR_EXCEPTIONS as e:
        msg = str(e)
        assert msg.startswith("gru:"), (done, msg)
        # A mismatch between two arguments may be reported on either of them (a wrong F in x
        # is reported as a kernel of the wrong shape): some argument must be named.
        assert _names_an_argument(msg, ARG_NAMES), (done, msg)
        return "error"
    assert out.device == state.device == a["x"].device, done
    if out.device.type == "meta":
        return "meta"
    if not with_grad or not diff:
        _check_against_reference(a, opts, out, state)
        return "ok"
    cot = _cotangents(out, state)
    loss = (out * cot[0].to(out)).sum() + (state * cot[1].to(state)).sum()
    grads = torch.autograd.grad(loss, [a[k] for k in diff], allow_unused=True) \
        if loss.requires_grad else [None] * len(diff)
    ga = dict(zip(diff, grads))
    full = [ga.get(k) for k in ("x", "kernel", "recurrent_kernel", "bias", "initial_state")
            if a[k] is not None]
    if len(diff) != len(full):  # a non-float tensor slipped through: the forward check suffices
        _check_against_reference(a, opts, out, state)
        return "ok"
    _check_against_reference(a, opts, out, state, grads=full, cot=cot)
    return "ok"


@pytest.mark.parametrize("device", DEVICES)
def test_fuzz_functional(device):
    rng = random.Random(1234)
    outcomes = {"error": 0, "ok": 0, "meta": 0}
    for i in range(400 * ITER):
        outcomes[_run_functional_case(rng, device, with_grad=i % 2 == 0)] += 1
    # The fuzz must exercise both sides: rejected input and accepted unusual layouts.
    assert outcomes["error"] > 100 and outcomes["ok"] > 50, outcomes


# ---- raw ops ----------------------------------------------------------------------------------

RAW_NAMES = ("x", "kernel", "recurrent_kernel", "bias", "h0", "mask", "input_dropout_mask",
             "recurrent_dropout_mask")


def _raw_problem(rng, device):
    a, opts = _problem(rng, device, dtype=rng.choice([torch.float32, torch.float64]),
                       time_major=True)
    if a["initial_state"] is None:
        B, H = a["x"].shape[1], a["recurrent_kernel"].shape[0]
        a["initial_state"] = torch.zeros(B, H, dtype=a["x"].dtype, device=device)
    ids = gru_cuda.activations.FUSED_IDS
    raw = dict(x=a["x"], kernel=a["kernel"], recurrent_kernel=a["recurrent_kernel"],
               bias=a["bias"], h0=a["initial_state"].contiguous(), mask=a["mask"],
               input_dropout_mask=a["input_dropout_mask"],
               recurrent_dropout_mask=a["recurrent_dropout_mask"])
    flags = (opts["reset_after"], ids[opts["activation"]], ids[opts["recurrent_activation"]],
             opts["go_backwards"], opts["zero_output_for_mask"])
    return raw, flags, opts


def _raw_forward(raw, flags, save=True):
    ra, act, ract, gb, zo = flags
    return torch.ops.gru_cuda.gru_forward(*(raw[k] for k in RAW_NAMES), ra, act, ract, gb, zo, save)


def _raw_backward(raw, flags, dy, dS, states, ws):
    ra, act, ract, gb, zo = flags
    return torch.ops.gru_cuda.gru_backward(
        dy, dS, raw["x"], raw["kernel"], raw["recurrent_kernel"], raw["h0"], states, ws,
        raw["mask"], raw["input_dropout_mask"], raw["recurrent_dropout_mask"],
        raw["bias"] is not None, ra, act, ract, gb, zo)


def _contiguous_copy(raw):
    return {k: (v.contiguous().clone() if isinstance(v, torch.Tensor) else v)
            for k, v in raw.items()}


@pytest.mark.parametrize("device", DEVICES)
def test_fuzz_raw_forward(device):
    """Mutated raw gru_forward calls: a clear error, or exactly the result on contiguous copies.

    (Meta tensors are left out here: a meta tensor routes the call to the fake kernel, see
    test_devices.py.)"""
    rng = random.Random(99)
    outcomes = {"error": 0, "ok": 0}
    for _ in range(300 * ITER):
        raw, flags, _ = _raw_problem(rng, device)
        present = [k for k in RAW_NAMES if raw[k] is not None]
        name = rng.choice(present)
        kind = rng.choice([k for k in MUTATIONS if k != "device"] +
                          (["device"] if device == "cuda" else []))
        raw[name] = MUTATIONS[kind](rng, raw[name], "cpu")
        if rng.random() < 0.15:  # out-of-range activation ids
            flags = (flags[0], rng.choice([-1, 12, 10**6]), flags[2], flags[3], flags[4])
        try:
            got = _raw_forward(raw, flags)
        except CLEAR_EXCEPTIONS as e:
            msg = str(e)
            assert _names_an_argument(msg, RAW_NAMES + ("initial_state", "activation",
                                                        "recurrent_activation")), (name, kind, msg)
            outcomes["error"] += 1
            continue
        want = _raw_forward(_contiguous_copy(raw), flags)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
        outcomes["ok"] += 1
    assert outcomes["error"] > 80 and outcomes["ok"] > 40, outcomes


@pytest.mark.parametrize("device", DEVICES)
def test_fuzz_raw_backward(device):
    """Mutated gradients and saved tensors of gru_backward: a clear error, or exactly the result
    on contiguous copies."""
    rng = random.Random(7)
    outcomes = {"error": 0, "ok": 0}
    for _ in range(200 * ITER):
        raw, flags, _ = _raw_problem(rng, device)
        out, final, states, ws = _raw_forward(raw, flags)
        grads = dict(dy=torch.randn_like(out), dS=torch.randn_like(final), states=states, ws=ws)
        name = rng.choice(list(grads))
        kind = rng.choice(["shape", "dtype", "non_contiguous", "expanded", "overlapping",
                           "not_a_tensor"] + (["device"] if device == "cuda" else []))
        grads[name] = MUTATIONS[kind](rng, grads[name], "cpu")
        try:
            got = _raw_backward(raw, flags, **grads)
        except CLEAR_EXCEPTIONS as e:
            msg = str(e)
            named = {"dy": "grad_outputs", "dS": "grad_final_state", "states": "states",
                     "ws": "workspace"}[name]
            assert _names_an_argument(msg, [named]), (name, kind, msg)
            outcomes["error"] += 1
            continue
        want = _raw_backward(raw, flags, **_contiguous_copy(grads))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
        outcomes["ok"] += 1
    assert outcomes["error"] > 50 and outcomes["ok"] > 30, outcomes


def test_raw_backward_without_saved_tensors_is_an_error():
    rng = random.Random(3)
    raw, flags, _ = _raw_problem(rng, "cpu")
    out, final, states, ws = _raw_forward(raw, flags, save=False)
    assert states.shape == (0,) and ws.shape == (0,)
    with pytest.raises(ValueError, match="states"):
        _raw_backward(raw, flags, torch.ones_like(out), torch.ones_like(final), states, ws)


def test_autograd_through_inference_forward_is_an_error():
    """A raw forward with save_for_backward=False cannot be differentiated: a clear error."""
    rng = random.Random(5)
    raw, flags, _ = _raw_problem(rng, "cpu")
    raw["x"] = raw["x"].detach().requires_grad_()
    out, final, _, _ = _raw_forward(raw, flags, save=False)
    with pytest.raises(RuntimeError, match="save_for_backward"):
        out.sum().backward()


# ---- NaN / Inf / huge values ------------------------------------------------------------------

OPTION_SETS = [
    dict(reset_after=True),
    dict(reset_after=False),
    dict(reset_after=True, go_backwards=True, mask=True),
    dict(reset_after=False, mask=True, zero_output_for_mask=True, input_dropout=3,
         recurrent_dropout=True),
    dict(reset_after=True, time_major=True, input_dropout=1, recurrent_dropout=True),
]


def _options_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items())


def _options_problem(device, dtype, B=4, T=6, F=3, H=5, seed=0, reset_after=True, mask=False,
                     input_dropout=0, recurrent_dropout=False, time_major=False, **opts):
    args, kw = make_problem(B=B, T=T, F=F, H=H, reset_after=reset_after, mask=mask,
                            input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                            time_major=time_major, dtype=dtype, device=device, scale=0.5,
                            bias_scale=0.3, mask_keep=0.7, keep=0.75,
                            generator=torch.Generator().manual_seed(seed))
    opts = dict(opts, reset_after=reset_after, time_major=time_major)
    return as_dict(args, kw), opts


def _call(a, opts):
    return gru(*(a[k] for k in ARG_NAMES[:5]), **{k: a[k] for k in ARG_NAMES[5:]}, **opts)


def _batch_rows(t, time_major):
    """Splits an output (B, T, H) / (T, B, H) or a state (B, H) into per-batch-row views."""
    if t.dim() == 3 and time_major:
        t = t.transpose(0, 1)
    return t


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("where", ["x", "initial_state"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("options", OPTION_SETS, ids=_options_id)
def test_non_finite_stays_in_its_row(device, where, value, options):
    bad = 1
    a, opts = _options_problem(device, torch.float32, **options)
    clean, _ = _options_problem(device, torch.float32, **options)
    time_major = opts["time_major"]
    if where == "x":
        t = a["x"].transpose(0, 1) if time_major else a["x"]
        t[bad, 2, 1] = value  # one element of one row at one step
    else:
        a["initial_state"][bad, 0] = value
    for d in (a, clean):
        for k in ("x", "initial_state"):
            d[k].requires_grad_()
    out, state = _call(a, opts)
    out_c, state_c = _call(clean, opts)
    (out.sum() + state.sum()).backward()
    (out_c.sum() + state_c.sum()).backward()
    rows = torch.ones(a["x"].shape[1 if time_major else 0], dtype=torch.bool)
    rows[bad] = False
    for got, want in ((out, out_c), (a["x"].grad, clean["x"].grad)):
        g, w = _batch_rows(got.detach(), time_major), _batch_rows(want.detach(), time_major)
        torch.testing.assert_close(g[rows], w[rows], rtol=0, atol=0)  # other rows untouched
    torch.testing.assert_close(state.detach()[rows], state_c.detach()[rows], rtol=0, atol=0)
    torch.testing.assert_close(a["initial_state"].grad[rows], clean["initial_state"].grad[rows],
                               rtol=0, atol=0)
    if value != value:  # NaN reaches the bad row (unless masked away at every later step)
        g = _batch_rows(out.detach(), time_major)[bad]
        assert torch.isnan(g).any() or options.get("mask")


@pytest.mark.parametrize("device", DEVICES)
def test_nan_at_a_masked_step_does_not_leak(device):
    """The mask selects, never multiplies: NaN input at a masked step leaves no trace in the
    outputs or state (Keras semantics; the reference does the same)."""
    a, opts = _options_problem(device, torch.float64, mask=True, reset_after=False)
    a["mask"][:, 2] = False
    a["x"][:, 2, :] = float("nan")
    out, state = _call(a, opts)
    assert torch.isfinite(out).all() and torch.isfinite(state).all()
    _check_against_reference(a, opts, out, state)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("where", ["x", "kernel", "recurrent_kernel", "bias", "initial_state"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_huge_values_match_reference(device, dtype, where, reset_after):
    a, opts = _options_problem(device, dtype, reset_after=reset_after, mask=True, seed=3)
    g = torch.Generator().manual_seed(1)
    t = a[where]
    pick = torch.rand(t.shape, generator=g) < 0.3
    huge = (torch.sign(torch.randn(t.shape, generator=g)) * 1e30).to(device, dtype)
    t[pick.to(device)] = huge[pick.to(device)]
    for k in ("x", "kernel", "recurrent_kernel", "bias", "initial_state"):
        a[k].requires_grad_()
    out, state = _call(a, opts)
    assert torch.isfinite(out).all() and torch.isfinite(state).all()  # tanh/sigmoid saturate
    cot = _cotangents(out, state)
    loss = (out * cot[0].to(out)).sum() + (state * cot[1].to(state)).sum()
    names = ("x", "kernel", "recurrent_kernel", "bias", "initial_state")
    grads = torch.autograd.grad(loss, [a[k] for k in names])
    _check_against_reference(a, opts, out, state, grads=list(grads), cot=cot)


# ---- zero-size dimensions ---------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", ["B", "T", "F", "H"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=_options_id)
def test_zero_size_dimension(device, dim, options):
    sizes = dict(B=3, T=4, F=2, H=3)
    sizes[dim] = 0
    a, opts = _options_problem(device, torch.float64, **sizes, **options)
    for k in ("x", "kernel", "recurrent_kernel", "bias", "initial_state"):
        a[k].requires_grad_()
    out, state = _call(a, opts)
    B, T, H = sizes["B"], sizes["T"], sizes["H"]
    assert tuple(out.shape) == ((T, B, H) if opts["time_major"] else (B, T, H))
    assert tuple(state.shape) == (B, H)
    cot = _cotangents(out, state)
    loss = (out * cot[0].to(out)).sum() + (state * cot[1].to(state)).sum()
    names = ("x", "kernel", "recurrent_kernel", "bias", "initial_state")
    grads = torch.autograd.grad(loss, [a[k] for k in names], allow_unused=True) \
        if loss.requires_grad else [None] * 5
    for k, gr in zip(names, grads):
        if gr is not None:
            assert gr.shape == a[k].shape and torch.isfinite(gr).all(), k
    if dim == "H":
        # No units: nothing depends on x. (reference.gru cannot split a (F, 0) kernel into gate
        # blocks, so the expected values are written out here.)
        assert grads[0] is None or torch.equal(grads[0], torch.zeros_like(a["x"]))
        return
    _check_against_reference(a, opts, out, state, grads=list(grads), cot=cot)


# ---- low-precision dtypes ---------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("options", OPTION_SETS, ids=_options_id)
def test_low_precision_dtypes_match_reference(device, dtype, options):
    """float16 / bfloat16 throughout (computed in float32): results and gradients of that
    dtype, within its precision of the float64 reference."""
    a, opts = _options_problem(device, dtype, **options)
    names = ("x", "kernel", "recurrent_kernel", "bias", "initial_state")
    for k in names:
        a[k].requires_grad_()
    out, state = _call(a, opts)
    assert out.dtype == state.dtype == dtype
    cot = _cotangents(out, state)
    loss = (out.float() * cot[0].to(out.device, torch.float32)).sum() + \
        (state.float() * cot[1].to(state.device, torch.float32)).sum()
    grads = torch.autograd.grad(loss, [a[k] for k in names])
    assert all(g.dtype == dtype for g in grads)
    _check_against_reference(a, opts, out, state, grads=list(grads), cot=cot)
