"""The correctness check that precedes every timing: the inputs (master data), the float64
step-loop reference on them, and each candidate's relative error against it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch

from gru_cuda import reference

from .candidates import CaseData, Model, leaf
from .cases import Shape

if TYPE_CHECKING:
    from .config import Config

# Largest error allowed in the correctness check, (outputs, gradients): max|candidate - ref|
# over a tensor, divided by max|ref| of that tensor. A real layout or indexing bug (a swapped
# gate, an off-by-one step) is off by 0.2 to 1.5. float32 leaves room for TF32 (cuDNN's default
# for float32 RNNs since Ampere). In the half types a per-step loop (torch.nn.GRU on a CPU, the
# step loop) sums the weight gradients over T steps in that type: measured 0.11 for bfloat16
# at B=1, T=1024, hence the loose gradient bound; the outputs stay tight.
TOLERANCE = {"float32": (1e-2, 3e-2), "bfloat16": (6e-2, 0.25), "float16": (2e-2, 0.1)}


def _round_exact(t: torch.Tensor) -> torch.Tensor:
    """Rounds to values exact in bfloat16 and float16 (bf16 mantissa, no f16 subnormals), so
    that every dtype sees the same inputs and one float64 reference serves them all."""
    t = t.to(torch.bfloat16).float()
    return torch.where(t.abs() < 2.0 ** -14, torch.zeros_like(t), t)


def make_master(shape: Shape, seed: int, device: torch.device) -> dict:
    """float32 tensors made on `device` (a GPU draws DeepBench's 100M-element inputs in
    milliseconds, a CPU in seconds), from a generator seeded by the shape: reproducible."""
    g = torch.Generator(device=device).manual_seed(
        (seed * 1_000_003 + shape.B * 7919 + shape.T * 104729 + shape.H * 31 + shape.F) % 2**63)
    B, T, H, F = shape.B, shape.T, shape.H, shape.F

    def uni(*size, a):
        return (torch.rand(*size, generator=g, device=device) * 2 - 1) * a

    def normal(*size, std=1.0):
        return torch.randn(*size, generator=g, device=device) * std

    return {
        "x": _round_exact(normal(B, T, F)),
        # Glorot-uniform kernel (Keras' default); uniform(1/sqrt(H)) recurrent weights keep
        # the recurrence well away from saturation, like torch.nn.GRU's initialization.
        "kernel": _round_exact(uni(F, 3 * H, a=math.sqrt(6.0 / (F + 3 * H)))),
        "recurrent_kernel": _round_exact(uni(H, 3 * H, a=1.0 / math.sqrt(H))),
        "bias": _round_exact(uni(2, 3 * H, a=0.1)),
        "grad_out": _round_exact(normal(B, T, H)),
        "target": _round_exact(normal(B, T, H, std=0.5)),
    }


def case_data(master: dict, reset_after: bool, dtype: torch.dtype, device: torch.device,
              steps: Optional[int] = None) -> CaseData:
    def put(t, seq=False):
        if seq and steps is not None:
            t = t[:, :steps]
        return t.to(device=device, dtype=dtype).contiguous()

    bias = master["bias"] if reset_after else master["bias"][0]
    return CaseData(x=put(master["x"], True), kernel=put(master["kernel"]),
                    recurrent_kernel=put(master["recurrent_kernel"]), bias=put(bias),
                    grad_out=put(master["grad_out"], True), target=put(master["target"], True))


def check_length(shape: Shape, cfg: "Config") -> int:
    """Sequence length of the correctness check: the whole sequence when the float64 reference
    fits the check budgets (FLOPs, autograd memory), else the longest prefix that does."""
    T = shape.T if cfg.check_steps is None else max(1, min(shape.T, cfg.check_steps))
    per_step_flops = 3 * 6.0 * shape.B * shape.H * (shape.H + shape.F)
    # the step loop's autograd graph keeps ~30 (B, H)-sized float64 tensors per step
    per_step_bytes = 8.0 * shape.B * (30 * shape.H + 2 * shape.F)
    fit = int(min(cfg.check_max_flops / per_step_flops, cfg.check_max_bytes / per_step_bytes))
    return max(1, min(T, max(fit, min(T, 8))))


@dataclass
class Reference:
    steps: int
    out: torch.Tensor
    grads: Tuple[torch.Tensor, ...]  # x, kernel, recurrent_kernel, bias


def compute_reference(master: dict, reset_after: bool, steps: int, device: torch.device,
                      grads: bool = True) -> Reference:
    """The float64 step loop on the first `steps` steps; with `grads`, also the gradients for
    the upstream gradient `grad_out` (fwd-only groups skip that backward)."""
    d = case_data(master, reset_after, torch.float64, device, steps)
    if not grads:
        with torch.no_grad():
            out = reference.gru(d.x, d.kernel, d.recurrent_kernel, d.bias,
                                reset_after=reset_after)[0]
        return Reference(steps, out, ())
    x, k, rk, b = (leaf(t) for t in (d.x, d.kernel, d.recurrent_kernel, d.bias))
    with torch.enable_grad():
        out = reference.gru(x, k, rk, b, reset_after=reset_after)[0]
        out.backward(d.grad_out)
    return Reference(steps, out.detach(), (x.grad, k.grad, rk.grad, b.grad))


def rel_err(a: Optional[torch.Tensor], ref: torch.Tensor) -> float:
    """max|a - ref| / max|ref| (inf when missing, mis-shaped or not finite)."""
    if a is None or tuple(a.shape) != tuple(ref.shape):
        return float("inf")
    diff = (a.detach().to(device=ref.device, dtype=torch.float64) - ref).abs().max().item()
    scale = ref.abs().max().item()
    err = diff / scale if scale > 0 else diff
    return err if math.isfinite(err) else float("inf")


def check_candidate(model: Model, data: CaseData, ref: Reference, mode: str) -> Dict[str, float]:
    """The candidate's errors against the float64 reference on the check prefix: the outputs of
    an inference call for `fwd` (no_grad can take its own code path), else the outputs and the
    gradients of x and the three weights for the reference's upstream gradient."""
    x = data.x[:, :ref.steps].contiguous()
    if mode == "fwd":
        with torch.no_grad(), model.context():
            out = model.forward(x)
        return {"out": rel_err(out, ref.out)}
    x = leaf(x)
    for p in model.params:
        p.grad = None
    with torch.enable_grad(), model.context():
        out = model.forward(x)
        out.backward(data.grad_out[:, :ref.steps].contiguous())
    errs = {"out": rel_err(out, ref.out), "grad_x": rel_err(x.grad, ref.grads[0])}
    for name, g, r in zip(("grad_kernel", "grad_recurrent_kernel", "grad_bias"),
                          model.keras_grads(), ref.grads[1:]):
        errs[name] = rel_err(g, r)
    for p in model.params:
        p.grad = None
    return errs
