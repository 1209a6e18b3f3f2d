"""The benchmark CLI (gru_cuda.bench, benchmarks/bench_gru.py) on the CPU: outputs, the
correctness gate, metadata, shapes and candidates. Timings themselves are not asserted."""
import contextlib
import csv
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

import gru_cuda
import gru_cuda.dispatch  # noqa: F401  (gru_cuda.dispatch.explain / last_path are patched)
from gru_cuda import bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--device", "cpu", "--repeats", "1", "--warmup", "0", "--no-progress"]


def load_json(out_dir):
    (path,) = glob.glob(os.path.join(out_dir, "*.json"))
    with open(path) as f:
        return json.load(f)


def rows_of(doc, candidate):
    return [r for r in doc["results"] if r["candidate"] == candidate]


def test_quick_preset_writes_csv_json_png(tmp_path):
    """`python -m gru_cuda.bench --quick` runs end to end and writes the three files."""
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, "-m", "gru_cuda.bench", "--quick", "--out", str(out), *FAST],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert [os.path.splitext(f)[1] for f in files] == [".csv", ".json", ".png"], files
    stem = os.path.splitext(files[0])[0]
    assert stem.startswith("gru_bench_quick_cpu-") and all(f.startswith(stem) for f in files)
    date = stem.rsplit("_", 1)[1]  # YYYYmmdd-HHMMSS
    assert len(date) == 15 and date[8] == "-" and date.replace("-", "").isdigit()
    with open(out / files[2], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    doc = load_json(out)
    ours = rows_of(doc, "gru_cuda")
    # 2 shapes x reset_after {True, False} x 3 modes, float32
    assert len(ours) == 12 and all(r["status"] == "ok" and r["ms"] > 0 for r in ours)
    assert {r["mode"] for r in ours} == {"fwd", "fwd+bwd", "train"}
    assert all(r["max_err"] < 1e-5 for r in ours)
    torch_rows = rows_of(doc, "torch")
    assert all(r["status"] == ("ok" if r["reset_after"] else "skipped") for r in torch_rows)
    for r in ours:
        if r["reset_after"]:
            assert r["vs_torch"] > 0 and r["vs_steploop"] > 0
            assert r["tflops"] == pytest.approx(r["gflop"] / r["ms"], rel=1e-6)  # G/ms = T/s

    # the table was printed, with the header and the summary
    assert "candidate" in proc.stdout and "Speedup of gru_cuda" in proc.stdout

    # metadata: in the JSON once, in every CSV row
    meta = doc["metadata"]
    for key in ("device_name", "cpu_model", "torch_threads", "torch", "gru_cuda", "date",
                "sm_count", "driver", "cuda", "cudnn", "git_commit"):
        assert key in meta
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__
    assert meta["gru_cuda"] == gru_cuda.__version__
    with open(out / files[0]) as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(doc["results"])
    assert all(r["torch"] == torch.__version__ and r["device_name"] and r["date"]
               for r in csv_rows)
    # time per step in every timed row; the GPU floors stay empty on a CPU
    for r in csv_rows:
        if r["status"] == "ok":
            assert float(r["step_us"]) == pytest.approx(float(r["ms"]) * 1e3 / int(r["T"]),
                                                        rel=1e-4)
        assert r["tc_floor"] == r["barrier_floor"] == ""


def test_wrong_candidate_is_reported_and_not_timed(tmp_path, capsys):
    rc = bench.main(["--quick", "--shape", "3,6,8", "--modes", "fwd", "fwd+bwd",
                     "--reset-after", "true", "--candidates", "gru_cuda", "broken",
                     "--out", str(tmp_path), "--no-plot", *FAST])
    assert rc == 0
    doc = load_json(tmp_path)
    broken = rows_of(doc, "broken")
    assert len(broken) == 2
    for r in broken:
        assert r["status"] == "WRONG"
        assert r["max_err"] > 0.1 and "not timed" in r["note"]
        assert r.get("ms") is None and r.get("repeats") is None
    assert all(r["status"] == "ok" and r["ms"] > 0 for r in rows_of(doc, "gru_cuda"))
    printed = capsys.readouterr().out
    assert "WRONG" in printed and "broken" in printed


class _RaisingCandidate(bench.Candidate):
    key = "raising"
    label = "raising"

    def build(self, data, case, cfg):
        raise RuntimeError("no kernel for this shape")


def test_failing_candidate_is_an_error_and_the_run_goes_on(tmp_path):
    bench.register_candidate(_RaisingCandidate())
    try:
        bench.main(["--shape", "2,4,8", "--modes", "fwd", "--dtypes", "float32",
                    "--reset-after", "true", "--candidates", "raising", "gru_cuda",
                    "--out", str(tmp_path), "--no-plot", *FAST])
    finally:
        bench.CANDIDATES.pop("raising")
    doc = load_json(tmp_path)
    (r,) = rows_of(doc, "raising")
    assert r["status"] == "error" and "no kernel for this shape" in r["note"]
    assert rows_of(doc, "gru_cuda")[0]["status"] == "ok"


def test_forced_paths_are_candidates(tmp_path, monkeypatch):
    """Each of gru_cuda.kernel_paths(device) is timed inside its force_path context; with no
    path for the device (a CUDA device this build cannot use) the run notes it and goes on."""
    entered = []

    @contextlib.contextmanager
    def force_path(name):
        entered.append(name)
        yield

    monkeypatch.setattr(gru_cuda, "kernel_paths", lambda device: ["alpha", "beta"],
                        raising=False)
    monkeypatch.setattr(gru_cuda, "force_path", force_path, raising=False)
    bench.main(["--shape", "2,4,8", "--modes", "fwd+bwd", "--dtypes", "float32",
                "--reset-after", "false", "--candidates", "gru_cuda", "paths",
                "--out", str(tmp_path), "--no-plot", *FAST])
    doc = load_json(tmp_path)
    assert [r["candidate"] for r in doc["results"]] == ["gru_cuda", "gru_cuda[alpha]",
                                                        "gru_cuda[beta]"]
    assert all(r["status"] == "ok" for r in doc["results"])
    assert set(entered) == {"alpha", "beta"}

    # a forced path that the capacity model says cannot run is skipped with its reason, and
    # the path that ran (gru_cuda.dispatch.last_path) is recorded
    def explain(*args, **kwargs):  # called inside force_path(name): entered[-1] is name
        bad = entered[-1] == "beta"
        return {"path": "error" if bad else "cpu", "reason": "U does not fit" if bad else "",
                "backward_path": "cpu", "backward_reason": ""}

    monkeypatch.setattr(gru_cuda.dispatch, "explain", explain)
    monkeypatch.setattr(gru_cuda.dispatch, "last_path",
                        lambda: {"forward": "persistent", "backward": "stepwise"})
    out2 = tmp_path / "second"
    bench.main(["--shape", "2,4,8", "--modes", "fwd+bwd", "--dtypes", "float32",
                "--reset-after", "true", "--candidates", "gru_cuda", "paths",
                "--out", str(out2), "--no-plot", *FAST])
    rows = {r["candidate"]: r for r in load_json(out2)["results"]}
    assert rows["gru_cuda[beta]"]["status"] == "skipped"
    assert "U does not fit" in rows["gru_cuda[beta]"]["note"]
    assert rows["gru_cuda[alpha]"]["status"] == "ok"
    assert rows["gru_cuda"]["path"] == "persistent/stepwise"

    monkeypatch.setattr(gru_cuda, "kernel_paths", lambda device: ["cpu"])
    notes = []
    cands = bench.resolve_candidates(["gru_cuda", "paths"], torch.device("cpu"), notes)
    assert [c.key for c in cands] == ["gru_cuda"] and "one kernel path" in notes[0]

    monkeypatch.setattr(gru_cuda, "kernel_paths", lambda device: [])
    notes = []
    cands = bench.resolve_candidates(["gru_cuda", "paths"], torch.device("cpu"), notes)
    assert [c.key for c in cands] == ["gru_cuda"] and "no forced kernel paths" in notes[0]


def test_shapes_presets_and_flop_convention(capsys):
    s = bench.Shape(2, 3, 4, 5)
    assert bench.flops(s, "fwd") == 6 * 4 * 4 * 2 * 3
    assert bench.flops(s, "fwd+bwd") == bench.flops(s, "train") == 3 * bench.flops(s, "fwd")
    assert bench.flops(s, "fwd", input_projection=True) == 6 * 4 * (4 + 5) * 2 * 3

    bench.main(["--list", "--device", "cpu", "--shape", "4,16,32", "--shape", "1,2,3,7",
                "--batch", "1", "2", "--hidden", "8", "--seq", "5", "--modes", "fwd",
                "--dtypes", "bf16", "--reset-after", "true"])
    out = capsys.readouterr().out
    for shape in ("B=4 T=16 H=32", "B=1 T=2 H=3 F=7", "B=1 T=5 H=8", "B=2 T=5 H=8"):
        assert shape in out
    assert "4 cases" in out

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    # the GPU default covers the small-batch shapes of docs/benchmarks.md
    gpu_shapes = {c.shape for c in bench.expand_cases(bench.preset_blocks("default", gpu))}
    assert {s.B for s in gpu_shapes} >= {1, 4, 8, 16, 32}
    assert {s.H for s in gpu_shapes} >= {128, 256, 512, 768, 1024}
    assert {s.T for s in gpu_shapes} >= {128, 512, 1024}
    assert bench.Shape(16, 1024, 768, 768) in gpu_shapes
    db = bench.expand_cases(bench.preset_blocks("deepbench", gpu))
    assert bench.Shape(32, 1500, 2816, 2816) in {c.shape for c in db}
    assert bench.Shape(64, 1500, 1024, 1024) in {c.shape for c in db}
    assert {c.mode for c in db if c.shape.B in (1, 2, 4)} == {"fwd"}
    (fr,) = {c.shape for c in bench.expand_cases(bench.preset_blocks("flashrnn", cpu))}
    assert fr == bench.Shape(16, 1024, 768, 768)
    cpu_default = bench.expand_cases(bench.preset_blocks("default", cpu))
    assert cpu_default and all(c.mode in bench.MODES for c in cpu_default)


def test_check_is_shortened_for_expensive_references():
    cfg = bench.Config(device=torch.device("cpu"), blocks=[], candidates=[])
    cfg.check_max_flops = 1e8
    assert bench.check_length(bench.Shape(2, 50, 16, 16), cfg) == 50
    short = bench.check_length(bench.Shape(32, 1500, 1024, 1024), cfg)
    assert 1 <= short < 1500
    cfg.check_steps = 7
    assert bench.check_length(bench.Shape(2, 50, 16, 16), cfg) == 7


def test_metadata_on_cpu():
    meta = bench.collect_metadata(torch.device("cpu"))
    assert meta["device"] == "cpu" and meta["device_name"].startswith("CPU")
    assert meta["torch_threads"] == torch.get_num_threads()
    assert meta["gru_cuda_build"] == gru_cuda.build_info()
    assert meta["date"].endswith("+00:00")


def test_thin_script_runs_from_the_repo_root():
    proc = subprocess.run([sys.executable, os.path.join("benchmarks", "bench_gru.py"), "--list",
                           "--quick", "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "12 cases" in proc.stdout


def test_keras_candidate(tmp_path):
    pytest.importorskip("keras")
    import keras
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported with another backend")
    bench.main(["--shape", "2,6,8", "--modes", "fwd", "fwd+bwd", "--dtypes", "float32",
                "--reset-after", "true", "false", "--candidates", "keras", "gru_cuda",
                "--out", str(tmp_path), "--no-plot", *FAST])
    doc = load_json(tmp_path)
    rows = rows_of(doc, "keras")
    assert len(rows) == 4 and all(r["status"] == "ok" and r["max_err"] < 1e-5 for r in rows)
    assert doc["metadata"]["keras"].endswith("(torch backend)")


def test_keras_pair_times_both_layers_inside_keras(tmp_path):
    """keras-pair: keras.layers.GRU and gru_cuda.keras.GRU checked and timed case by case, the
    latter with its speedup over the former (vs_keras) in the rows and the summary."""
    pytest.importorskip("keras")
    import keras
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported with another backend")
    bench.main(["--shape", "2,5,6,4", "--modes", "fwd", "fwd+bwd", "--dtypes", "float32",
                "--reset-after", "false", "--candidates", "keras-pair",
                "--out", str(tmp_path), "--no-plot", *FAST])
    doc = load_json(tmp_path)
    ours, theirs = rows_of(doc, "gru_cuda.keras"), rows_of(doc, "keras")
    assert len(ours) == len(theirs) == 2
    for mine, base in zip(ours, theirs):
        assert mine["status"] == base["status"] == "ok" and mine["max_err"] < 1e-5
        assert mine["vs_keras"] == pytest.approx(base["ms"] / mine["ms"])
    assert {s["candidate"] for s in doc["summary"] if "vs_keras" in s} == {"gru_cuda.keras"}


def test_default_output_folder_is_in_the_working_directory(tmp_path, monkeypatch):
    """Without --out the files go to gru_bench_results/ of the current directory, created."""
    monkeypatch.chdir(tmp_path)
    assert bench.DEFAULT_OUT == "gru_bench_results"
    rc = bench.main(["--shape", "2,4,8", "--modes", "fwd", "--dtypes", "float32",
                     "--reset-after", "true", "--candidates", "gru_cuda", "--no-plot", *FAST])
    assert rc == 0
    assert os.listdir(tmp_path) == ["gru_bench_results"]
    files = sorted(os.listdir(tmp_path / "gru_bench_results"))
    assert [os.path.splitext(f)[1] for f in files] == [".csv", ".json"], files
    assert rows_of(load_json(tmp_path / "gru_bench_results"), "gru_cuda")[0]["status"] == "ok"


def _env_with_this_checkout():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_quick_no_save_runs_outside_the_checkout_and_writes_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gru_cuda.bench", "--quick", "--no-save", *FAST],
        cwd=tmp_path, env=_env_with_this_checkout(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "candidate" in proc.stdout and "Speedup of gru_cuda" in proc.stdout
    assert proc.stdout.count(" ok ") >= 24 and "wrote" not in proc.stdout
    assert os.listdir(tmp_path) == []


def test_git_commit_only_from_the_package_own_work_tree(tmp_path, monkeypatch):
    from gru_cuda.bench import metadata
    if os.path.exists(os.path.join(ROOT, ".git")):  # a checkout: git tracks the package
        commit = metadata.git_commit()
        assert commit is not None and len(commit.split("+")[0]) == 12
    # a package in a plain folder, and one untracked inside another repository: no commit
    pkg = tmp_path / "site" / "gru_cuda"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.setattr(gru_cuda, "__file__", str(pkg / "__init__.py"))
    assert metadata.git_commit() is None
    if subprocess.run(["git", "init", "-q", str(tmp_path)], capture_output=True).returncode:
        pytest.skip("git is not usable here")
    assert metadata.git_commit() is None
    assert metadata.collect_metadata(torch.device("cpu"))["git_commit"] is None


CUDA_BUILD = bool(gru_cuda.build_info().get("cuda")) and torch.cuda.is_available()


@pytest.mark.skipif(CUDA_BUILD, reason="a CUDA build on a GPU measures the barriers")
def test_barrier_subcommand_fails_clearly_without_cuda(capsys):
    proc = subprocess.run([sys.executable, "-m", "gru_cuda.bench", "barrier"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "gru_cuda.bench barrier" in proc.stderr
    if not gru_cuda.build_info().get("cuda"):
        assert "CPU build" in proc.stderr and "CUDA build" in proc.stderr
    with pytest.raises(SystemExit, match="GPU barriers"):
        bench.main(["barrier", "--device", "cpu", "--iterations", "10"])
    with pytest.raises(SystemExit) as e:  # argparse: exit 2, the argument named
        bench.main(["barrier", "--iterations", "0"])
    assert e.value.code == 2 and "--iterations" in capsys.readouterr().err


def test_persistent_preset_and_its_goals(capsys):
    gpu = torch.device("cuda")
    cases = bench.expand_cases(bench.preset_blocks("persistent", gpu))
    grid = [c for c in cases if c.shape != bench.Shape(16, 1024, 768, 768)]
    assert {c.shape.B for c in grid} == {1, 8, 32, 64, 256}
    assert {c.shape.H for c in grid} == {128, 256, 512, 1024, 2048}
    assert {c.shape.T for c in grid} == {128, 512}
    assert {c.dtype for c in grid} == {"float32", "bfloat16"}
    assert {c.reset_after for c in grid} == {True, False}
    assert {c.mode for c in grid} == {"fwd", "fwd+bwd"}
    assert len(grid) == 5 * 5 * 2 * 2 * 2 * 2 and len(cases) == len(grid) + 2

    bench.main(["--preset", "persistent", "--list", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "candidates: gru_cuda, torch" in out  # auto, the forced paths (none on a CPU), cuDNN

    def row(B, H, ra, mode, ms, vs_torch=None, path=None):
        return {"candidate": "gru_cuda", "status": "ok", "B": B, "T": 128, "H": H, "F": H,
                "dtype": "float32", "reset_after": ra, "mode": mode, "ms": ms,
                "vs_torch": vs_torch, "path": path}
    rows = [row(8, 256, True, "fwd+bwd", 1.0, 2.0, "persistent/persistent"),
            row(8, 256, False, "fwd+bwd", 1.2),                 # within 1.3x of ra=True
            row(32, 1024, True, "fwd+bwd", 4.0, 1.2, "stepwise/stepwise"),  # under 1.5x
            row(32, 1024, False, "fwd+bwd", 6.0),               # 1.5x slower than ra=True
            row(256, 512, True, "fwd", 1.0, 0.8, "persistent"),  # persistent, slower
            row(1, 2048, True, "fwd+bwd", 1.0, 0.5, "stepwise/stepwise")]  # H > 1024: no goal
    rows.append({**row(1, 128, True, "fwd+bwd", None, 9.0), "status": "WRONG"})
    (g1, v1, d1), (g2, v2, d2), (g3, v3, d3) = bench.persistent_goals(rows)
    assert "1.5x" in g1 and v1 == "1 of 2 missed" and "B=32 T=128 H=1024" in d1
    assert v2 == "1 of 2 missed" and "B=256" in d2 and "0.80x" in d2
    assert v3 == "1 of 2 missed" and "B=32" in d3 and "1.50x" in d3
    assert [v for _, v, _ in bench.persistent_goals(rows[:2])] == ["met", "met", "met"]
    assert [v for _, v, _ in bench.persistent_goals([])] == ["no case"] * 3
