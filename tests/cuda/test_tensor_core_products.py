"""The persistent paths' recurrent products: simt, tensor_core (mma.sync on float16/bfloat16
operands), tf32 and 3xtf32 (float32 on TF32 tensor cores).

CPU part (runs everywhere): dispatch.set_product / force_product, and the capacity model's
what-if plans for an H200 and an A100: which products apply to which dtype, that TF32 needs
it allowed, the geometry rules of the tensor-core plans (units in eights, batch tiles in
sixteens, padded operand rows), and that the floors the benchmark reads are there.

GPU part (the `cuda` marker): every product forced on every persistent path that runs here,
both conventions, forward and backward, against the float64 reference with the dtype's
tolerance, with dispatch.last_path reporting the product that ran. The host emulation
(tests/emulation/test_tensor_core_emulation.py) runs the same kernels without a GPU.
"""
import pytest
import torch

from gru_cuda import dispatch
from gru_cuda._library import _C
from gru_cuda.functional import gru

from compare import assert_close_rel
from markers import requires_cuda
from cuda_problems import (PERSISTENT_PATHS, TOL, clear_last_path, make_problem,
                           poison_allocator, prepare_args, reference_run)

requires_model = pytest.mark.skipif(
    not hasattr(_C, "persistent_plan"),
    reason="this build does not expose the capacity model (_C.persistent_plan)")

H200 = dispatch.DEVICE_PRESETS["H200"]
A100 = dispatch.DEVICE_PRESETS["A100-SXM"]
# (dtype, product) pairs that apply, with (forward, gradient) tolerances against float64.
CASES = {
    "bf16-simt": (torch.bfloat16, "simt", TOL[torch.bfloat16]),
    "bf16-tensor_core": (torch.bfloat16, "tensor_core", TOL[torch.bfloat16]),
    "f16-tensor_core": (torch.float16, "tensor_core", TOL[torch.float16]),
    "f32-simt": (torch.float32, "simt", TOL[torch.float32]),
    "f32-3xtf32": (torch.float32, "3xtf32", TOL[torch.float32]),
    "f32-tf32": (torch.float32, "tf32", (2e-3, 4e-3)),  # 10-bit mantissas
}


@pytest.fixture(autouse=True)
def _nothing_forced():
    yield
    dispatch.set_path(None)
    dispatch.set_product(None)


def plan(caps, B, H, dtype="float32", reset_after=True, backward=False, forced="auto",
         product="auto", allow_tf32=False):
    return _C.persistent_plan(caps, B, 64, H, dtype, reset_after, False, backward, forced,
                              product, allow_tf32)


# ---- CPU part -------------------------------------------------------------------------------

def test_set_and_force_product():
    assert dispatch.get_product() is None
    with dispatch.force_product("tensor_core"):
        assert dispatch.get_product() == "tensor_core"
        with dispatch.force_product("auto"):
            assert dispatch.get_product() is None
        assert dispatch.get_product() == "tensor_core"
    assert dispatch.get_product() is None
    with pytest.raises(ValueError, match="unknown recurrent product"):
        dispatch.set_product("wmma")
    with pytest.raises(RuntimeError):
        with dispatch.force_product("tf32"):
            raise RuntimeError("restored on the way out")
    assert dispatch.get_product() is None


@requires_model
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_tensor_core_plan_geometry(reset_after, backward):
    for dtype, product in (("bfloat16", "tensor_core"), ("float16", "tensor_core"),
                           ("float32", "3xtf32")):
        for B in (1, 16, 17, 64):
            for H in (64, 200, 1024):
                for path in PERSISTENT_PATHS:
                    p = plan(H200, B, H, dtype, reset_after, backward, path, product)
                    if p["path"] != path:
                        assert "shared memory" in p["reason"], p
                        continue
                    assert p["product"] == product, p
                    assert p["units_per_cta"] % 8 == 0, p      # n-tiles of 8 in one gate
                    bt = p["batch_tile"]  # 16-row m-tiles repeat the tile's last row
                    assert bt % 8 == 0 if bt >= 8 else bt in (2, 4, 6), p
                    pad = 8 if product == "tensor_core" else 4
                    assert p["operand_stride"] == p["k_pad"] + pad, p
                    assert p["smem_bytes"] <= H200["shared_memory_per_block_optin"], p
                    assert p["floor_compute_us"] > 0 and p["floor_barrier_us"] > 0, p
                    assert p["est_step_us"] > p["floor_compute_us"], p


@requires_model
def test_products_apply_by_dtype():
    # float16/bfloat16: simt or tensor_core; float32: simt, 3xtf32, and tf32 only when allowed.
    for dtype in ("float16", "bfloat16"):
        for product, ok in (("tensor_core", True), ("tf32", False), ("3xtf32", False)):
            p = plan(H200, 16, 256, dtype, forced="persistent", product=product, allow_tf32=True)
            assert (p["path"] == "persistent") == ok, p
    p = plan(H200, 16, 256, "float32", forced="persistent", product="tensor_core")
    assert p["path"] == "stepwise" and "float16/bfloat16" in p["reason"], p
    p = plan(H200, 16, 256, "float32", forced="persistent", product="tf32")
    assert p["path"] == "stepwise" and "allow_tf32" in p["reason"], p
    p = plan(H200, 16, 256, "float32", forced="persistent", product="tf32", allow_tf32=True)
    assert p["path"] == "persistent" and p["product"] == "tf32", p
    # Automatic choice never picks TF32 unless allowed.
    for B in (1, 16, 64):
        for H in (256, 512, 1024):
            assert plan(H200, B, H, "float32")["product"] != "tf32"
    # sm_75 has no mma.sync of these shapes: the tensor-core products do not apply there.
    turing = dict(A100, compute_capability=(7, 5))
    p = plan(turing, 16, 256, "bfloat16", forced="persistent", product="tensor_core")
    assert p["path"] == "stepwise" and "sm_80" in p["reason"], p
    p = plan(A100, 16, 256, "bfloat16", forced="persistent", product="tensor_core")
    assert p["path"] == "persistent", p


@requires_model
def test_h1024_plans_on_h200():
    # The target shapes: H = 1024, B in {16, 32, 64}, reset_after=True, forward and backward:
    # the grid path fits them with a tensor-core product in bfloat16 and in float32 (TF32
    # allowed), and picks one over simt. (Whether automatic dispatch prefers the persistent
    # path to stepwise there rests on provisional cost constants: not asserted.)
    for dtype, allow in (("bfloat16", False), ("float32", True)):
        for B in (16, 32, 64):
            for backward in (False, True):
                p = plan(H200, B, 1024, dtype, backward=backward, forced="persistent",
                         allow_tf32=allow)
                assert p["path"] == "persistent", p
                assert p["product"] in ("tensor_core", "tf32", "3xtf32"), p
    # Every batch size 1..64 runs with each tensor-core product forced, in both directions.
    for dtype, product in (("bfloat16", "tensor_core"), ("float32", "tf32"),
                           ("float32", "3xtf32")):
        for B in range(1, 65):
            for backward in (False, True):
                p = plan(H200, B, 1024, dtype, backward=backward, forced="persistent",
                         product=product, allow_tf32=True)
                assert p["path"] == "persistent" and p["product"] == product, (B, p)
    with dispatch.force_path("persistent"):
        r = dispatch.explain(16, 256, 1024, dtype=torch.bfloat16, device_caps="H200")
        assert r["product"] == "tensor_core" and r["backward_product"] == "tensor_core", r
        with dispatch.force_product("simt"):
            r = dispatch.explain(16, 256, 1024, dtype=torch.bfloat16, device_caps="H200")
    assert r["forced_product"] == "simt" and r["product"] == "simt", r


# ---- GPU part -------------------------------------------------------------------------------

def _run_forced(path, product, dtype, reset_after, B, H, allow_tf32, **problem):
    p, kw = make_problem(3, B, 5, H, reset_after=reset_after, **problem)
    r_out, r_state, r_grads, grad_out, grad_state = reference_run(p, kw)
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    poison_allocator()
    clear_last_path()
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        with dispatch.force_path(path), dispatch.force_product(product):
            out, state = gru(*args, **ckw)
            loss = ((out * grad_out.cuda().to(dtype)).sum()
                    + (state * grad_state.cuda().to(dtype)).sum())
            grads = torch.autograd.grad(loss, [a for a in args if a is not None])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return out, state, grads, r_out, r_state, r_grads


@requires_cuda
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
def test_forced_product_against_reference(path, reset_after, case):
    if path not in dispatch.kernel_paths("cuda"):
        pytest.skip(f"{path} does not run on this device")
    dtype, product, (tol_f, tol_g) = CASES[case]
    if product != "simt" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("tensor-core products need sm_80")
    # B = 1; odd H with a mask and recurrent dropout; two m-tiles and a part-filled one.
    for B, H, problem in ((1, 16, {}), (3, 13, dict(mask="random", rdm=True)), (20, 96, {})):
        out, state, grads, r_out, r_state, r_grads = _run_forced(
            path, product, dtype, reset_after, B, H, allow_tf32=product == "tf32", **problem)
        ran = dispatch.last_path()
        assert (ran["forward"], ran["backward"]) == (path, path), ran
        assert (ran["forward_product"], ran["backward_product"]) == (product, product), ran
        assert_close_rel(out, r_out, tol_f, f"outputs B={B} H={H}")
        assert_close_rel(state, r_state, tol_f, f"final_state B={B} H={H}")
        for name, g, ref in zip(("x", "kernel", "recurrent_kernel", "bias", "initial_state"),
                                grads, r_grads):
            assert_close_rel(g, ref, tol_g, f"grad {name} B={B} H={H}")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_h1024_tensor_cores_against_reference(dtype):
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("tensor-core products need sm_80")
    product = "tensor_core" if dtype == torch.bfloat16 else "3xtf32"
    tol_f, tol_g = TOL[dtype]
    for B in (16, 64):
        r = dispatch.explain(B, 3, 1024, dtype=dtype)
        path = r["path"] if r["path"] in PERSISTENT_PATHS else "persistent"
        out, state, grads, r_out, r_state, r_grads = _run_forced(
            path, product, dtype, True, B, 1024, allow_tf32=False)
        assert dispatch.last_path()["forward_product"] == product
        assert_close_rel(out, r_out, tol_f, "outputs")
        assert_close_rel(state, r_state, tol_f, "final_state")
        for g, ref in zip(grads, r_grads):
            assert_close_rel(g, ref, tol_g, "grads")


@requires_cuda
def test_tf32_forced_without_permission_raises():
    if "persistent" not in dispatch.kernel_paths("cuda"):
        pytest.skip("no persistent path here")
    p, kw = make_problem(2, 2, 3, 16, reset_after=True)
    args, ckw = prepare_args(p, kw, torch.float32, "cuda")
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with dispatch.force_path("persistent"), dispatch.force_product("tf32"):
            with pytest.raises(ValueError, match="allow_tf32"):
                gru(*args, **ckw)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
