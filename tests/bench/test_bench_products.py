"""The benchmark's recurrent-product rows on the CPU: gru_cuda[PATH:PRODUCT] candidates, the
`products` group, the floor fractions, the tensor-cores preset and its TF32 setting. The GPU
plans and last paths are faked; the arithmetic and the plumbing are what is checked."""
import csv
import glob
import json
import os

import pytest
import torch

import gru_cuda
import gru_cuda.dispatch
from gru_cuda import bench

FAST = ["--device", "cpu", "--repeats", "1", "--warmup", "0", "--no-progress"]
CPU = torch.device("cpu")


def load_json(out_dir):
    (path,) = glob.glob(os.path.join(str(out_dir), "*.json"))
    with open(path) as f:
        return json.load(f)


@pytest.fixture
def tf32_flags():
    """The benchmark's --tf32 sets torch's process-wide switches: put them back."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_product_candidates_are_parsed_with_their_keys(monkeypatch):
    notes = []
    cands = bench.resolve_candidates(
        ["gru_cuda[persistent:tensor_core]", "gru_cuda[persistent_cluster:3xtf32]",
         "gru_cuda[persistent]", "gru_cuda[persistent:tensor_core]"], CPU, notes)
    assert [c.key for c in cands] == ["gru_cuda[persistent:tensor_core]",
                                      "gru_cuda[persistent_cluster:3xtf32]",
                                      "gru_cuda[persistent]"]
    assert [(c.path, c.product) for c in cands] == [("persistent", "tensor_core"),
                                                    ("persistent_cluster", "3xtf32"),
                                                    ("persistent", None)]
    assert all(c.label == c.key for c in cands) and notes == []
    with pytest.raises(SystemExit, match="unknown recurrent product 'fp8'.*tensor_core"):
        bench.resolve_candidates(["gru_cuda[persistent:fp8]"], CPU, [])
    with pytest.raises(SystemExit, match="gru_cuda\\[PATH:PRODUCT\\]"):
        bench.resolve_candidates(["gru_cuda[a:b:c]"], CPU, [])

    # `products`: every persistent path of the device x every product, stepwise left out
    monkeypatch.setattr(gru_cuda, "kernel_paths",
                        lambda device: ["stepwise", "persistent", "persistent_cluster"])
    keys = [c.key for c in bench.resolve_candidates(["gru_cuda", "products"], CPU, notes)]
    assert keys == ["gru_cuda"] + [f"gru_cuda[{p}:{q}]"
                                   for p in ("persistent", "persistent_cluster")
                                   for q in gru_cuda.dispatch.PRODUCTS]
    assert len(keys) == 1 + 2 * 4 and notes == []


def test_products_on_a_cpu_is_a_note_and_the_run_goes_on(tmp_path, capsys):
    rc = bench.main(["--shape", "2,4,8", "--modes", "fwd", "--dtypes", "float32",
                     "--reset-after", "true", "--candidates", "gru_cuda", "products",
                     "--out", str(tmp_path), "--no-plot", *FAST])
    assert rc == 0
    out = capsys.readouterr().out
    assert "no persistent kernel path on cpu" in out and "'products' adds no candidate" in out
    doc = load_json(tmp_path)
    assert [r["candidate"] for r in doc["results"]] == ["gru_cuda"]
    assert any("'products' adds no candidate" in n for n in doc["metadata"]["notes"])


def _fake_explain(plans):
    """An explain that answers from `plans[(forced path, forced product)]`, as the capacity
    model would under the candidate's forcing."""
    seen = []

    def explain(B, T, H, F=None, **kwargs):
        key = (gru_cuda.dispatch.get_path(), gru_cuda.dispatch.get_product())
        seen.append(key)
        fwd, bwd = plans[key]
        return {"path": fwd["path"], "product": fwd.get("product"), "reason": fwd["reason"],
                "backward_path": bwd["path"], "backward_product": bwd.get("product"),
                "backward_reason": bwd["reason"], "capacity": {"forward": fwd, "backward": bwd}}
    return explain, seen


def _plan(path, product=None, compute=0.0, barrier=0.0, reason="fits"):
    return {"path": path, "product": product or "", "reason": reason,
            "floor_compute_us": compute, "floor_barrier_us": barrier}


def test_skip_reason_asks_the_model_under_both_forcings(monkeypatch):
    explain, seen = _fake_explain({
        ("persistent", "tensor_core"): (_plan("persistent", "tensor_core"),
                                        _plan("error", reason="U does not fit")),
        ("persistent", "tf32"): (_plan("error", reason="tf32 needs TF32 allowed"),
                                 _plan("error", reason="tf32 needs TF32 allowed")),
        ("stepwise", "simt"): (_plan("stepwise"), _plan("stepwise")),
    })
    monkeypatch.setattr(gru_cuda.dispatch, "explain", explain)
    cfg = bench.Config(device=CPU, blocks=[], candidates=[])
    shape = bench.Shape(16, 8, 32, 32)

    def reason(key, mode):
        (c,) = bench.resolve_candidates([key], CPU, [])
        return c.skip_reason(bench.Case(shape, "bfloat16", True, mode), cfg)

    assert reason("gru_cuda[persistent:tensor_core]", "fwd") is None
    why = reason("gru_cuda[persistent:tensor_core]", "fwd+bwd")
    assert "persistent:tensor_core cannot run" in why and "U does not fit" in why
    assert "tf32 needs TF32 allowed" in reason("gru_cuda[persistent:tf32]", "fwd")
    why = reason("gru_cuda[stepwise:simt]", "fwd")  # no persistent path: no product runs
    assert "stepwise:simt does not apply" in why and "would run stepwise" in why
    assert set(seen) == {("persistent", "tensor_core"), ("persistent", "tf32"),
                         ("stepwise", "simt")}
    # the forcing is undone afterwards
    assert gru_cuda.dispatch.get_path() is None and gru_cuda.dispatch.get_product() is None


def test_floor_fractions_of_fake_plans():
    fwd = {"floor_compute_us": 0.25, "floor_barrier_us": 1.5}
    bwd = {"floor_compute_us": 0.5, "floor_barrier_us": 3.0}
    # fwd: the forward plan alone; 100 steps of 0.25 us in 0.1 ms = 0.25 of the time
    got = bench.floor_fractions(fwd, bwd, "fwd", 100, 0.1)
    assert got == pytest.approx({"tc_floor": 0.25, "barrier_floor": 1.5})
    for mode in ("fwd+bwd", "train"):  # both plans: (0.25 + 0.5) x 100 us over 1 ms
        got = bench.floor_fractions(fwd, bwd, mode, 100, 1.0)
        assert got == pytest.approx({"tc_floor": 0.075, "barrier_floor": 0.45})
    # a backward that ran stepwise (no plan) adds nothing; zero floors give no column
    assert bench.floor_fractions(fwd, None, "fwd+bwd", 100, 1.0) == pytest.approx(
        {"tc_floor": 0.025, "barrier_floor": 0.15})
    assert bench.floor_fractions({"floor_compute_us": 0.0, "floor_barrier_us": 2.0}, None,
                                 "fwd", 10, 1.0) == pytest.approx({"barrier_floor": 0.02})
    assert bench.floor_fractions(None, None, "fwd+bwd", 10, 1.0) == {}
    assert bench.floor_fractions(fwd, bwd, "fwd", 10, None) == {}
    with pytest.raises(ValueError, match="mode must be one of"):
        bench.floor_fractions(fwd, bwd, "backward", 10, 1.0)


def test_persistent_rows_get_the_product_and_the_floor_columns(tmp_path, monkeypatch):
    """A gru_cuda row whose last call went persistent (faked: the CPU ran it) has the product
    in its path label and tc_floor / barrier_floor from the plan under the same forcing."""
    fwd = _plan("persistent", "tensor_core", compute=0.25, barrier=1.5)
    explain, seen = _fake_explain({
        (None, None): (fwd, _plan("stepwise")),
        ("persistent", "tensor_core"): (fwd, _plan("persistent", "tensor_core", 0.5, 3.0)),
        ("persistent", "simt"): (_plan("persistent", "simt", 2.0, 1.5),
                                 _plan("persistent", "simt", 2.0, 1.5)),
    })
    monkeypatch.setattr(gru_cuda.dispatch, "explain", explain)
    # last_path reports the last call: remember the forcing each call ran under
    last_forcing = []
    real_gru = gru_cuda.functional.gru

    def gru(*args, **kwargs):
        last_forcing.append((gru_cuda.dispatch.get_path(), gru_cuda.dispatch.get_product()))
        return real_gru(*args, **kwargs)
    monkeypatch.setattr(gru_cuda.functional, "gru", gru)

    def last_path():  # what the forcing of the last call would have run
        forced = last_forcing[-1]
        if forced == (None, None):
            return {"forward": "persistent", "forward_product": "tensor_core",
                    "backward": "stepwise", "backward_product": None}
        if forced[1] == "simt":  # the device fell back: not what the model planned
            return {"forward": "stepwise", "forward_product": None,
                    "backward": "persistent", "backward_product": "tf32"}
        return {"forward": "persistent", "forward_product": "tensor_core",
                "backward": "persistent", "backward_product": "tensor_core"}
    monkeypatch.setattr(gru_cuda.dispatch, "last_path", last_path)

    T = 8
    bench.main(["--shape", f"2,{T},8", "--modes", "fwd", "fwd+bwd", "--dtypes", "float32",
                "--reset-after", "true", "--candidates", "gru_cuda",
                "gru_cuda[persistent:tensor_core]", "gru_cuda[persistent:simt]",
                "--out", str(tmp_path), "--no-plot", *FAST])
    doc = load_json(tmp_path)
    rows = {(r["candidate"], r["mode"]): r for r in doc["results"]}
    assert all(r["status"] == "ok" for r in rows.values())
    for r in rows.values():
        assert r["step_us"] == pytest.approx(r["ms"] * 1e3 / T)
    auto = rows[("gru_cuda", "fwd+bwd")]
    assert auto["path"] == "persistent:tensor_core/stepwise"
    assert auto["tc_floor"] == pytest.approx(0.25 * T / (auto["ms"] * 1e3))
    assert auto["barrier_floor"] == pytest.approx(1.5 * T / (auto["ms"] * 1e3))
    assert rows[("gru_cuda", "fwd")]["path"] == "persistent:tensor_core"
    tc = rows[("gru_cuda[persistent:tensor_core]", "fwd+bwd")]
    assert tc["path"] == "persistent:tensor_core/persistent:tensor_core"
    assert tc["tc_floor"] == pytest.approx((0.25 + 0.5) * T / (tc["ms"] * 1e3))
    assert tc["barrier_floor"] == pytest.approx((1.5 + 3.0) * T / (tc["ms"] * 1e3))
    tc_fwd = rows[("gru_cuda[persistent:tensor_core]", "fwd")]
    assert tc_fwd["tc_floor"] == pytest.approx(0.25 * T / (tc_fwd["ms"] * 1e3))
    # what ran is not what the model planned: no floors, and the row says why
    simt = rows[("gru_cuda[persistent:simt]", "fwd+bwd")]
    assert "tc_floor" not in simt and "barrier_floor" not in simt
    assert "no floors" in simt["note"] and "persistent:tf32 ran" in simt["note"]
    # the columns reach the CSV
    (csv_path,) = glob.glob(os.path.join(str(tmp_path), "*.csv"))
    with open(csv_path) as f:
        by_key = {(r["candidate"], r["mode"]): r for r in csv.DictReader(f)}
    assert float(by_key[("gru_cuda", "fwd+bwd")]["tc_floor"]) == pytest.approx(
        auto["tc_floor"], rel=1e-5)
    assert by_key[("gru_cuda[persistent:simt]", "fwd+bwd")]["tc_floor"] == ""
    assert "step_us" in doc["conventions"] and "tc_floor" in doc["conventions"]


def test_tensor_cores_preset_lists_without_timing(capsys, tf32_flags):
    gpu = torch.device("cuda")
    cases = bench.expand_cases(bench.preset_blocks("tensor-cores", gpu))
    assert {c.shape.B for c in cases} == {1, 16, 32, 64}
    assert {c.shape.H for c in cases} == {512, 1024}
    assert {c.shape.T for c in cases} == {256} and all(c.shape.F == c.shape.H for c in cases)
    assert {c.dtype for c in cases} == {"bfloat16", "float32"}
    assert {c.reset_after for c in cases} == {True} and {c.mode for c in cases} == {"fwd",
                                                                                    "fwd+bwd"}
    assert len(cases) == 4 * 2 * 2 * 2

    bench.main(["--preset", "tensor-cores", "--list", "--device", "cpu"])
    out = capsys.readouterr().out
    # the default candidates: auto, products (none on a CPU: a note), cuDNN
    assert "candidates: gru_cuda, torch" in out and "'products' adds no candidate" in out
    assert "8 cases" in out and "Speedup" not in out  # nothing was timed

    # TF32 on for both cuDNN and gru_cuda unless --tf32 says otherwise; other presets keep
    # torch's default
    parser = bench.build_parser()
    for argv, want in ((["--preset", "tensor-cores"], True),
                       (["--preset", "tensor-cores", "--tf32", "off"], False),
                       (["--preset", "tensor-cores", "--shape", "2,4,8"], True),
                       (["--preset", "persistent"], False)):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not want
        cfg = bench.config_from_args(parser.parse_args(argv + ["--device", "cpu"]), argv)
        assert torch.backends.cudnn.allow_tf32 is want, argv
        assert torch.backends.cuda.matmul.allow_tf32 is want, argv
        if argv[1] == "tensor-cores":
            assert [c.key for c in cfg.candidates] == ["gru_cuda", "torch"]


def test_precision_line_and_tensor_core_goals():
    on = {"cudnn_tf32": True, "matmul_tf32": True}
    assert "TF32 on on both sides" in bench.precision_text(on)
    assert "TF32 off on both sides" in bench.precision_text({"cudnn_tf32": False,
                                                             "matmul_tf32": False})
    mixed = bench.precision_text({"cudnn_tf32": True, "matmul_tf32": False})
    assert "NOT the same precision" in mixed
    assert bench.precision_text({"cudnn_tf32": None, "matmul_tf32": None}) is None

    def row(B, dtype, vs_torch, H=1024, mode="fwd+bwd"):
        return {"candidate": "gru_cuda", "status": "ok", "B": B, "T": 128, "H": H, "F": H,
                "dtype": dtype, "reset_after": True, "mode": mode, "ms": 1.0,
                "vs_torch": vs_torch}
    rows = [row(16, "bfloat16", 1.7), row(32, "bfloat16", 1.2), row(64, "bfloat16", 1.1),
            row(16, "float32", 1.6), row(32, "float32", 1.5), row(64, "float32", 0.9),
            row(16, "bfloat16", 0.1, H=512), row(16, "bfloat16", 0.1, mode="fwd")]
    goals = bench.tensor_core_goals(rows, on)
    assert [v for _, v, _ in goals] == ["1 of 2 missed", "met", "met", "1 of 1 missed"]
    assert "B=32" in goals[0][2] and "1.20x" in goals[0][2]
    assert "0.90x" in goals[3][2]
    off = bench.tensor_core_goals(rows, {"cudnn_tf32": False, "matmul_tf32": False})
    assert [v for _, v, _ in off][2:] == ["not measured"] * 2 and "--tf32 on" in off[2][2]
    assert [v for _, v, _ in bench.tensor_core_goals([], on)] == ["no case"] * 4
