"""Build of gru_cuda._C: a CUDAExtension when torch has CUDA and a toolkit is found, else a
CppExtension. Install with `pip install --no-build-isolation -e .` so that the build uses the
torch already installed (build isolation would download a multi-GB CUDA torch).

Environment:
  GRU_CUDA_BUILD=cpu|cuda   force the CPU-only or the CUDA build (default: auto)
  TORCH_CUDA_ARCH_LIST      CUDA architectures; defaults to "8.0;9.0" when no GPU is visible
  MAX_JOBS                  parallel compile jobs (honoured by torch's ninja build)
"""
import glob
import os
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as e:  # pragma: no cover - a clear message instead of a torch download
    raise SystemExit(
        "gru_cuda needs PyTorch installed before it is built: install torch, then run "
        "`pip install --no-build-isolation -e .`"
    ) from e

HERE = os.path.dirname(os.path.abspath(__file__))


def use_cuda() -> bool:
    forced = os.environ.get("GRU_CUDA_BUILD", "auto").strip().lower()
    if forced not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"GRU_CUDA_BUILD must be auto, cpu or cuda, got {forced!r}")
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if forced == "cuda" and not available:
        raise SystemExit(
            "GRU_CUDA_BUILD=cuda, but torch was built without CUDA "
            f"(torch.version.cuda={torch.version.cuda}) or no CUDA toolkit was found "
            f"(CUDA_HOME={CUDA_HOME})"
        )
    return available if forced == "auto" else forced == "cuda"


def rel(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def extension():
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    # No FP traps or errno are observed by the library, which lets GCC if-convert and vectorise
    # the pointwise loops; IEEE results are unchanged (unlike -ffast-math).
    cxx = ["-O3", "-std=c++20", "-fno-trapping-math", "-fno-math-errno"]
    link = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is a header template: without -fopenmp our pointwise loops run serially.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    include_dirs = [os.path.join(HERE, "csrc")]
    if not use_cuda():
        return CppExtension("gru_cuda._C", sources, include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx}, extra_link_args=link)
    if not torch.cuda.is_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources += rel("csrc/cuda/*.cpp") + rel("csrc/kernels/*.cu")
    nvcc = ["-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr", "-Xptxas=-warn-spills",
            "-DGRU_CUDA_WITH_CUDA"]
    return CUDAExtension("gru_cuda._C", sources, include_dirs=include_dirs,
                         define_macros=[("GRU_CUDA_WITH_CUDA", None)],
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)


setup(
    packages=find_packages(include=["gru_cuda", "gru_cuda.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
