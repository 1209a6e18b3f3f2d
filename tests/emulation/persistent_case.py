"""One emulated persistent forward + backward (tests/emulation/pkemu_module.cpp) compared with
the project's CPU op, shared by test_persistent_host_emulation.py (float32, the SIMT product,
against the float32 op) and test_tensor_core_emulation.py (every dtype and recurrent product,
against float64).

The forward's outputs, final state, saved states and workspace are compared directly; the
backward's grad_h0 directly, and the other gradients after the weight-gradient GEMMs of the
stepwise binding (docs/algorithm.md, "After the loop") applied to the kernel's dgates/aux.
With a float64 oracle the inputs are drawn in float64 and rounded to the kernel's dtype, the
oracle runs on the rounded values, and the forward outputs and final state are also compared
with gru_cuda.reference.gru, the float64 executable spec.
"""
import torch

from gru_cuda import reference
from gru_cuda.activations import FUSED_IDS
from compare import max_rel_err
from problems import make_problem

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _p(t):
    return 0 if t is None else t.data_ptr()


def _nan(*shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), dtype=dtype)


def run_case(emu, T, B, F, H, reset_after, path, *, product="simt", dtype=torch.float32,
             oracle=torch.float32, allow_tf32=False, mask=False, rdm=False, go_back=False,
             zero_out=False, act="tanh", ract="sigmoid", sm=4, max_cluster=4, max_bt=0,
             save=True, bias=True, scale=0.5, smem_per_block=232448):
    """Emulated persistent forward + backward of `path` with recurrent `product` in storage
    dtype `dtype`, against the CPU op in `oracle` dtype; returns {quantity: rel. error}.
    Raises AssertionError when the capacity model does not plan that path and product."""
    ra = reset_after
    (x, W, U, b, h0), kw = make_problem(
        B=B, T=T, F=F, H=H, reset_after=ra, bias=bias, mask="random" if mask else False,
        recurrent_dropout=rdm, time_major=True, dtype=oracle, scale=scale, fan_in=True,
        bias_scale=0.3, state_scale=0.5, mask_keep=0.7)
    m, q = kw.get("mask"), kw.get("recurrent_dropout_mask")

    def rounded(t):  # the oracle's copy of what the kernel sees in `dtype`
        return None if t is None else t.to(dtype).to(oracle)

    x, W, U, b, h0, q = map(rounded, (x, W, U, b, h0, q))
    a, r = FUSED_IDS[act], FUSED_IDS[ract]
    out_r, fs_r, st_r, ws_r = torch.ops.gru_cuda.gru_forward(x, W, U, b, h0, m, None, q, ra, a, r,
                                                             go_back, zero_out, True)
    errs = {}
    if oracle == torch.float64:
        out_s, fs_s = reference.gru(x, W, U, b, h0, reset_after=ra, activation=act,
                                    recurrent_activation=ract, go_backwards=go_back,
                                    time_major=True, mask=m, zero_output_for_mask=zero_out,
                                    recurrent_dropout_mask=q)
        errs["spec:outputs"] = max_rel_err(out_r, out_s)
        errs["spec:final_state"] = max_rel_err(fs_r, fs_s)

    b_i = None if b is None else (b[0] if ra else b)
    gx = x.reshape(T * B, F) @ W
    if b_i is not None:
        gx = gx + b_i
    dev = dict(dtype=dtype)
    gx = gx.reshape(T, B, 3 * H).to(dtype).contiguous()
    U_k, h0_k = U.to(dtype).contiguous(), h0.to(dtype).contiguous()
    q_k = None if q is None else q.to(dtype).contiguous()
    bh = b[1].to(dtype).contiguous() if (b is not None and ra) else None
    outs, fin, rh = _nan(T, B, H, **dev), _nan(B, H, **dev), _nan(B, H, **dev)
    st = _nan(T, B, H, **dev) if save else None
    ws = _nan(T, B, (4 if ra else 3) * H, **dev) if save else None
    scratch = None if save else _nan(2, B, H, **dev)
    ws_scratch = None if (save or ra) else _nan(B, 3 * H, **dev)
    case = dict(T=T, B=B, H=H, reset_after=ra, go_backwards=go_back,
                zero_output_for_mask=zero_out, activation=a, recurrent_activation=r, path=path,
                product=product, allow_tf32=allow_tf32, sm_count=sm, max_cluster=max_cluster,
                max_bt=max_bt, smem_per_block=smem_per_block)
    name = DTYPE_NAMES[dtype]
    info = emu.forward(name, case, [_p(t) for t in (gx, U_k, bh, h0_k, m, q_k, outs, st, ws, fin,
                                                     scratch, ws_scratch, rh)])
    assert info.startswith(f"{path} {product} "), info
    errs["outputs"] = max_rel_err(outs, out_r)
    errs["final_state"] = max_rel_err(fin, fs_r)
    if save:
        errs["states"] = max_rel_err(st, st_r)
        errs["workspace"] = max_rel_err(ws, ws_r)

    dY = torch.randn(T, B, H, dtype=oracle).to(dtype).to(oracle)
    dS = torch.randn(B, H, dtype=oracle).to(dtype).to(oracle)
    g_r = torch.ops.gru_cuda.gru_backward(dY, dS, x, W, U, h0, st_r, ws_r, m, None, q,
                                          b is not None, ra, a, r, go_back, zero_out)
    dG, aux, gh0 = _nan(T, B, 3 * H, **dev), _nan(T, B, H, **dev), _nan(B, H, **dev)
    dh_part = _nan(B, H)
    dcarry = torch.zeros(B, H) if (m is not None and not zero_out) else None
    k = [t.to(dtype).contiguous() for t in (dY, dS, st_r, ws_r)]
    info = emu.backward(name, case, [_p(t) for t in (k[0], k[1], U_k, h0_k, k[2], k[3], m, q_k,
                                                     dG, aux, gh0, dh_part, dcarry)])
    assert info.startswith(f"{path} {product} "), info
    errs["grad_h0"] = max_rel_err(gh0, g_r[4])
    # The stepwise binding's GEMMs after the loop, on the kernel's dgates (dG) and aux.
    dG, aux = dG.to(oracle), aux.to(oracle)
    hp = torch.empty(T, B, H, dtype=oracle)
    for s in range(T):
        hp[T - 1 - s if go_back else s] = h0 if s == 0 else st_r[s - 1]
    X2, G2, A2 = x.reshape(T * B, F), dG.reshape(T * B, 3 * H), aux.reshape(T * B, H)
    dgx = torch.cat([G2[:, :2 * H], A2], 1) if ra else G2
    gU = torch.empty(H, 3 * H, dtype=oracle)
    for g in range(3 if ra else 2):
        hq = hp if q is None else hp * q[g]
        gU[:, g * H:(g + 1) * H] = hq.reshape(T * B, H).t() @ G2[:, g * H:(g + 1) * H]
    if not ra:
        gU[:, 2 * H:] = A2.t() @ G2[:, 2 * H:]
    errs["grad_x"] = max_rel_err((dgx @ W.t()).reshape(T, B, F), g_r[0])
    errs["grad_kernel"] = max_rel_err(X2.t() @ dgx, g_r[1])
    errs["grad_recurrent_kernel"] = max_rel_err(gU, g_r[2])
    if b is not None:
        gb = torch.stack([dgx.sum(0), G2.sum(0)]) if ra else G2.sum(0)
        errs["grad_bias"] = max_rel_err(gb, g_r[3])
    return errs


def assert_close(errs, tol=2e-5):
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"relative errors above {tol}: {bad}"
