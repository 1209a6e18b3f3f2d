"""Small CUDA workloads for compute-sanitizer: every kernel of csrc/kernels/ runs at least once
(both conventions, every dtype, masks, input and recurrent dropout, go_backwards, odd sizes,
B = 1, T = 1, and the multi-chunk bias reduction), forward and backward, with no pytest around.

Run on a GPU machine with the CUDA build installed:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \\
        --leak-check full --error-exitcode 1 python tests/cuda_sanitizer_targets.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python tests/cuda_sanitizer_targets.py
    compute-sanitizer --tool initcheck --error-exitcode 1 python tests/cuda_sanitizer_targets.py
    compute-sanitizer --tool synccheck --error-exitcode 1 python tests/cuda_sanitizer_targets.py

PYTORCH_NO_CUDA_MEMORY_CACHING=1 makes every allocation exact, so that memcheck sees an
out-of-bounds access past a tensor instead of landing in a cached block. The cuBLAS and
torch kernels run under the tools as well; a report naming one of our kernels
(gru_cuda::kernels::...) is ours. Exits 0 when everything ran and the results are finite.
"""
import sys

import torch

import gru_cuda
from gru_cuda.activations import FUSED_IDS

CASES = [
    # (T, B, F, H, reset_after, dtype, mask, input dropout, recurrent dropout, go_backwards,
    #  zero_output_for_mask, bias, activation, recurrent_activation)
    (5, 3, 4, 33, True, torch.float32, True, "per_gate", True, True, False, True, "tanh", "sigmoid"),
    (5, 3, 4, 33, False, torch.float32, True, "shared", True, False, True, True, "tanh", "sigmoid"),
    (4, 2, 3, 17, True, torch.float16, True, None, False, False, False, False, "gelu", "hard_sigmoid"),
    (4, 2, 3, 17, False, torch.bfloat16, False, "per_gate", True, True, False, True, "elu", "softsign"),
    (3, 2, 5, 9, True, torch.float64, True, "shared", True, False, False, True, "softplus", "silu"),
    (3, 2, 5, 9, False, torch.float64, False, None, False, True, False, False, "exponential", "sigmoid"),
    (1, 1, 2, 1, True, torch.float32, False, None, False, False, False, True, "relu", "sigmoid"),
    (1, 1, 2, 1, False, torch.float32, True, None, True, False, False, True, "linear", "selu"),
    (40, 12, 3, 40, True, torch.float32, True, None, False, False, False, True, "tanh", "sigmoid"),
    (40, 12, 3, 40, False, torch.bfloat16, True, None, False, True, False, True, "tanh", "sigmoid"),
]


def run_case(T, B, F, H, reset_after, dtype, mask, idm, rdm, go_backwards, zero_output, bias,
             activation, recurrent_activation):
    dev = "cuda"
    g = torch.Generator(device="cpu").manual_seed(T * 1000 + B * 100 + H)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dev, dtype)

    x = rnd(T, B, F)
    kernel = rnd(F, 3 * H, scale=0.3)
    recurrent = rnd(H, 3 * H, scale=0.3 / max(H, 1) ** 0.5)
    b = (rnd(2, 3 * H, scale=0.1) if reset_after else rnd(3 * H, scale=0.1)) if bias else None
    h0 = rnd(B, H, scale=0.5)
    m = None
    if mask:
        m = (torch.rand(T, B, generator=g) > 0.3).to(dev)
        m[:, 0] = False
    im = None
    if idm == "shared":
        im = ((torch.rand(B, F, generator=g) > 0.3).double() / 0.7).to(dev, dtype)
    elif idm == "per_gate":
        im = ((torch.rand(3, B, F, generator=g) > 0.3).double() / 0.7).to(dev, dtype)
    rm = ((torch.rand(3, B, H, generator=g) > 0.3).double() / 0.7).to(dev, dtype) if rdm else None
    ids = FUSED_IDS[activation], FUSED_IDS[recurrent_activation]
    outputs, final, states, workspace = torch.ops.gru_cuda.gru_forward(
        x, kernel, recurrent, b, h0, m, im, rm, reset_after, *ids, go_backwards, zero_output, True)
    grads = torch.ops.gru_cuda.gru_backward(
        torch.ones_like(outputs), torch.ones_like(final), x, kernel, recurrent, h0, states,
        workspace, m, im, rm, bias, reset_after, *ids, go_backwards, zero_output)
    torch.ops.gru_cuda.gru_forward(  # the inference path (no saved tensors)
        x, kernel, recurrent, b, h0, m, im, rm, reset_after, *ids, go_backwards, zero_output, False)
    torch.cuda.synchronize()
    return all(torch.isfinite(t).all().item() for t in (outputs, final, *grads) if t.numel())


def main():
    if not (torch.cuda.is_available() and gru_cuda.build_info()["cuda"]):
        print("cuda_sanitizer_targets: needs a CUDA GPU and a CUDA build of gru_cuda")
        return 1
    bad = [case for case in CASES if not run_case(*case)]
    for case in bad:
        print("non-finite result:", case)
    print(f"cuda_sanitizer_targets: {len(CASES)} cases, {len(bad)} with non-finite results")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
