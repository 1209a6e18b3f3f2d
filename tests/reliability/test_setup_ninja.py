"""setup.py's ninja requirement: a missing ninja stops the build with a clear message, unless
GRU_CUDA_ALLOW_SERIAL_BUILD=1 (then a warning on stderr and the build goes on)."""
import os
import runpy

import pytest
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETUP_PY = os.path.join(ROOT, "setup.py")


@pytest.fixture
def require_ninja(monkeypatch, tmp_path):
    # Not run as __main__, setup.py defines its helpers and builds nothing.
    ns = runpy.run_path(SETUP_PY, run_name="gru_cuda_setup_under_test")
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    # An interpreter folder without ninja, so that the fallback to the environment's ninja
    # does not find one.
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.delenv("GRU_CUDA_ALLOW_SERIAL_BUILD", raising=False)
    return ns["require_ninja"]


def test_missing_ninja_stops_the_build(require_ninja):
    with pytest.raises(SystemExit) as e:
        require_ninja()
    msg = str(e.value.code)
    assert "pip install ninja" in msg and "GRU_CUDA_ALLOW_SERIAL_BUILD=1" in msg


def test_serial_build_allowed_with_a_warning(require_ninja, monkeypatch, capsys):
    monkeypatch.setenv("GRU_CUDA_ALLOW_SERIAL_BUILD", "1")
    require_ninja()  # returns: the build goes on
    err = capsys.readouterr().err
    assert "WARNING: ninja was not found" in err and "serial" in err


def test_only_1_allows_the_serial_build(require_ninja, monkeypatch):
    monkeypatch.setenv("GRU_CUDA_ALLOW_SERIAL_BUILD", "0")
    with pytest.raises(SystemExit):
        require_ninja()


def test_ninja_present_passes(require_ninja, monkeypatch, capsys):
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    require_ninja()
    assert capsys.readouterr().err == ""


def test_ninja_of_an_unactivated_environment_is_used(require_ninja, monkeypatch, tmp_path):
    # ninja next to the interpreter (a venv whose bin/ is not on PATH) goes onto PATH.
    (tmp_path / "ninja").write_text("")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(cpp_extension, "is_ninja_available",
                        lambda: os.environ["PATH"].split(os.pathsep)[0] == str(tmp_path))
    require_ninja()
    assert os.environ["PATH"].split(os.pathsep)[0] == str(tmp_path)
