"""Random GRU problems: the one builder every test draws its inputs from.

`make_problem` returns the positional arguments of `gru_cuda.functional.gru` and a dict of the
keyword tensors (masks) and layout options, so that `gru(*args, **kw)` runs it. The draws are in
float64 and then cast, so a float32 and a float64 problem from the same generator hold the same
numbers up to rounding.
"""
import math

import torch

ARG_NAMES = ("x", "kernel", "recurrent_kernel", "bias", "initial_state")
MASK_NAMES = ("mask", "input_dropout_mask", "recurrent_dropout_mask")


def make_problem(*, B=3, T=5, F=4, H=6, reset_after=True, bias=True, initial_state=True,
                 mask=False, input_dropout=0, recurrent_dropout=False, time_major=False,
                 dtype=torch.float64, device="cpu", scale=0.5, fan_in=False, bias_scale=None,
                 state_scale=1.0, mask_keep=0.65, keep=0.7, generator=None):
    """Fresh random inputs for `gru()`.

    Args:
        B, T, F, H: batch, time steps, input features, units.
        reset_after: the bias layout: `(2, 3 * H)` when True, `(3 * H,)` when False.
        bias, initial_state: whether to draw them (None otherwise).
        mask: False/None (no mask); True (each step valid with probability `mask_keep`);
            `"random"` (the same, plus batch row 0 fully masked and row 1 fully valid);
            `"right_padded"` / `"left_padded"` (a random valid length per row); `"all_false"`.
        input_dropout: 0/None, 1 or `"shared"` (a `(B, F)` mask), 3 or `"per_gate"`
            (`(3, B, F)`).
        recurrent_dropout: whether to draw a `(3, B, H)` recurrent dropout mask.
        time_major: `x` and `mask` as `(T, B, ...)` instead of `(B, T, ...)`.
        dtype, device: of every floating tensor (the mask is bool on `device`).
        scale: standard deviation of the kernels; with `fan_in`, divided by `sqrt(F)` (kernel)
            and `sqrt(H)` (recurrent kernel), which keeps long sequences tame.
        bias_scale: standard deviation of the bias (default `scale`).
        state_scale: standard deviation of `x` is 1; of the initial state, this.
        keep: keep probability of the dropout masks, which carry inverted scaling `1 / keep`.
        generator: a `torch.Generator` for reproducible draws (the global one when None).

    Returns:
        `(args, kw)`: `args = (x, kernel, recurrent_kernel, bias, initial_state)` and `kw` with
        `reset_after`, `time_major` and the masks that were asked for.
    """
    g = generator
    opts = dict(dtype=dtype, device=device)

    def randn(*shape, std=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).to(**opts)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def dropout(*shape):
        return ((rand(*shape) < keep).to(torch.float64) / keep).to(**opts)

    k_std, u_std = (scale / math.sqrt(max(F, 1)), scale / math.sqrt(max(H, 1))) if fan_in \
        else (scale, scale)
    b_std = scale if bias_scale is None else bias_scale
    x = randn(T, B, F) if time_major else randn(B, T, F)
    kernel = randn(F, 3 * H, std=k_std)
    recurrent_kernel = randn(H, 3 * H, std=u_std)
    b = None
    if bias:
        b = randn(2, 3 * H, std=b_std) if reset_after else randn(3 * H, std=b_std)
    h0 = randn(B, H, std=state_scale) if initial_state else None
    kw = {"reset_after": reset_after, "time_major": time_major}
    if mask:
        m = _mask(mask, B, T, mask_keep, rand, g)  # (B, T)
        kw["mask"] = (m.t().contiguous() if time_major else m).to(device)
    if input_dropout in (1, "shared"):
        kw["input_dropout_mask"] = dropout(B, F)
    elif input_dropout in (3, "per_gate"):
        kw["input_dropout_mask"] = dropout(3, B, F)
    elif input_dropout:
        raise ValueError(f"input_dropout: expected 0, 1, 3, 'shared' or 'per_gate', "
                         f"got {input_dropout!r}")
    if recurrent_dropout:
        kw["recurrent_dropout_mask"] = dropout(3, B, H)
    return (x, kernel, recurrent_kernel, b, h0), kw


def _mask(kind, B, T, mask_keep, rand, g):
    if kind is True or kind == "random":
        m = rand(B, T) < mask_keep
        if kind == "random":  # the two extreme rows: nothing valid, everything valid
            if B > 0:
                m[0] = False
            if B > 1:
                m[1] = True
        return m
    if kind == "all_false":
        return torch.zeros(B, T, dtype=torch.bool)
    if kind in ("right_padded", "left_padded"):
        lengths = torch.randint(0, T + 1, (B, 1), generator=g)
        steps = torch.arange(T).unsqueeze(0)
        return steps < lengths if kind == "right_padded" else steps >= T - lengths
    raise ValueError(f"mask: expected True, 'random', 'right_padded', 'left_padded' or "
                     f"'all_false', got {kind!r}")


def as_dict(args, kw=None):
    """The problem by argument name: ARG_NAMES, plus the three masks (None where absent)."""
    d = dict(zip(ARG_NAMES, args))
    if kw is not None:
        d.update({k: kw.get(k) for k in MASK_NAMES})
    return d


def leaf_copies(args, dtype=None):
    """Independent leaves (requires_grad) of the tensor args, optionally cast."""
    out = []
    for a in args:
        if a is None:
            out.append(None)
        else:
            t = a.detach().clone()
            if dtype is not None:
                t = t.to(dtype)
            out.append(t.requires_grad_(True))
    return out


def run_with_grads(fn, args, kw, grad_out=None, grad_state=None, seed=0):
    """Runs fn(*args, **kw) and returns (outputs, state, grads of the non-None args) for a
    random cotangent fixed by `seed` (the same for every implementation)."""
    outputs, state = fn(*args, **kw)
    g = torch.Generator().manual_seed(seed)
    if grad_out is None:
        grad_out = torch.randn(outputs.shape, generator=g, dtype=torch.float64)
    if grad_state is None:
        grad_state = torch.randn(state.shape, generator=g, dtype=torch.float64)
    loss = (outputs * grad_out.to(outputs)).sum() + (state * grad_state.to(state)).sum()
    leaves = [a for a in args if a is not None]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return outputs, state, grads


OPTION_NAMES = ("go_backwards", "zero_output_for_mask", "activation", "recurrent_activation")


def problem_from_config(cfg, **defaults):
    """make_problem for a test's configuration dict: its OPTION_NAMES go to `kw` as they are,
    every other key to make_problem (over `defaults`)."""
    build = {k: v for k, v in cfg.items() if k not in OPTION_NAMES}
    args, kw = make_problem(**{**defaults, **build})
    kw.update({k: cfg[k] for k in OPTION_NAMES if k in cfg})
    return args, kw


def compare(problem, kw, *, dtype=torch.float64, rtol=1e-10, grad_rtol=1e-10):
    """gru_cuda.functional.gru in `dtype` against the float64 reference on the same
    (dtype-rounded) inputs: outputs, final state and every gradient within the given relative
    tolerances (compare.assert_close_rel). `problem` = make_problem(...); `kw` adds or overrides
    keyword arguments. Returns the reference's (outputs, final_state)."""
    from compare import assert_close_rel
    from gru_cuda import functional, reference

    args, base_kw = problem
    kw = {**base_kw, **kw}
    if dtype != torch.float64:
        for k in ("input_dropout_mask", "recurrent_dropout_mask"):
            if kw.get(k) is not None:
                kw[k] = kw[k].to(dtype)
    out_f, st_f, g_f = run_with_grads(functional.gru, leaf_copies(args, dtype), kw)
    kw64 = {k: (v.to(torch.float64) if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in kw.items()}
    # The reference sees the same (dtype-rounded) inputs: only the arithmetic differs.
    rounded = [None if a is None else a.to(dtype) for a in args]
    out_r, st_r, g_r = run_with_grads(reference.gru, leaf_copies(rounded, torch.float64), kw64)
    assert out_f.dtype == dtype and st_f.dtype == dtype
    assert_close_rel(out_f, out_r, rtol, "outputs")
    assert_close_rel(st_f, st_r, rtol, "final_state")
    names = [n for n, a in zip(ARG_NAMES, args) if a is not None]
    for name, a, b in zip(names, g_f, g_r):
        assert_close_rel(a, b, grad_rtol, f"grad {name}")
    return out_r, st_r


def op_backward_args(problem, *, go_backwards=False, generator=None):
    """The positional arguments of a `gru_cuda::gru_backward` call (without need_grad_x) for a
    `make_problem` problem with a bias and a batch-first x: `gru_forward` with
    save_for_backward runs on a time-major copy of x (tanh / sigmoid), and the output and
    final-state gradients are random (from `generator`). x is at index 2, the output gradient at
    index 0."""
    from gru_cuda import activations

    (x, k, u, b, h0), kw = problem
    ra = kw["reset_after"]
    masks = [kw.get(n) for n in MASK_NAMES]
    if masks[0] is not None:
        masks[0] = masks[0].transpose(0, 1).contiguous()
    ids = activations.FUSED_IDS
    xt = x.transpose(0, 1).contiguous()
    fwd = torch.ops.gru_cuda.gru_forward(xt, k, u, b, h0, *masks, ra, ids["tanh"],
                                         ids["sigmoid"], go_backwards, False, True)
    gy = torch.randn(fwd[0].shape, generator=generator, dtype=x.dtype)
    gs = torch.randn(h0.shape, generator=generator, dtype=x.dtype)
    return (gy, gs, xt, k, u, h0, fwd[2], fwd[3], *masks, True, ra, ids["tanh"], ids["sigmoid"],
            go_backwards, False)
