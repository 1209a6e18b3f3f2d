"""The tensor-core products of the persistent kernels (csrc/kernels/persistent/tensor_core.cuh)
executed on the CPU, no GPU needed.

The emulation implements the two warp-wide instructions the kernels use, mma.sync (m16n8k16
on float16/bfloat16 operands, m16n8k8 on TF32) and ldmatrix (.m8n8 .b16), from the PTX ISA's
fragment tables (tests/emulation/mma_fragments.h): each lane's registers go to the warp, the
matrices are assembled through the tables, multiplied, and each lane takes its accumulators
back through the C/D table. The tests, bottom up:

1. the C++ tables against the ISA's formulas, re-derived here independently;
2. each emulated instruction against a plain matrix product (mma) or the ISA's description
   (ldmatrix), and the TF32 rounding against its definition;
3. the kernels' product (swizzled weights, ldmatrix, fragment packing, split-K partials) for
   one emulated CTA against a float64 product, with the unwritten results poisoned;
4. the whole persistent kernels with each tensor-core product against the float64 CPU op and
   gru_cuda.reference.gru: both conventions, forward and backward, grid and cluster paths,
   B = 1, odd H, several batch tiles and H = 1024.

What it cannot check: that the GPU's instructions behave as the ISA documents (the fragment
tables are the contract), the hardware's accumulation order inside one mma, timing, bank
conflicts. tests/cuda/ runs the same products on a GPU.
"""
import numpy as np
import pytest
import torch

import gru_cuda  # noqa: F401  (registers torch.ops.gru_cuda on the CPU)
from compare import max_rel_err
from emulation import builder
from emulation.persistent_case import assert_close, run_case

pytestmark = pytest.mark.slow

PRODUCT_IDS = {"simt": 0, "tensor_core": 1, "tf32": 2, "3xtf32": 3}
# (storage dtype, product, allow_tf32, tolerance against float64): about 4x the dtype's
# rounding step after a few recurrent steps.
VARIANTS = {
    "bf16": (torch.bfloat16, "tensor_core", False, 1e-2),
    "f16": (torch.float16, "tensor_core", False, 2e-3),
    "tf32": (torch.float32, "tf32", True, 1e-3),
    "3xtf32": (torch.float32, "3xtf32", False, 1e-5),
}


@pytest.fixture(scope="module")
def emu():
    if builder.cuda_include() is None:
        pytest.skip("the CUDA headers (cuda_fp16.h, ...) are not installed")
    return builder.pkemu_module()


# ---- 1. the fragment tables -----------------------------------------------------------------

def isa_table(kind, op):
    """[(lane, i, row, col)] as the PTX ISA states it ("Matrix Fragments for mma.m16n8k16 with
    floating point type", "... for mma.m16n8k8" .tf32), written from the ISA's case lists."""
    out = []
    for lane in range(32):
        group, tig = lane // 4, lane % 4
        if op == "c":  # the fp32 accumulators of both shapes
            out += [(lane, i, group + (8 if i in (2, 3) else 0), tig * 2 + (i % 2))
                    for i in range(4)]
        elif kind == "tf32" and op == "a":
            out += [(lane, i, group + (8 if i in (1, 3) else 0), tig + (4 if i in (2, 3) else 0))
                    for i in range(4)]
        elif kind == "tf32" and op == "b":
            out += [(lane, i, tig + (4 if i == 1 else 0), group) for i in range(2)]
        elif op == "a":
            out += [(lane, i, group + (0 if i in (0, 1, 4, 5) else 8),
                     tig * 2 + (i % 2) + (8 if i >= 4 else 0)) for i in range(8)]
        else:
            out += [(lane, i, tig * 2 + (i % 2) + (8 if i >= 2 else 0), group) for i in range(4)]
    return out


@pytest.mark.parametrize("op", ["a", "b", "c"])
@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
def test_fragment_tables_follow_the_isa(emu, kind, op):
    table = [tuple(t) for t in emu.table(kind, op)]
    assert table == isa_table(kind, op)
    rows, cols = {"a": (16, 8 if kind == "tf32" else 16), "b": (8 if kind == "tf32" else 16, 8),
                  "c": (16, 8)}[op]
    cells = sorted((r, c) for _, _, r, c in table)
    assert cells == sorted((r, c) for r in range(rows) for c in range(cols))  # each exactly once


# ---- 2. the instructions --------------------------------------------------------------------

def bits16(values, dtype):
    return values.to(dtype).view(torch.int16).to(torch.int64) & 0xFFFF


def registers(kind, table, matrix, nregs):
    """The lanes' registers (32 x nregs, uint32 as int64) holding `matrix` as `table` says."""
    regs = torch.zeros(32, nregs, dtype=torch.int64)
    for lane, i, r, c in table:
        if kind == "tf32":
            regs[lane, i] = torch.tensor([matrix[r, c].item()], dtype=torch.float32).view(
                torch.int32).to(torch.int64).item() & 0xFFFFFFFF
        else:
            dt = torch.float16 if kind == "f16" else torch.bfloat16
            regs[lane, i // 2] |= bits16(matrix[r, c].reshape(1), dt).item() << (16 * (i % 2))
    return regs


def as_u32(regs):
    return torch.from_numpy(regs.numpy().astype(np.uint32).view(np.int32)).contiguous()


def tf32_truncated(t):
    """What the tensor core reads of an fp32 register as TF32: the 13 low mantissa bits
    dropped."""
    return (t.to(torch.float32).view(torch.int32) & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
def test_emulated_mma_is_a_matrix_product(emu, kind):
    K = 8 if kind == "tf32" else 16
    for _ in range(3):
        A, B, C = torch.randn(16, K), torch.randn(K, 8), torch.randn(16, 8)
        ra = registers(kind, isa_table(kind, "a"), A, 4)
        rb = registers(kind, isa_table(kind, "b"), B, 2)
        rc = torch.zeros(32, 4)
        for lane, i, r, c in isa_table(kind, "c"):
            rc[lane, i] = C[r, c]
        rd = torch.full((32, 4), float("nan"))
        a32, b32 = as_u32(ra), as_u32(rb)
        emu.warp_mma(kind, a32.data_ptr(), b32.data_ptr(), rc.data_ptr(), rd.data_ptr())
        if kind == "tf32":
            Aq, Bq = tf32_truncated(A), tf32_truncated(B)
        else:
            dt = torch.float16 if kind == "f16" else torch.bfloat16
            Aq, Bq = A.to(dt).float(), B.to(dt).float()
        expected = Aq.double() @ Bq.double() + C.double()
        D = torch.empty(16, 8)
        for lane, i, r, c in isa_table(kind, "c"):
            D[r, c] = rd[lane, i]
        assert max_rel_err(D, expected) < 1e-6


@pytest.mark.parametrize("n", [1, 2, 4])
def test_emulated_ldmatrix_follows_the_isa(emu, n):
    buf = torch.randint(0, 1 << 15, (4096,), dtype=torch.int16)
    offsets = [16 * int(o) for o in torch.randperm(4096 * 2 // 16)[:32]]
    out = torch.full((32, 4), -1, dtype=torch.int32)
    emu.warp_ldmatrix(n, buf.data_ptr(), offsets, out.data_ptr())
    half = buf.to(torch.int64) & 0xFFFF
    for lane in range(32):
        for j in range(n):
            row = offsets[8 * j + lane // 4] // 2  # rows of matrix j from lanes 8j..8j+7
            lo, hi = half[row + 2 * (lane % 4)].item(), half[row + 2 * (lane % 4) + 1].item()
            assert (out[lane, j].item() & 0xFFFFFFFF) == lo | (hi << 16)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        emu.warp_ldmatrix(1, buf.data_ptr(), [8] + offsets[1:], out.data_ptr())


def test_round_tf32_is_nearest_ties_away(emu):
    def rna(x):
        u = np.array([x], dtype=np.float32).view(np.uint32)[0].item()
        low = u & 0x1FFF
        up = low >= 0x1000  # ties (exactly 0x1000) away from zero: the magnitude rounds up
        return ((u & ~0x1FFF) + (0x2000 if up else 0)) & 0xFFFFFFFF

    one = np.float32(1.0)
    tie = np.array([0x3F801000], dtype=np.uint32).view(np.float32)[0]  # 1 + 2^-11 exactly
    values = [float(v) for v in torch.randn(200)] + [float(one), float(tie), -float(tie),
                                                     float(np.nextafter(tie, one)), 0.0]
    for v in values:
        assert emu.round_tf32(v) == rna(v), v


# ---- 3. the kernels' product for one CTA ----------------------------------------------------

# (J, kp, bt, rows, g0, g1, per_gate): split-K over the warps (3 tiles), no split (12 tiles,
# two m-tiles, one part-filled: its rows past bt = 24 repeat row 23), one tile split eight ways,
# the backward's per-gate operands with J = 40, a single row in a 2-row tile (the m-tile's
# other rows repeat row 1), and a full 16-row tile.
PRODUCT_SHAPES = [(8, 64, 16, 1, 0, 3, False), (16, 128, 24, 20, 0, 3, True),
                  (8, 192, 8, 8, 2, 3, False), (40, 64, 8, 5, 0, 2, True),
                  (8, 64, 2, 1, 0, 3, True), (8, 64, 16, 16, 0, 3, True)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cta_product_against_float64(emu, variant):
    dtype, product, _, _ = VARIANTS[variant]
    for J, kp, bt, rows, g0, g1, per_gate in PRODUCT_SHAPES:
        ldh = kp + (8 if product == "tensor_core" else 4)
        ng = g1 - g0 if per_gate else 1
        w = torch.randn(3 * J, kp).to(dtype)
        hs = torch.randn(ng, bt, ldh)
        gs = torch.full((bt, 3 * J), float("nan"))
        err = emu.cta_product({torch.float32: "float32", torch.float16: "float16",
                               torch.bfloat16: "bfloat16"}[dtype], PRODUCT_IDS[product], J, kp,
                              ldh, bt, rows, g0, g1, per_gate, w.data_ptr(), hs.data_ptr(),
                              gs.data_ptr())
        assert err == ""
        if product == "tensor_core":
            a, wq = hs.to(dtype).double(), w.double()
        elif product == "tf32":
            a = torch.tensor([[[emu.round_tf32(float(v)) for v in row] for row in op]
                              for op in hs], dtype=torch.int64).to(torch.int32).view(
                torch.float32).double()
            wq = torch.tensor([[emu.round_tf32(float(v)) for v in row] for row in w],
                              dtype=torch.int64).to(torch.int32).view(torch.float32).double()
        else:
            a, wq = hs.double(), w.double()
        cols = slice(g0 * J, g1 * J)
        expected = torch.empty(rows, (g1 - g0) * J, dtype=torch.float64)
        for g in range(g0, g1):
            op = a[g - g0 if per_gate else 0, :rows, :kp]
            expected[:, (g - g0) * J:(g - g0 + 1) * J] = op @ wq[g * J:(g + 1) * J].t()
        tol = 1e-6 if product != "3xtf32" else 2e-6
        assert max_rel_err(gs[:rows, cols], expected) < tol, (J, kp, rows, g0, g1, per_gate)
        # Nothing outside the rows and gates asked for was written.
        assert torch.isnan(gs[rows:]).all() and torch.isnan(gs[:rows, :g0 * J]).all()
        assert torch.isnan(gs[:rows, g1 * J:]).all()


# ---- 4. the persistent kernels --------------------------------------------------------------

# (T, B, F, H, max_bt, options): B = 1; odd H with mask, dropout and go_backwards; two batch
# tiles (grid) or clusters of 16 and 4 rows.
KERNEL_SHAPES = [(3, 1, 3, 16, 0, {}),
                 (2, 3, 2, 13, 0, dict(mask=True, rdm=True, go_back=True)),
                 (2, 20, 3, 24, 16, dict(mask=True, zero_out=True, save=False))]


@pytest.mark.parametrize("path", ["persistent", "persistent_cluster"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kernels_against_float64(emu, variant, reset_after, path):
    dtype, product, allow_tf32, tol = VARIANTS[variant]
    for T, B, F, H, max_bt, opts in KERNEL_SHAPES:
        errs = run_case(emu, T, B, F, H, reset_after, path, product=product, dtype=dtype,
                        oracle=torch.float64, allow_tf32=allow_tf32, max_bt=max_bt, **opts)
        assert_close(errs, tol)


@pytest.mark.parametrize("variant,reset_after,path,T", [
    ("bf16", True, "persistent", 2), ("bf16", False, "persistent_cluster", 2),
    ("3xtf32", True, "persistent", 1)])
def test_h1024(emu, variant, reset_after, path, T):
    # 8 CTAs of 128 units (kp = 1024, 48 n-tiles per CTA and step, no split-K) on a fictitious
    # device with 2 MiB of shared memory per block, so that the emulation runs 2,048 threads
    # instead of an H200's 128 CTAs x 8 units (the capacity-model tests cover that plan). About
    # a minute each on two cores: every emulated mma.sync is two warp barriers.
    dtype, product, allow_tf32, tol = VARIANTS[variant]
    errs = run_case(emu, T, 2, 3, 1024, reset_after, path, product=product, dtype=dtype,
                    oracle=torch.float64, allow_tf32=allow_tf32, sm=8, max_cluster=8, rdm=True,
                    smem_per_block=2 << 20)
    assert_close(errs, tol)


def test_tf32_needs_it_allowed(emu):
    # The capacity model refuses TF32 unless allowed; the harness reports the model's reason.
    with pytest.raises(AssertionError, match="allow_tf32"):
        run_case(emu, 2, 2, 2, 8, True, "persistent", product="tf32", oracle=torch.float64)
