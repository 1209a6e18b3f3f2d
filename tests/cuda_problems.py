"""Random GRU problems (float64, CPU) for the CUDA tests, and moving them to a device/dtype.
Shared by test_cuda_ops.py (stepwise path) and test_persistent.py (persistent paths)."""
import math

import torch


def make_problem(T, B, F, H, *, reset_after, bias=True, h0=True, mask=None, idm=None,
                 rdm=False, time_major=False, scale=0.5):
    """float64 CPU inputs. mask: None, "random" (batch row 0 fully masked, row 1 all valid),
    "right_padded" or "left_padded"; idm: None, "shared" (B, F) or "per_gate" (3, B, F)."""
    x = torch.randn(T, B, F, dtype=torch.float64)
    p = {
        "x": x if time_major else x.transpose(0, 1).contiguous(),
        "kernel": torch.randn(F, 3 * H, dtype=torch.float64) * (scale / math.sqrt(max(F, 1))),
        "recurrent_kernel": torch.randn(H, 3 * H, dtype=torch.float64) * (scale / math.sqrt(max(H, 1))),
        "bias": None,
        "initial_state": torch.randn(B, H, dtype=torch.float64) * 0.5 if h0 else None,
    }
    if bias:
        shape = (2, 3 * H) if reset_after else (3 * H,)
        p["bias"] = torch.randn(*shape, dtype=torch.float64) * (0.6 * scale)
    kw = {"reset_after": reset_after, "time_major": time_major}
    if mask is not None:
        if mask == "random":
            m = torch.rand(T, B) > 0.3
            if B > 0:
                m[:, 0] = False
            if B > 1:
                m[:, 1] = True
        else:
            lengths = torch.randint(0, T + 1, (B,))
            steps = torch.arange(T).unsqueeze(1)
            m = steps < lengths if mask == "right_padded" else steps >= T - lengths
        kw["mask"] = m if time_major else m.t().contiguous()
    if idm == "shared":
        kw["input_dropout_mask"] = (torch.rand(B, F) > 0.25).double() / 0.75
    elif idm == "per_gate":
        kw["input_dropout_mask"] = (torch.rand(3, B, F) > 0.25).double() / 0.75
    if rdm:
        kw["recurrent_dropout_mask"] = (torch.rand(3, B, H) > 0.3).double() / 0.7
    return p, kw


ARG_NAMES = ("x", "kernel", "recurrent_kernel", "bias", "initial_state")


def prepare_args(p, kw, dtype, device):
    args = [None if p[n] is None else p[n].to(device=device, dtype=dtype).requires_grad_(True)
            for n in ARG_NAMES]
    kwc = {k: (v.to(device=device, dtype=dtype) if isinstance(v, torch.Tensor) and v.is_floating_point()
               else v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return args, kwc
