"""The implementations timed: the Candidate protocol, the built-in candidates and the registry.

A Candidate builds a Model from one case's weights (Keras layout); the Model runs the forward
and reports its gradients in Keras layout, so that one float64 reference checks them all.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch

import gru_cuda
from gru_cuda import conversion, functional, reference

from .cases import DTYPES, Case, flops

if TYPE_CHECKING:
    from .config import Config

__all__ = ["CaseData", "Model", "Candidate", "GruCudaCandidate", "TorchGRUCandidate",
           "StepLoopCandidate", "KerasCandidate", "KerasGruCudaCandidate",
           "BrokenCandidate", "CANDIDATES", "ALIASES",
           "DEFAULT_CANDIDATES", "QUICK_CANDIDATES", "PERSISTENT_CANDIDATES",
           "TENSOR_CORE_CANDIDATES",
           "GROUPS", "register_candidate", "resolve_candidates", "path_label", "keras_version",
           "leaf"]


@dataclass
class CaseData:
    """One case's tensors on the benchmark device, in the case's dtype, Keras layout."""
    x: torch.Tensor             # (B, T, F)
    kernel: torch.Tensor        # (F, 3H)
    recurrent_kernel: torch.Tensor  # (H, 3H)
    bias: torch.Tensor          # (2, 3H) when reset_after, else (3H,)
    grad_out: torch.Tensor      # (B, T, H): the upstream gradient of fwd+bwd
    target: torch.Tensor        # (B, T, H): the regression target of train


class Model:
    """A candidate instantiated with one case's weights.

    `forward(x)` returns the output sequence (B, T, H); `params` are the leaf tensors a
    training step updates; `keras_grads()` their gradients in Keras layout
    (kernel, recurrent_kernel, bias); `context()` wraps every call (e.g. a forced kernel path).
    """
    params: List[torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def keras_grads(self) -> Tuple[torch.Tensor, ...]:
        return tuple(p.grad for p in self.params)

    def context(self):
        return contextlib.nullcontext()


class Candidate:
    """One implementation to time. Subclass, set `key`/`label`, and register_candidate()."""
    key = "?"
    label = "?"

    def skip_reason(self, case: Case, cfg: "Config") -> Optional[str]:
        """Why this candidate does not run this case (None: it runs)."""
        return None

    def build(self, data: CaseData, case: Case, cfg: "Config") -> Model:
        raise NotImplementedError


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


class _FunctionalModel(Model):
    def __init__(self, data: CaseData, reset_after: bool, ctx_factory=None):
        self.kernel = leaf(data.kernel)
        self.recurrent_kernel = leaf(data.recurrent_kernel)
        self.bias = leaf(data.bias)
        self.params = [self.kernel, self.recurrent_kernel, self.bias]
        self.reset_after = reset_after
        self._ctx = ctx_factory

    def forward(self, x):
        return functional.gru(x, self.kernel, self.recurrent_kernel, self.bias,
                              reset_after=self.reset_after)[0]

    def context(self):
        return self._ctx() if self._ctx is not None else contextlib.nullcontext()


class GruCudaCandidate(Candidate):
    """gru_cuda.functional.gru; with `path`, inside gru_cuda.force_path(path); with `product`
    also inside gru_cuda.dispatch.force_product(product) (key "gru_cuda[PATH:PRODUCT]")."""

    def __init__(self, path: Optional[str] = None, product: Optional[str] = None):
        self.path, self.product = path, product
        if path is None:
            self.key = "gru_cuda"
        else:
            self.key = f"gru_cuda[{path}]" if product is None else f"gru_cuda[{path}:{product}]"
        self.label = self.key

    @contextlib.contextmanager
    def forcing(self):
        """The forced path and product of this candidate (nothing for automatic dispatch)."""
        with contextlib.ExitStack() as stack:
            if self.path is not None:
                stack.enter_context(gru_cuda.force_path(self.path))
            if self.product is not None:
                stack.enter_context(gru_cuda.dispatch.force_product(self.product))
            yield

    def explain(self, case: Case, cfg: "Config") -> Optional[dict]:
        """gru_cuda.dispatch.explain for this case under this candidate's forcing: the plan the
        run follows (None when the model gives no verdict, e.g. an unknown path name)."""
        s = case.shape
        try:
            with self.forcing():
                return gru_cuda.dispatch.explain(s.B, s.T, s.H, s.F, dtype=DTYPES[case.dtype],
                                                 reset_after=case.reset_after,
                                                 device=cfg.device)
        except Exception:
            return None

    def skip_reason(self, case, cfg):
        """A forced path or product that cannot run this case (e.g. the weights do not fit in
        shared memory, tensor cores for float32) would raise or run something else: ask
        gru_cuda's capacity model first and skip it with its reason."""
        if self.path is None:
            return None
        plan = self.explain(case, cfg)
        if plan is None:  # no verdict: the check run will tell
            return None
        what = self.path if self.product is None else f"{self.path}:{self.product}"
        for key, reason in (("path", "reason"), ("backward_path", "backward_reason")):
            if key == "backward_path" and case.mode == "fwd":
                continue
            if plan.get(key) in ("error", "unavailable"):
                return f"{what} cannot run this case: {plan.get(reason)}"
            prod_key = "product" if key == "path" else "backward_product"
            if self.product is not None and plan.get(prod_key) != self.product:
                ran = plan.get(key)
                ran += f":{plan[prod_key]}" if plan.get(prod_key) else ""
                return (f"{what} does not apply: the {'forward' if key == 'path' else 'backward'}"
                        f" would run {ran} ({plan.get(reason)})")
        return None

    def build(self, data, case, cfg):
        forced = self.path is not None or self.product is not None
        return _FunctionalModel(data, case.reset_after, self.forcing if forced else None)


def path_label(mode: str, lp: Optional[dict] = None) -> Optional[str]:
    """The kernel path of gru_cuda's last CUDA call (`lp`, default
    gru_cuda.dispatch.last_path()) as one label: "forward", or "forward/backward" for the modes
    with a backward, each persistent direction with the product it ran
    ("persistent:tensor_core/stepwise"); None before any CUDA call, hence always on a CPU."""
    lp = gru_cuda.dispatch.last_path() if lp is None else lp

    def one(direction):
        name, product = lp.get(direction), lp.get(f"{direction}_product")
        return f"{name}:{product}" if name and product else name

    fwd = one("forward")
    if fwd is None:
        return None
    return fwd if mode == "fwd" or not lp.get("backward") else f"{fwd}/{one('backward')}"


class _StepLoopModel(_FunctionalModel):
    def forward(self, x):
        return reference.gru(x, self.kernel, self.recurrent_kernel, self.bias,
                             reset_after=self.reset_after)[0]


def _loop_skip_reason(case: Case, cfg: "Config", what: str) -> Optional[str]:
    """A per-step Python loop costs ~T kernel launches per pass on a GPU and every FLOP at
    low efficiency on a CPU: skip the shapes where it would dominate the run time."""
    s = case.shape
    if s.T > cfg.steploop_max_steps:
        return f"{what}: T={s.T} > {cfg.steploop_max_steps} steps (--steploop-max-steps)"
    work = flops(s, case.mode, input_projection=True)
    if work > cfg.steploop_max_flops:
        return (f"{what}: {work / 1e9:.0f} GFLOP per run > {cfg.steploop_max_flops / 1e9:.0f}"
                " (--steploop-max-gflop)")
    return None


class StepLoopCandidate(Candidate):
    key = "steploop"
    label = "step loop"

    def skip_reason(self, case, cfg):
        return _loop_skip_reason(case, cfg, "step loop too slow here")

    def build(self, data, case, cfg):
        return _StepLoopModel(data, case.reset_after)


class _TorchGRUModel(Model):
    def __init__(self, data: CaseData, device: torch.device):
        F, H = data.kernel.shape[0], data.recurrent_kernel.shape[0]
        self.gru = torch.nn.GRU(F, H, num_layers=1, bias=True, batch_first=True,
                                device=device, dtype=data.x.dtype)
        weights = conversion.keras_to_torch(data.kernel, data.recurrent_kernel, data.bias)
        with torch.no_grad():
            for name, w in weights.items():
                getattr(self.gru, name).copy_(w)
        if device.type == "cuda":
            self.gru.flatten_parameters()  # one contiguous weight buffer, as cuDNN wants
        self.params = list(self.gru.parameters())

    def forward(self, x):
        # inference (fwd) runs cuDNN's inference forward, as model.eval() would: its training
        # forward also writes the reserve space that the backward reads
        self.gru.train(torch.is_grad_enabled())
        return self.gru(x)[0]

    def keras_grads(self):
        g = self.gru
        return conversion.torch_to_keras(g.weight_ih_l0.grad, g.weight_hh_l0.grad,
                                         g.bias_ih_l0.grad, g.bias_hh_l0.grad)


class TorchGRUCandidate(Candidate):
    key = "torch"
    label = "torch.nn.GRU"

    def skip_reason(self, case, cfg):
        if not case.reset_after:
            return "torch.nn.GRU has no reset_after=False"
        return None

    def build(self, data, case, cfg):
        return _TorchGRUModel(data, cfg.device)


class _KerasModel(Model):
    def __init__(self, keras, data: CaseData, case: Case, device: torch.device, layer_cls=None):
        self.keras = keras
        self.device_name = str(device)
        F, H = data.kernel.shape[0], data.recurrent_kernel.shape[0]
        layer_cls = keras.layers.GRU if layer_cls is None else layer_cls
        with keras.device(self.device_name):
            # zeros initializers: set_weights overwrites them, and Keras' orthogonal
            # initializer has no bfloat16 QR on the CPU
            self.layer = layer_cls(
                H, return_sequences=True, reset_after=case.reset_after, dtype=case.dtype,
                kernel_initializer="zeros", recurrent_initializer="zeros",
                bias_initializer="zeros")
            self.layer.build((case.shape.B, case.shape.T, F))
            self.layer.set_weights([t.detach().float().cpu().numpy()
                                    for t in (data.kernel, data.recurrent_kernel, data.bias)])
        self.params = [v.value for v in self.layer.trainable_variables]

    def forward(self, x):
        with self.keras.device(self.device_name):
            return self.layer(x, training=torch.is_grad_enabled())


class KerasCandidate(Candidate):
    key = "keras"
    label = "keras.layers.GRU"

    def __init__(self):
        self._keras = None
        self._error: Optional[str] = None

    def load(self):
        """Imports Keras 3 with the torch backend; None (and a reason) when that fails."""
        if self._keras is None and self._error is None:
            if "keras" in sys.modules:
                import keras  # noqa: F811
            else:
                os.environ["KERAS_BACKEND"] = "torch"  # read once, when keras is imported
                try:
                    import keras
                except Exception as e:  # not installed, or broken
                    self._error = f"keras not importable ({type(e).__name__}: {e})"
                    return None
            backend = keras.backend.backend()
            if backend != "torch":
                self._error = (f"keras was already imported with the {backend!r} backend; "
                               "start from a fresh process (KERAS_BACKEND=torch)")
            elif not hasattr(keras, "device") or int(keras.__version__.split(".")[0]) < 3:
                self._error = f"keras {keras.__version__} is not Keras 3"
            else:
                self._keras = keras
        return self._keras

    def available(self) -> Optional[str]:
        return None if self.load() is not None else self._error

    def skip_reason(self, case, cfg):
        if self.load() is None:
            return self._error
        # Keras falls back to a per-step loop off cuDNN: CPU, and reset_after=False anywhere
        if cfg.device.type != "cuda" or not case.reset_after:
            return _loop_skip_reason(case, cfg, "Keras' step loop too slow here")
        return None

    def build(self, data, case, cfg):
        return _KerasModel(self.load(), data, case, cfg.device)


class KerasGruCudaCandidate(KerasCandidate):
    """gru_cuda.keras.GRU inside Keras: the same Keras layer call as the `keras` candidate,
    with the recurrence in gru_cuda's fused op; time both for the pair's speedup (vs_keras)."""
    key = "gru_cuda.keras"
    label = "gru_cuda.keras.GRU"

    def skip_reason(self, case, cfg):
        return self._error if self.load() is None else None

    def build(self, data, case, cfg):
        import gru_cuda.keras  # imports keras, which load() has configured for torch
        return _KerasModel(self.load(), data, case, cfg.device, gru_cuda.keras.GRU)


def keras_version(candidates: Sequence[Candidate]) -> Optional[str]:
    """"3.15.1 (torch backend)" when the Keras candidate is among `candidates` and loads."""
    k = next((c for c in candidates if isinstance(c, KerasCandidate)), None)  # or a subclass
    keras = k.load() if k is not None else None
    return None if keras is None else f"{keras.__version__} ({keras.backend.backend()} backend)"


class _BrokenModel(_FunctionalModel):
    """gru_cuda called with the z and r gate blocks swapped, the classic weight-layout bug."""

    def forward(self, x):
        swap = conversion.swap_zr
        return functional.gru(x, swap(self.kernel), swap(self.recurrent_kernel),
                              swap(self.bias), reset_after=self.reset_after)[0]


class BrokenCandidate(Candidate):
    """Deliberately wrong: shows that the correctness check stops a wrong kernel."""
    key = "broken"
    label = "broken (z/r swapped)"

    def build(self, data, case, cfg):
        return _BrokenModel(data, case.reset_after)


CANDIDATES: Dict[str, Candidate] = {}


def register_candidate(c: Candidate) -> Candidate:
    """Makes a candidate selectable by its key with --candidates (and by the Python API)."""
    CANDIDATES[c.key] = c
    return c


for _c in (GruCudaCandidate(), TorchGRUCandidate(), StepLoopCandidate(), KerasCandidate(),
           KerasGruCudaCandidate(), BrokenCandidate()):
    register_candidate(_c)

ALIASES = {"cudnn": "torch", "nn.gru": "torch", "torch.nn.gru": "torch", "loop": "steploop",
           "step-loop": "steploop", "reference": "steploop", "auto": "gru_cuda",
           "keras_gru_cuda": "gru_cuda.keras"}
# Names that stand for several candidates: the Keras pair runs keras.layers.GRU and
# gru_cuda.keras.GRU interleaved, case by case
GROUPS = {"keras-pair": ("keras", "gru_cuda.keras")}
DEFAULT_CANDIDATES = ("gru_cuda", "paths", "torch", "steploop", "keras")
# --quick leaves Keras out: importing it alone takes seconds
QUICK_CANDIDATES = ("gru_cuda", "paths", "torch", "steploop")
# --preset persistent: the automatic dispatch and every forced path against cuDNN
PERSISTENT_CANDIDATES = ("gru_cuda", "paths", "torch")
# --preset tensor-cores: the automatic dispatch and every persistent path x recurrent product
TENSOR_CORE_CANDIDATES = ("gru_cuda", "products", "torch")


def _product_candidates(device: torch.device, notes: List[str]) -> List[GruCudaCandidate]:
    """`products`: every persistent path of the device x every recurrent product; whether one
    applies to a case (dtype, TF32 allowed, fit) is each candidate's skip_reason."""
    paths = [str(p) for p in gru_cuda.kernel_paths(device) if str(p).startswith("persistent")]
    if not paths:
        notes.append(f"gru_cuda has no persistent kernel path on {device} in this build: "
                     "'products' adds no candidate (the recurrent products are GPU kernels)")
    return [GruCudaCandidate(p, q) for p in paths for q in gru_cuda.dispatch.PRODUCTS]


def resolve_candidates(names: Sequence[str], device: torch.device,
                       notes: List[str]) -> List[Candidate]:
    """The candidates named (keys, aliases, "paths", "gru_cuda[PATH]", "products",
    "gru_cuda[PATH:PRODUCT]"), without duplicates;
    what was left out and why goes to `notes`."""
    out: List[Candidate] = []
    for raw in names:
        name = ALIASES.get(raw.lower(), raw)
        if name in GROUPS:
            chosen = [CANDIDATES[k] for k in GROUPS[name]]
        elif name == "paths":
            paths = [str(p) for p in gru_cuda.kernel_paths(device)]
            if not paths:  # a CUDA device that this build cannot use
                notes.append(f"gru_cuda has no forced kernel paths on {device} in this build: "
                             "timing its automatic dispatch only")
            elif len(paths) == 1:  # e.g. the CPU: forcing it would time auto dispatch twice
                notes.append(f"gru_cuda has one kernel path on {device.type} ({paths[0]}): the "
                             f"automatic dispatch is that path (gru_cuda[{paths[0]}] forces it)")
                paths = []
            chosen = [GruCudaCandidate(p) for p in paths]
        elif name == "products":
            chosen = _product_candidates(device, notes)
        elif name in CANDIDATES:
            chosen = [CANDIDATES[name]]
        elif (m := re.fullmatch(r"gru_cuda\[([^:\]]+)(?::([^:\]]+))?\]", name)):
            if m.group(2) is not None and m.group(2) not in gru_cuda.dispatch.PRODUCTS:
                raise SystemExit(f"candidate {raw!r}: unknown recurrent product "
                                 f"{m.group(2)!r}; expected one of "
                                 f"{', '.join(gru_cuda.dispatch.PRODUCTS)}")
            chosen = [GruCudaCandidate(m.group(1), m.group(2))]
        else:
            others = ", ".join(k for k in CANDIDATES if k != "gru_cuda")
            raise SystemExit(f"unknown candidate {raw!r}; choose from: gru_cuda, paths, "
                             f"gru_cuda[PATH], products, gru_cuda[PATH:PRODUCT], {others}, "
                             f"{', '.join(GROUPS)}")
        for c in chosen:
            if isinstance(c, KerasCandidate):
                why = c.available()
                if why is not None:
                    notes.append(f"keras candidate skipped: {why}")
                    continue
            if all(c.key != o.key for o in out):
                out.append(c)
    return out
