"""The CUDA stepwise path (csrc/cuda/gru_cuda_impl.cpp + csrc/kernels/) on a GPU.

Every result is compared with the float64 reference (gru_cuda.reference on the CPU) on fresh
random inputs (reproducible with GRU_TEST_SEED), or with cuDNN (torch.nn.GRU), or with itself
(determinism, CUDA graphs). Skipped cleanly without a GPU or without a CUDA build.
Under compute-sanitizer, run tests/cuda_sanitizer_targets.py instead (smaller, no pytest).
"""

import pytest
import torch

import gru_cuda
from gru_cuda import reference
from gru_cuda.activations import FUSED_IDS, FUSED_NAMES
from gru_cuda.functional import gru

from conftest import assert_close_rel
from cuda_problems import ARG_NAMES, make_problem, prepare_args

CUDA = torch.cuda.is_available() and gru_cuda.build_info()["cuda"]
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and a CUDA build of gru_cuda")]

# (forward, gradient) tolerances, relative to max(|reference|, 1).
TOL = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (2e-5, 5e-5),
    torch.float16: (1e-2, 1.5e-2),
    torch.bfloat16: (2e-2, 3e-2),
}
DTYPES = list(TOL)


@pytest.fixture(autouse=True)
def _exact_fp32():
    """float32 must be exact fp32: make sure TF32 is off whatever the environment says."""
    if not CUDA:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def poison_allocator():
    """Leaves the caching allocator's free blocks filled with 0xFF bytes (NaN in every float
    dtype), so that an element a kernel forgets to write shows up as NaN."""
    torch.cuda.synchronize()
    blocks = [torch.empty(64 << 20, dtype=torch.uint8, device="cuda").fill_(255)]  # large pool
    blocks += [torch.empty(256 << 10, dtype=torch.uint8, device="cuda").fill_(255)
               for _ in range(32)]  # small pool
    torch.cuda.synchronize()
    del blocks


def _run(fn, args, kw, grad_out, grad_state):
    out, state = fn(*args, **kw)
    loss = (out * grad_out.to(out)).sum() + (state * grad_state.to(state)).sum()
    leaves = [a for a in args if a is not None]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * len(leaves)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(leaves, grads)]
    return out, state, grads


def check_against_reference(p, kw, dtype, *, grads=True, **options):
    """CUDA fused path in `dtype` vs the float64 CPU reference: outputs, state, all gradients."""
    ref_args, ref_kw = prepare_args(p, kw, torch.float64, "cpu")
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    out_shape_probe, state_probe = reference.gru(*[None if a is None else a.detach() for a in ref_args],
                                                 **ref_kw, **options)
    grad_out = torch.randn(out_shape_probe.shape, dtype=torch.float64)
    grad_state = torch.randn(state_probe.shape, dtype=torch.float64)
    r_out, r_state, r_grads = _run(lambda *a, **k: reference.gru(*a, **k, **options), ref_args, ref_kw,
                                   grad_out, grad_state)
    poison_allocator()
    c_out, c_state, c_grads = _run(lambda *a, **k: gru(*a, **k, **options), args, ckw,
                                   grad_out.cuda(), grad_state.cuda())
    assert c_out.device.type == "cuda" and c_out.dtype == dtype
    tol_f, tol_g = TOL[dtype]
    assert_close_rel(c_out, r_out, tol_f, "outputs")
    assert_close_rel(c_state, r_state, tol_f, "final_state")
    if grads:
        names = [n for n, a in zip(ARG_NAMES, ref_args) if a is not None]
        for n, c, r in zip(names, c_grads, r_grads):
            assert c.dtype == dtype, n
            assert_close_rel(c, r, tol_g, f"grad {n}")


SCENARIOS = {
    "plain": dict(),
    "go_backwards": dict(options=dict(go_backwards=True)),
    "time_major": dict(problem=dict(time_major=True)),
    "no_bias": dict(problem=dict(bias=False)),
    "no_initial_state": dict(problem=dict(h0=False)),
    "mask": dict(problem=dict(mask="random")),
    "mask_zero_output": dict(problem=dict(mask="random"), options=dict(zero_output_for_mask=True)),
    "right_padded_backwards": dict(problem=dict(mask="right_padded"), options=dict(go_backwards=True)),
    "left_padded_zero_output": dict(problem=dict(mask="left_padded"),
                                    options=dict(zero_output_for_mask=True)),
    "input_dropout_shared": dict(problem=dict(idm="shared")),
    "input_dropout_per_gate": dict(problem=dict(idm="per_gate")),
    "recurrent_dropout": dict(problem=dict(rdm=True)),
    "everything": dict(problem=dict(mask="random", idm="per_gate", rdm=True, time_major=True),
                       options=dict(go_backwards=True)),
    "everything_zero_output_no_bias": dict(problem=dict(mask="random", idm="shared", rdm=True, bias=False),
                                           options=dict(go_backwards=True, zero_output_for_mask=True)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_options_against_reference(scenario, reset_after, dtype):
    s = SCENARIOS[scenario]
    p, kw = make_problem(7, 5, 6, 33, reset_after=reset_after, **s.get("problem", {}))
    check_against_reference(p, kw, dtype, **s.get("options", {}))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("role", ["activation", "recurrent_activation"])
@pytest.mark.parametrize("name", FUSED_NAMES)
def test_every_activation(name, role, reset_after, dtype):
    other = {"activation": "tanh", "recurrent_activation": "sigmoid"}
    other[role] = name
    # Small weights keep unbounded activations from blowing the state up over the steps; an
    # unbounded recurrent activation (z, r outside [0, 1]) needs them smaller still.
    bounded = ("sigmoid", "hard_sigmoid", "tanh", "softsign")
    scale = 0.1 if role == "recurrent_activation" and name not in bounded else 0.3
    p, kw = make_problem(6, 3, 4, 9, reset_after=reset_after, mask="random", rdm=True, scale=scale)
    check_against_reference(p, kw, dtype, **other)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("T,B,F,H", [(1, 1, 3, 5), (3, 1, 2, 33), (1, 4, 5, 1), (9, 2, 1, 65),
                                     (4, 300, 3, 7), (0, 3, 4, 5), (5, 0, 4, 5), (0, 0, 4, 5),
                                     (4, 3, 0, 5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_shapes(T, B, F, H, reset_after, dtype):
    p, kw = make_problem(T, B, F, H, reset_after=reset_after, mask="random" if T * B else None,
                         rdm=True)
    check_against_reference(p, kw, dtype)


def test_many_rows_bias_reduction():
    # T·B far above one column-sum chunk (256 rows): the multi-chunk reduction path.
    for reset_after in (True, False):
        p, kw = make_problem(60, 40, 3, 10, reset_after=reset_after, mask="random")
        check_against_reference(p, kw, torch.float32)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5),
                                       (torch.float16, 1e-2)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_cudnn(dtype, tol, bias):
    def reorder(a):  # Keras [z | r | h] <-> torch [r | z | n]
        z, r, h = a.chunk(3, dim=-1)
        return torch.cat([r, z, h], dim=-1)

    B, T, F, H = 8, 11, 12, 40
    net = torch.nn.GRU(F, H, batch_first=True, bias=bias).to(device="cuda", dtype=dtype)
    net.flatten_parameters()
    kernel = reorder(net.weight_ih_l0.detach().t()).contiguous().requires_grad_(True)
    recurrent = reorder(net.weight_hh_l0.detach().t()).contiguous().requires_grad_(True)
    b = None
    if bias:
        b = torch.stack([reorder(net.bias_ih_l0.detach()), reorder(net.bias_hh_l0.detach())])
        b.requires_grad_(True)
    x = torch.randn(B, T, F, device="cuda", dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, device="cuda", dtype=dtype, requires_grad=True)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        expected, h_n = net(x, h0.unsqueeze(0))
    out, state = gru(x, kernel, recurrent, b, h0)
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(state, h_n[0], rtol=tol, atol=tol)
    g = torch.randn_like(out)
    mine = torch.autograd.grad((out * g).sum(), [x, h0, kernel, recurrent] + ([b] if bias else []))
    theirs = torch.autograd.grad((expected * g).sum(), [x, h0, net.weight_ih_l0, net.weight_hh_l0]
                                 + ([net.bias_ih_l0, net.bias_hh_l0] if bias else []))
    gtol = tol * 10
    torch.testing.assert_close(mine[0], theirs[0], rtol=gtol, atol=gtol)
    torch.testing.assert_close(mine[1], theirs[1], rtol=gtol, atol=gtol)
    torch.testing.assert_close(mine[2], reorder(theirs[2].t()), rtol=gtol, atol=gtol)
    torch.testing.assert_close(mine[3], reorder(theirs[3].t()), rtol=gtol, atol=gtol)
    if bias:
        torch.testing.assert_close(mine[4][0], reorder(theirs[4]), rtol=gtol, atol=gtol)
        torch.testing.assert_close(mine[4][1], reorder(theirs[5]), rtol=gtol, atol=gtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_deterministic(reset_after, dtype):
    # 40 x 16 rows: the bias reduction runs over several chunks.
    p, kw = make_problem(40, 16, 24, 48, reset_after=reset_after, mask="random", rdm=True,
                         idm="per_gate")
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    grad_out = torch.randn(16, 40, 48, dtype=torch.float64).cuda()
    grad_state = torch.randn(16, 48, dtype=torch.float64).cuda()
    first = _run(gru, args, ckw, grad_out, grad_state)
    poison_allocator()
    second = _run(gru, args, ckw, grad_out, grad_state)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    for a, b in zip(first[2], second[2]):
        assert torch.equal(a, b)


def _raw_forward(p, kw, dtype, save, reset_after=True, go_backwards=False, zero_output=False):
    """The raw op (time-major, explicit initial state) on the problem's inputs."""
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    x, k, u, b, h0 = [None if a is None else a.detach() for a in args]
    mask = ckw.get("mask")
    if not kw["time_major"]:
        x = x.transpose(0, 1)
        mask = None if mask is None else mask.t()
    if h0 is None:
        h0 = x.new_zeros(x.shape[1], u.shape[0])
    return torch.ops.gru_cuda.gru_forward(
        x, k, u, b, h0, mask, ckw.get("input_dropout_mask"),
        ckw.get("recurrent_dropout_mask"), reset_after, FUSED_IDS["tanh"], FUSED_IDS["sigmoid"],
        go_backwards, zero_output, save)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("save", [False, True])
def test_cuda_graph_capture_forward(reset_after, save):
    """A captured forward replays correctly: the op neither synchronises nor depends on host
    state inside the loop."""
    p, kw = make_problem(12, 6, 5, 20, reset_after=reset_after, mask="random", rdm=True,
                         idm="shared", time_major=True)
    args, ckw = prepare_args(p, kw, torch.float32, "cuda")
    static = [None if a is None else a.detach().clone() for a in args]
    static_kw = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in ckw.items()}

    def call():
        x, k, u, b, h0 = static
        return torch.ops.gru_cuda.gru_forward(
            x, k, u, b, h0, static_kw["mask"], static_kw["input_dropout_mask"],
            static_kw["recurrent_dropout_mask"], reset_after, FUSED_IDS["tanh"],
            FUSED_IDS["sigmoid"], True, False, save)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (cuBLAS handles, workspaces)
        for _ in range(2):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = call()
    # New data into the static inputs, replay, compare with an eager run on the same data.
    static[0].copy_(torch.randn_like(static[0]))
    static[4].copy_(torch.randn_like(static[4]))
    static_kw["mask"].copy_(torch.rand(static_kw["mask"].shape, device="cuda") > 0.5)
    graph.replay()
    torch.cuda.synchronize()
    eager = call()
    # Not bitwise: cuBLAS may use another workspace on the capture stream.
    for c, e in zip(captured, eager):
        torch.testing.assert_close(c, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_cuda_graph_capture_backward(reset_after):
    p, kw = make_problem(9, 4, 5, 17, reset_after=reset_after, mask="random", rdm=True,
                         idm="per_gate", time_major=True)
    outs = _raw_forward(p, kw, torch.float32, True, reset_after=reset_after)
    args, ckw = prepare_args(p, kw, torch.float32, "cuda")
    x, k, u, b, h0 = [a.detach() for a in args]
    gY = torch.randn_like(outs[0])
    gS = torch.randn_like(outs[1])

    def call():
        return torch.ops.gru_cuda.gru_backward(
            gY, gS, x, k, u, h0, outs[2], outs[3], ckw["mask"], ckw["input_dropout_mask"],
            ckw["recurrent_dropout_mask"], True, reset_after, FUSED_IDS["tanh"],
            FUSED_IDS["sigmoid"], False, False)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = call()
    gY.copy_(torch.randn_like(gY))
    graph.replay()
    torch.cuda.synchronize()
    for c, e in zip(captured, call()):
        torch.testing.assert_close(c, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_saved_tensors_match_cpu_op(reset_after, go_backwards):
    """states and workspace have the CPU op's layout (float64: equal to rounding), and the raw
    backward op agrees with the CPU one."""
    p, kw = make_problem(6, 4, 5, 11, reset_after=reset_after, mask="random", rdm=True,
                         idm="per_gate", time_major=True)
    cuda_outs = _raw_forward(p, kw, torch.float64, True, reset_after, go_backwards)
    args, ckw = prepare_args(p, kw, torch.float64, "cpu")
    x, k, u, b, h0 = [a.detach() for a in args]
    cpu_outs = torch.ops.gru_cuda.gru_forward(
        x, k, u, b, h0, ckw["mask"], ckw["input_dropout_mask"], ckw["recurrent_dropout_mask"],
        reset_after, FUSED_IDS["tanh"], FUSED_IDS["sigmoid"], go_backwards, False, True)
    for name, c, r in zip(("outputs", "final_state", "states", "workspace"), cuda_outs, cpu_outs):
        assert c.shape == r.shape, name
        assert_close_rel(c, r, 1e-12, name)
    gY = torch.randn_like(cpu_outs[0])
    gS = torch.randn_like(cpu_outs[1])
    common = (ckw["mask"], ckw["input_dropout_mask"], ckw["recurrent_dropout_mask"], True,
              reset_after, FUSED_IDS["tanh"], FUSED_IDS["sigmoid"], go_backwards, False)
    cpu_grads = torch.ops.gru_cuda.gru_backward(gY, gS, x, k, u, h0, cpu_outs[2], cpu_outs[3], *common)
    to = lambda t: None if t is None else t.cuda()
    cuda_grads = torch.ops.gru_cuda.gru_backward(
        gY.cuda(), gS.cuda(), x.cuda(), k.cuda(), u.cuda(), h0.cuda(), cuda_outs[2], cuda_outs[3],
        *[to(c) if isinstance(c, torch.Tensor) or c is None else c for c in common])
    for name, c, r in zip(("x", "kernel", "recurrent_kernel", "bias", "h0"), cuda_grads, cpu_grads):
        assert_close_rel(c, r, 1e-10, f"grad {name}")


def test_inference_matches_training_forward():
    for reset_after in (True, False):
        p, kw = make_problem(8, 3, 4, 10, reset_after=reset_after, mask="random", rdm=True)
        saved = _raw_forward(p, kw, torch.float32, True, reset_after)
        poison_allocator()
        plain = _raw_forward(p, kw, torch.float32, False, reset_after)
        assert torch.equal(saved[0], plain[0]) and torch.equal(saved[1], plain[1])
        assert plain[2].shape == (0,) and plain[3].shape == (0,)
        assert saved[3].shape == (8, 3, (4 if reset_after else 3) * 10)


def test_bad_activation_id_rejected():
    p, kw = make_problem(3, 2, 4, 5, reset_after=True)
    args, _ = prepare_args(p, kw, torch.float32, "cuda")
    x, k, u, b, h0 = [a.detach() for a in args]
    with pytest.raises(ValueError, match="activation"):
        torch.ops.gru_cuda.gru_forward(x.transpose(0, 1), k, u, b, h0, None, None, None, True, 12,
                                       1, False, False, False)


def test_device_capacity():
    info = gru_cuda._C.cuda_device_capacity(torch.cuda.current_device())
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    assert info["sm_count"] == props.multi_processor_count
    assert info["compute_capability"] == (props.major, props.minor)
    assert info["shared_memory_per_block_optin"] >= info["shared_memory_per_block"] > 0
    assert info["registers_per_sm"] > 0 and info["l2_cache_bytes"] > 0
    assert isinstance(info["cooperative_launch"], bool) and isinstance(info["cluster_launch"], bool)
    with pytest.raises(ValueError):
        gru_cuda._C.cuda_device_capacity(torch.cuda.device_count())


@pytest.mark.slow
def test_int64_indexing():
    """T·B·H above 2^31: offsets of late steps must not wrap (bfloat16, ~18 GB)."""
    T, B, F, H = 2049, 1024, 8, 1024
    assert T * B * H > 2**31
    free, _ = torch.cuda.mem_get_info()
    if free < 24 << 30:
        pytest.skip("needs ~24 GB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(T, B, F, device="cuda", generator=g).to(torch.bfloat16)
    k = (torch.randn(F, 3 * H, device="cuda", generator=g) * 0.3).to(torch.bfloat16)
    u = (torch.randn(H, 3 * H, device="cuda", generator=g) / 64).to(torch.bfloat16)
    h0 = torch.zeros(B, H, device="cuda", dtype=torch.bfloat16)
    ids = FUSED_IDS["tanh"], FUSED_IDS["sigmoid"]
    big = torch.ops.gru_cuda.gru_forward(x, k, u, None, h0, None, None, None, True, *ids,
                                         False, False, False)
    rows = [0, B - 1]  # batch rows are independent: compare with a 2-row run
    small = torch.ops.gru_cuda.gru_forward(x[:, rows].contiguous(), k, u, None, h0[rows].contiguous(),
                                           None, None, None, True, *ids, False, False, False)
    assert not torch.isnan(big[0][-1]).any()
    torch.testing.assert_close(big[0][-4:, rows].float(), small[0][-4:].float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(big[1][rows].float(), small[1].float(), rtol=2e-2, atol=2e-2)
