"""python -m gru_cuda.selftest: passes on this device, and fails when a kernel is wrong."""
import json
import os
import subprocess
import sys

import torch

import gru_cuda
from gru_cuda import selftest


def test_runs_every_dtype_and_convention_and_passes():
    rows = selftest.run(device="cpu", quick=True)
    assert rows and all(r.status == "pass" for r in rows), [r for r in rows if r.status != "pass"]
    assert {r.dtype for r in rows} == {"float32", "bfloat16", "float16", "float64"}
    assert {r.convention for r in rows} == {"reset_after", "reset_before"}
    assert {r.path for r in rows} == {"cpu"}
    assert set(selftest.QUICK_OPTION_SETS) == {r.options for r in rows}
    for r in rows:  # real comparisons happened: errors are numbers within the tolerances
        tol_f, tol_g = selftest.TOLERANCES[getattr(torch, r.dtype)]
        assert 0 <= r.forward_error <= tol_f and 0 <= r.gradient_error <= tol_g


def test_command_line_writes_json_and_exits_zero(tmp_path):
    out = tmp_path / "selftest.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(gru_cuda.__file__))] + sys.path))
    res = subprocess.run([sys.executable, "-m", "gru_cuda.selftest", "--device", "cpu", "--quick",
                          "--json", str(out)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "device facts:" in res.stdout
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("selftest: ") and " 0 failed" in last, last
    data = json.loads(out.read_text())
    assert data["summary"]["failed"] == 0 and data["summary"]["passed"] == len(data["rows"])
    assert data["facts"]["kernel_paths"] == ["cpu"]


def test_a_wrong_kernel_fails(monkeypatch, capsys):
    real = selftest._kernel_gru

    def off_by_a_little(*args, **kw):  # a kernel whose outputs are wrong by 1e-3
        out, state = real(*args, **kw)
        return out * (1 + 1e-3), state

    monkeypatch.setattr(selftest, "_kernel_gru", off_by_a_little)
    rows = selftest.run(device="cpu", quick=True)
    assert all(r.status == "FAIL" for r in rows if r.dtype in ("float32", "float64"))
    assert "forward error" in rows[0].note
    assert selftest.main(["--device", "cpu", "--quick"]) == 1
    assert " 0 failed" not in capsys.readouterr().out.strip().splitlines()[-1]


def test_an_unwritten_output_fails(monkeypatch):
    real = selftest._kernel_gru

    def leaves_nan(*args, **kw):  # an element the kernel "forgot" to write
        out, state = real(*args, **kw)
        out = out.clone()
        out.view(-1)[3] = float("nan")
        return out, state

    monkeypatch.setattr(selftest, "_kernel_gru", leaves_nan)
    rows = selftest.run(device="cpu", paths=["cpu"], quick=True)
    assert rows and all(r.status == "FAIL" and "NaN" in r.note for r in rows)


def test_unknown_path_is_a_clear_error():
    try:
        selftest.run(device="cpu", paths=["persistent"])
    except ValueError as e:
        assert "persistent" in str(e) and "available" in str(e)
    else:
        raise AssertionError("expected a ValueError")
