"""Build of gru_cuda._C: a CUDAExtension when torch has CUDA and a toolkit is found, else a
CppExtension. Install with `pip install --no-build-isolation -e .` so that the build uses the
torch already installed (build isolation would download a multi-GB CUDA torch).

Environment:
  GRU_CUDA_BUILD=cpu|cuda   force the CPU-only or the CUDA build (default: auto)
  TORCH_CUDA_ARCH_LIST      CUDA architectures; defaults to "8.0;9.0" when no GPU is visible
  MAX_JOBS                  parallel compile jobs (honoured by torch's ninja build)
  GRU_CUDA_ALLOW_SERIAL_BUILD=1
                            build without ninja, with torch's serial distutils backend (one
                            file at a time: about an hour for the CUDA build). Without it a
                            missing ninja stops the build: `pip install --no-build-isolation`
                            ignores pyproject.toml's build requirements, so ninja is not
                            installed for you; `pip install ninja` first.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
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
    cuda = available if forced == "auto" else forced == "cuda"
    # torch derives CUDA_HOME from nvcc's place on PATH; a wrapper script there (e.g.
    # /usr/local/bin/nvcc) gives a folder without headers and a late, cryptic compile error.
    if cuda and not os.path.isfile(os.path.join(CUDA_HOME, "include", "cuda_runtime_api.h")):
        raise SystemExit(
            f"CUDA build: CUDA_HOME={CUDA_HOME} has no include/cuda_runtime_api.h; set CUDA_HOME "
            "to the CUDA toolkit's folder (e.g. /usr/local/cuda), or GRU_CUDA_BUILD=cpu"
        )
    return cuda


def require_ninja() -> None:
    """Stops the build when ninja is missing, unless GRU_CUDA_ALLOW_SERIAL_BUILD=1.

    torch's BuildExtension silently falls back to its serial distutils backend without ninja,
    which turns minutes into an hour for the CUDA build.
    """
    if not cpp_extension.is_ninja_available():
        # ninja installed into this interpreter's environment, which is not activated (its bin
        # folder is not on PATH): use it rather than fail.
        here = os.path.dirname(sys.executable)
        if os.path.isfile(os.path.join(here, "ninja")):
            os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    if cpp_extension.is_ninja_available():
        return
    if os.environ.get("GRU_CUDA_ALLOW_SERIAL_BUILD", "").strip() == "1":
        bar = "!" * 78
        print(f"\n{bar}\nWARNING: ninja was not found and GRU_CUDA_ALLOW_SERIAL_BUILD=1: "
              "gru_cuda is built with torch's serial\ndistutils backend, one file at a time "
              "(about an hour for the CUDA build).\n`pip install ninja` makes the build "
              f"parallel.\n{bar}",
              file=sys.stderr, flush=True)
        return
    raise SystemExit(
        "gru_cuda's build needs ninja (`ninja --version` failed): `pip install ninja`, then build "
        "again. `pip install --no-build-isolation` does not install pyproject.toml's build "
        "requirements, so ninja must be installed beforehand. To build without it anyway (torch's "
        "serial backend: about an hour for the CUDA build), set GRU_CUDA_ALLOW_SERIAL_BUILD=1."
    )


class BuildExt(BuildExtension):
    """torch's BuildExtension with ninja required (see require_ninja)."""

    def __init__(self, *args, **kwargs):
        require_ninja()
        kwargs.setdefault("use_ninja", True)
        super().__init__(*args, **kwargs)


def rel(pattern):
    matches = glob.glob(os.path.join(HERE, pattern), recursive=True)
    return sorted(os.path.relpath(p, HERE) for p in matches)


def extension():
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/**/*.cpp")
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
    sources += rel("csrc/cuda/*.cpp") + rel("csrc/kernels/**/*.cu")
    nvcc = ["-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr", "-Xptxas=-warn-spills",
            "-DGRU_CUDA_WITH_CUDA"]
    return CUDAExtension("gru_cuda._C", sources, include_dirs=include_dirs,
                         define_macros=[("GRU_CUDA_WITH_CUDA", None)],
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)


# pip runs this file as __main__ too (setuptools' build backend); the guard lets the tests load
# require_ninja without starting a build.
if __name__ == "__main__":
    setup(
        packages=find_packages(include=["gru_cuda", "gru_cuda.*"]),
        ext_modules=[extension()],
        cmdclass={"build_ext": BuildExt},
    )
