"""The CUDA op on a GPU, on every kernel path: stepwise (csrc/cuda/stepwise.cpp +
csrc/kernels/step/), persistent (one cooperative launch, grid barrier) and
persistent_cluster (sm_90 thread-block clusters), csrc/kernels/persistent_*.

Automatic dispatch would send almost every case to one path (persistent_cluster on an H100 or
H200), so every test that runs the op takes the `path` fixture (tests/cuda/cuda_problems.py): it
runs once per path, skipped with the reason where dispatch.kernel_paths() lacks it, with the
path forced for the whole body; check_against_reference asserts that the forward and the
backward really ran on that path (dispatch.last_path), so a silent fallback fails. float64 runs
stepwise only; the persistent paths must refuse it with ValueError. The grid is every path x
both reset conventions x the dtypes x a set of option scenarios, not a full cross product.

Results are compared with the float64 reference (gru_cuda.reference on the CPU) on fresh random
inputs (reproducible with GRU_TEST_SEED), with cuDNN (torch.nn.GRU), with the CPU op, or with
themselves (determinism). Every test here carries the `cuda` marker and skips cleanly without
a GPU or a CUDA build. CUDA-graph capture: test_cuda_graphs.py. Production geometries:
test_cuda_paths.py. Under compute-sanitizer run tests/cuda/cuda_sanitizer_targets.py instead.
"""

import pytest
import torch

import gru_cuda
from gru_cuda import dispatch
from gru_cuda.activations import FUSED_IDS, FUSED_NAMES
from gru_cuda.functional import gru

from compare import assert_close_rel
from markers import requires_cuda
from cuda_problems import (CUDA_PATHS, PERSISTENT_PATHS, TOL, _run, assert_ran,
                           check_against_reference, clear_last_path, forced_plan, make_problem,
                           path_dtypes, poison_allocator, prepare_args, reference_run)

pytestmark = [requires_cuda]

F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16


@pytest.fixture(autouse=True)
def _exact_fp32():
    """float32 must be exact fp32: TF32 off whatever the environment says; and no test leaks
    a forced path into the next one."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    dispatch.set_path(None)


RESET = pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])

SCENARIOS = {
    "plain": dict(),
    "go_backwards": dict(options=dict(go_backwards=True)),
    "time_major": dict(problem=dict(time_major=True)),
    "no_bias": dict(problem=dict(bias=False)),
    "no_initial_state": dict(problem=dict(h0=False)),
    "mask": dict(problem=dict(mask="random")),
    "mask_zero_output": dict(problem=dict(mask="random"), options=dict(zero_output_for_mask=True)),
    "right_padded_backwards": dict(problem=dict(mask="right_padded"),
                                   options=dict(go_backwards=True)),
    "left_padded_zero_output": dict(problem=dict(mask="left_padded"),
                                    options=dict(zero_output_for_mask=True)),
    "input_dropout_shared": dict(problem=dict(idm="shared")),
    "input_dropout_per_gate": dict(problem=dict(idm="per_gate")),
    "recurrent_dropout": dict(problem=dict(rdm=True)),
    "everything": dict(problem=dict(mask="random", idm="per_gate", rdm=True, time_major=True),
                       options=dict(go_backwards=True)),
    "everything_zero_output_no_bias": dict(
        problem=dict(mask="random", idm="shared", rdm=True, bias=False),
        options=dict(go_backwards=True, zero_output_for_mask=True)),
}


# Every path x every dtype it runs (float64: stepwise) x both conventions x every scenario:
# the fp16/bf16 backward of the stepwise path included. H = 37: not a multiple of 4 or 32.
@pytest.mark.parametrize("path,dtype", path_dtypes(), indirect=["path"])
@RESET
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_options_against_reference(scenario, reset_after, path, dtype):
    s = SCENARIOS[scenario]
    p, kw = make_problem(7, 5, 6, 37, reset_after=reset_after, **s.get("problem", {}))
    check_against_reference(p, kw, dtype, path, **s.get("options", {}))


@pytest.mark.parametrize("path", PERSISTENT_PATHS, indirect=True)
@RESET
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_float64_rejected_on_persistent_paths(path, reset_after, training):
    """The persistent kernels have no float64: a forced persistent path raises ValueError naming
    the reason (never a silent stepwise run), and explain() predicts it."""
    p, kw = make_problem(4, 3, 5, 16, reset_after=reset_after, mask="random", rdm=True)
    plan = forced_plan(path, 3, 4, 16, F64, reset_after, True)
    assert plan["forward"] == "error" and "float64" in plan["reason"], plan
    args, ckw = prepare_args(p, kw, F64, "cuda")
    with torch.set_grad_enabled(training), pytest.raises(ValueError, match="float64"):
        gru(*args, **ckw)
    check_against_reference(p, kw, F64, "stepwise")  # the path that has float64 runs it


@pytest.mark.parametrize("path", PERSISTENT_PATHS, indirect=True)
@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
@RESET
def test_too_large_for_forced_path(path, dtype, reset_after):
    """One unit above what a forced persistent path fits: the forward raises ValueError (never
    a silent stepwise run). Where the backward fits fewer units than the forward (it stages
    more operand rows), a size in between runs the forward on the path and the backward raises."""
    B, T, F = 3, 2, 3
    mu = dispatch.explain(B, T, 64, dtype=dtype, reset_after=reset_after)["capacity"]["max_units"]
    fwd, bwd = mu["forward"][path], mu["backward"][path]
    assert 0 < bwd <= fwd
    plan = forced_plan(path, B, T, fwd + 1, dtype, reset_after, False)
    assert plan["forward"] == "error", plan
    p, kw = make_problem(T, B, F, fwd + 1, reset_after=reset_after)
    assert check_against_reference(p, kw, dtype, path) is None  # asserted the ValueError
    if bwd == fwd:
        return
    plan = forced_plan(path, B, T, bwd + 1, dtype, reset_after, False)
    assert plan["forward"] == path and plan["backward"] == "error", plan
    p, kw = make_problem(T, B, F, bwd + 1, reset_after=reset_after)
    assert check_against_reference(p, kw, dtype, path) is None  # forward ran, backward raised


@pytest.mark.parametrize("path,dtype", path_dtypes(("stepwise",), (F64, F32, BF16))
                         + path_dtypes(PERSISTENT_PATHS, (F32,)), indirect=["path"])
@RESET
@pytest.mark.parametrize("role", ["activation", "recurrent_activation"])
@pytest.mark.parametrize("name", FUSED_NAMES)
def test_every_activation(name, role, reset_after, path, dtype):
    other = {"activation": "tanh", "recurrent_activation": "sigmoid"}
    other[role] = name
    # Small weights keep unbounded activations from blowing the state up over the steps; an
    # unbounded recurrent activation (z, r outside [0, 1]) needs them smaller still.
    bounded = ("sigmoid", "hard_sigmoid", "tanh", "softsign")
    scale = 0.1 if role == "recurrent_activation" and name not in bounded else 0.3
    p, kw = make_problem(6, 3, 4, 9, reset_after=reset_after, mask="random", rdm=True, scale=scale)
    check_against_reference(p, kw, dtype, path, **other)


# (T, B, F, H): H not a multiple of 32 or of 4, B = 1, T = 1, F = 0, several batch tiles with a
# remainder below 8 rows, H above one CTA's share, and empty problems (no kernel runs).
SHAPES = [(1, 1, 3, 5), (3, 1, 2, 33), (1, 4, 5, 1), (9, 2, 1, 65), (4, 300, 3, 7),
          (5, 70, 4, 130), (2, 9, 3, 257), (4, 3, 0, 5), (0, 3, 4, 5), (5, 0, 4, 5), (0, 0, 4, 5)]


@pytest.mark.parametrize("path,dtype", path_dtypes(("stepwise",), (F64, F32, F16))
                         + path_dtypes(PERSISTENT_PATHS, (F32, BF16)), indirect=["path"])
@RESET
@pytest.mark.parametrize("T,B,F,H", SHAPES)
def test_shapes(T, B, F, H, reset_after, path, dtype):
    p, kw = make_problem(T, B, F, H, reset_after=reset_after, mask="random" if T * B else None,
                         rdm=True)
    check_against_reference(p, kw, dtype, path)


@pytest.mark.parametrize("path", CUDA_PATHS, indirect=True)
@RESET
def test_long_sequence(path, reset_after):
    """600 steps: the state stays right over many barriers / launches."""
    p, kw = make_problem(600, 2, 3, 16, reset_after=reset_after, mask="random", rdm=True,
                         scale=0.3)
    check_against_reference(p, kw, F32, path)


@pytest.mark.parametrize("path", CUDA_PATHS, indirect=True)
def test_many_rows_bias_reduction(path):
    # T·B far above one column-sum chunk (256 rows): the multi-chunk reduction path.
    for reset_after in (True, False):
        p, kw = make_problem(60, 40, 3, 10, reset_after=reset_after, mask="random")
        check_against_reference(p, kw, F32, path)


@pytest.mark.parametrize("path,dtype", path_dtypes(dtypes=(F64, F32, F16)), indirect=["path"])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_cudnn(path, dtype, bias):
    tol = {F64: 1e-10, F32: 2e-5, F16: 1e-2}[dtype]

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
    clear_last_path()
    out, state = gru(x, kernel, recurrent, b, h0)
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(state, h_n[0], rtol=tol, atol=tol)
    g = torch.randn_like(out)
    mine = torch.autograd.grad((out * g).sum(), [x, h0, kernel, recurrent] + ([b] if bias else []))
    assert_ran(path)
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


@pytest.mark.parametrize("path,dtype", path_dtypes(dtypes=(F32, BF16)), indirect=["path"])
@RESET
def test_deterministic(path, reset_after, dtype):
    # 40 x 19 rows: the bias reduction runs over several chunks; B = 19 leaves a partial tile.
    p, kw = make_problem(40, 19, 24, 48, reset_after=reset_after, mask="random", rdm=True,
                         idm="per_gate")
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    grad_out = torch.randn(19, 40, 48, dtype=torch.float64).cuda()
    grad_state = torch.randn(19, 48, dtype=torch.float64).cuda()
    clear_last_path()
    first = _run(gru, args, ckw, grad_out, grad_state)
    assert_ran(path)
    poison_allocator()
    second = _run(gru, args, ckw, grad_out, grad_state)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    for a, b in zip(first[2], second[2]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("forward_path", CUDA_PATHS)
@pytest.mark.parametrize("backward_path", CUDA_PATHS)
@RESET
def test_mixed_paths(forward_path, backward_path, reset_after):
    """The saved states and workspace have one layout on every path: a forward on one path and
    the backward on another (automatic dispatch does this when only the forward fits) agree
    with the reference."""
    here = dispatch.kernel_paths("cuda")
    for name in (forward_path, backward_path):
        if name not in here:
            pytest.skip(f"kernel path {name!r} does not run on this device ({here})")
    p, kw = make_problem(9, 6, 5, 40, reset_after=reset_after, mask="random", rdm=True,
                         idm="shared")
    r_out, r_state, r_grads, grad_out, grad_state = reference_run(p, kw)
    args, ckw = prepare_args(p, kw, F32, "cuda")
    poison_allocator()
    clear_last_path()
    with dispatch.force_path(forward_path):
        out, state = gru(*args, **ckw)
    loss = (out * grad_out.cuda().float()).sum() + (state * grad_state.cuda().float()).sum()
    with dispatch.force_path(backward_path):
        grads = torch.autograd.grad(loss, [a for a in args if a is not None])
    ran = dispatch.last_path()
    assert (ran["forward"], ran["backward"]) == (forward_path, backward_path), ran
    tol_f, tol_g = TOL[F32]
    assert_close_rel(out, r_out, tol_f, "outputs")
    assert_close_rel(state, r_state, tol_f, "final_state")
    for g, r in zip(grads, r_grads):
        assert_close_rel(g, r, tol_g, "grad")


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


@pytest.mark.parametrize("path,dtype", path_dtypes(("stepwise",), (F64, F32))
                         + path_dtypes(PERSISTENT_PATHS, (F32,)), indirect=["path"])
@RESET
@pytest.mark.parametrize("go_backwards", [False, True])
def test_saved_tensors_match_cpu_op(path, dtype, reset_after, go_backwards):
    """states and workspace have the CPU op's layout on every path (float64: equal to
    rounding), and the raw backward op agrees with the CPU one."""
    tol_f, tol_g = (1e-12, 1e-10) if dtype == F64 else TOL[dtype]
    p, kw = make_problem(6, 4, 5, 11, reset_after=reset_after, mask="random", rdm=True,
                         idm="per_gate", time_major=True)
    clear_last_path()
    cuda_outs = _raw_forward(p, kw, dtype, True, reset_after, go_backwards)
    assert_ran(path, backward=False)
    args, ckw = prepare_args(p, kw, dtype, "cpu")
    x, k, u, b, h0 = [a.detach() for a in args]
    cpu_outs = torch.ops.gru_cuda.gru_forward(
        x, k, u, b, h0, ckw["mask"], ckw["input_dropout_mask"], ckw["recurrent_dropout_mask"],
        reset_after, FUSED_IDS["tanh"], FUSED_IDS["sigmoid"], go_backwards, False, True)
    for name, c, r in zip(("outputs", "final_state", "states", "workspace"), cuda_outs, cpu_outs):
        assert c.shape == r.shape, name
        assert_close_rel(c, r, tol_f, name)
    gY = torch.randn_like(cpu_outs[0])
    gS = torch.randn_like(cpu_outs[1])
    common = (ckw["mask"], ckw["input_dropout_mask"], ckw["recurrent_dropout_mask"], True,
              reset_after, FUSED_IDS["tanh"], FUSED_IDS["sigmoid"], go_backwards, False)
    cpu_grads = torch.ops.gru_cuda.gru_backward(gY, gS, x, k, u, h0, cpu_outs[2], cpu_outs[3],
                                                *common)
    to = lambda t: None if t is None else t.cuda()  # noqa: E731
    cuda_grads = torch.ops.gru_cuda.gru_backward(
        gY.cuda(), gS.cuda(), x.cuda(), k.cuda(), u.cuda(), h0.cuda(), cuda_outs[2], cuda_outs[3],
        *[to(c) if isinstance(c, torch.Tensor) or c is None else c for c in common])
    assert_ran(path)
    for name, c, r in zip(("x", "kernel", "recurrent_kernel", "bias", "h0"), cuda_grads, cpu_grads):
        assert_close_rel(c, r, tol_g, f"grad {name}")


@pytest.mark.parametrize("path", CUDA_PATHS, indirect=True)
def test_inference_matches_training_forward(path):
    for reset_after in (True, False):
        p, kw = make_problem(8, 3, 4, 10, reset_after=reset_after, mask="random", rdm=True)
        clear_last_path()
        saved = _raw_forward(p, kw, F32, True, reset_after)
        assert_ran(path, backward=False)
        poison_allocator()
        clear_last_path()
        plain = _raw_forward(p, kw, F32, False, reset_after)
        assert_ran(path, backward=False)
        assert torch.equal(saved[0], plain[0]) and torch.equal(saved[1], plain[1])
        assert plain[2].shape == (0,) and plain[3].shape == (0,)
        assert saved[3].shape == (8, 3, (4 if reset_after else 3) * 10)


def test_bad_activation_id_rejected():
    p, kw = make_problem(3, 2, 4, 5, reset_after=True)
    args, _ = prepare_args(p, kw, F32, "cuda")
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


def test_kernel_paths_on_this_device():
    """stepwise always; the grid path with cooperative launch; clusters from sm_90 on."""
    paths = dispatch.kernel_paths("cuda")
    info = gru_cuda._C.cuda_device_capacity(torch.cuda.current_device())
    assert paths[0] == "stepwise" and set(paths) <= set(CUDA_PATHS)
    assert ("persistent" in paths) == info["cooperative_launch"]
    assert ("persistent_cluster" in paths) == (info["cluster_launch"]
                                               and info["compute_capability"][0] >= 9)


@pytest.mark.slow
@pytest.mark.parametrize("path", CUDA_PATHS, indirect=True)
def test_int64_indexing(path):
    """T·B·H above 2^31: offsets of late steps must not wrap (bfloat16, ~18 GB)."""
    T, B, F, H = 2049, 1024, 8, 1024
    assert T * B * H > 2**31
    free, _ = torch.cuda.mem_get_info()
    if free < 24 << 30:
        pytest.skip("needs ~24 GB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(T, B, F, device="cuda", generator=g).to(BF16)
    k = (torch.randn(F, 3 * H, device="cuda", generator=g) * 0.3).to(BF16)
    u = (torch.randn(H, 3 * H, device="cuda", generator=g) / 64).to(BF16)
    h0 = torch.zeros(B, H, device="cuda", dtype=BF16)
    ids = FUSED_IDS["tanh"], FUSED_IDS["sigmoid"]
    if forced_plan(path, B, T, H, BF16, True, False)["forward"] != path:
        with pytest.raises(ValueError, match="cannot run"):  # e.g. U too large for a cluster
            torch.ops.gru_cuda.gru_forward(x, k, u, None, h0, None, None, None, True, *ids,
                                           False, False, False)
        return
    clear_last_path()
    big = torch.ops.gru_cuda.gru_forward(x, k, u, None, h0, None, None, None, True, *ids,
                                         False, False, False)
    assert_ran(path, backward=False)
    rows = [0, B - 1]  # batch rows are independent: compare with a 2-row run
    with dispatch.force_path("stepwise"):
        small = torch.ops.gru_cuda.gru_forward(x[:, rows].contiguous(), k, u, None,
                                               h0[rows].contiguous(), None, None, None, True,
                                               *ids, False, False, False)
    assert not torch.isnan(big[0][-1]).any()
    torch.testing.assert_close(big[0][-4:, rows].float(), small[0][-4:].float(),
                               rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(big[1][rows].float(), small[1].float(), rtol=2e-2, atol=2e-2)
