"""What a reader needs to reproduce or compare a result: hardware, versions, settings, load."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import NamedTuple, Optional, Sequence, Tuple

import torch

import gru_cuda
from gru_cuda._library import _C


class CpuLoad(NamedTuple):
    """One reading of the machine's load: os.getloadavg() (1, 5, 15 min) and, on Linux, the
    share of the last 10 s in which some runnable task waited for a CPU (PSI, percent)."""
    loadavg: Optional[Tuple[float, float, float]]
    pressure: Optional[float]


def read_cpu_load() -> CpuLoad:
    """The one reader of the load average and of /proc/pressure/cpu."""
    try:
        loadavg = tuple(os.getloadavg())
    except (AttributeError, OSError):
        loadavg = None
    try:
        with open("/proc/pressure/cpu") as f:
            pressure = float(f.readline().split()[1].split("=")[1])  # "some avg10=3.14 ..."
    except (OSError, IndexError, ValueError):
        pressure = None
    return CpuLoad(loadavg, pressure)


def load_average_text(load: CpuLoad) -> Optional[str]:
    """"1.24 0.49 0.29 (cpu pressure 3.14%)": the load average lags, PSI shows the present."""
    if load.loadavg is None:
        return None
    out = " ".join(f"{v:.2f}" for v in load.loadavg)
    if load.pressure is not None:
        out += f" (cpu pressure {load.pressure:.2f}%)"
    return out


def busy_reason(load: CpuLoad) -> Optional[str]:
    """Why the machine looks busy, or None: CPU pressure over the last 10 s when Linux has it
    (the load average lags by minutes after a burst), else a load average above the CPUs."""
    if load.pressure is not None:
        return f"CPU pressure {load.pressure:.0f}% over the last 10 s" if load.pressure > 20 \
            else None
    if load.loadavg is None:
        return None
    n = os.cpu_count() or 1
    return f"load average {load.loadavg[0]:.1f} on {n} CPUs" if load.loadavg[0] > n else None


def _run_cmd(cmd: Sequence[str], cwd: Optional[str] = None) -> Optional[str]:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> Optional[str]:
    """The commit of the package's own git work tree ("+dirty" with changes), or None: only
    when git tracks this very package, found from the package's location (an installed copy
    inside some other repository, e.g. a virtual environment in a project, has none)."""
    pkg = os.path.dirname(os.path.abspath(gru_cuda.__file__))
    if _run_cmd(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=pkg) is None:
        return None
    commit = _run_cmd(["git", "rev-parse", "--short=12", "HEAD"], cwd=pkg)
    if commit is None:
        return None
    dirty = _run_cmd(["git", "status", "--porcelain", "--untracked-files=no"], cwd=pkg)
    return commit + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> Optional[str]:
    out = _run_cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out:
        return out.splitlines()[0].strip()
    try:  # pynvml, when installed, works without nvidia-smi on PATH
        import pynvml  # type: ignore
        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:
        return None


def safe_build_info() -> Optional[dict]:
    try:
        return gru_cuda.build_info()
    except Exception:
        return None


def collect_metadata(device: torch.device, load: Optional[CpuLoad] = None) -> dict:
    """Hardware, versions and settings of a run on `device`; `load`: a read_cpu_load() taken
    at the start of the run (read now when None)."""
    if load is None:
        load = read_cpu_load()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": None, "sm_count": None, "compute_capability": None,
        "gpu_memory_gb": None, "l2_cache_mb": None,
        "driver": None, "cuda_driver_api": None, "cuda": torch.version.cuda, "cudnn": None,
        "cudnn_tf32": None, "matmul_tf32": None,
        "torch": torch.__version__,
        "gru_cuda": getattr(gru_cuda, "__version__", None),
        "gru_cuda_build": safe_build_info(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average_text(load),
        "kernel_paths": None, "device_caps": None,
    }
    try:
        meta["kernel_paths"] = [str(p) for p in gru_cuda.kernel_paths(device)]
    except Exception:  # e.g. a CUDA device this build cannot use
        pass
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        meta.update(
            device_name=props.name, sm_count=props.multi_processor_count,
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            l2_cache_mb=(round(props.L2_cache_size / 2**20, 1)
                         if getattr(props, "L2_cache_size", None) else None),
            driver=_nvidia_driver(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            cudnn_tf32=bool(torch.backends.cudnn.allow_tf32),
            matmul_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
        get_drv = getattr(torch._C, "_cuda_getDriverVersion", None)
        if get_drv is not None:
            try:
                v = int(get_drv())
                meta["cuda_driver_api"] = f"{v // 1000}.{(v % 1000) // 10}"
            except Exception:
                pass
        caps = getattr(_C, "persistent_device_caps", None)  # CUDA builds only
        if caps is not None:
            try:
                meta["device_caps"] = dict(caps(idx))
            except Exception:
                pass
    else:
        meta["device_name"] = f"CPU: {meta['cpu_model']}"
    return meta
