"""benchmarks/accelerator.py stays runnable: its smoke mode (tiny shapes, seconds on CPU) end to end, with the
ml_collections stand-in an offline GPU box needs, the pipeline with a grain worker process, and the peak-FLOP
table behind its MFU figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import accelerator  # noqa: E402


def test_peak_flops_by_device_kind():
    assert accelerator.peak_flops("NVIDIA H200") == 989e12
    assert accelerator.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert accelerator.peak_flops("TPU v5 lite") == 197e12
    assert accelerator.peak_flops("cpu") is None
    assert accelerator.peak_flops("cpu", override_tflops=2.0) == 2e12


def test_smoke_runs_step_and_pipeline(tmp_path):
    out = tmp_path / "accel.json"
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")  # one CPU device, as a user's run
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py"), "--smoke",
                        "--stand-in-config", "--workers", "0,1", "--out", str(out)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["smoke"] and res["backend"] == "cpu" and res["config_dicts"] == "stand-in"
    rows = {r["part"]: r for r in res["rows"] if r.get("views", "one_batch") == "one_batch"}
    j = rows["jax"]
    sep = [r for r in res["rows"] if r["part"] == "jax" and r.get("views") == "separate"]
    assert len(sep) == 1 and sep[0]["finite"] and sep[0]["views_per_s"] > 0  # the same step, views as two forwards
    assert "views separate" in [r["versus"] for r in res["ratios"]]
    assert j["finite"] and j["views_per_s"] > 0 and j["step_ms"] > 0 and j["compile_s"] > 0
    assert j["flops_per_step_per_device"] > 0 and j["dtype"] == "bfloat16"
    assert j["config_dicts"] == "stand-in"  # the step part ran without ml_collections
    pipes = {r["workers"]: r for r in res["rows"] if r["part"] == "pipeline"}  # grain, array_record: installed
    assert set(pipes) == {0, 1}, res["skipped"]  # 1: grain worker processes (absl flags, data/batching.py)
    for pipe in pipes.values():
        assert pipe["views_per_s"] > 0 and pipe["views_per_s_per_core"] > 0 and pipe["rotation"] > 0
    parts = {s["part"] for s in res["skipped"]}
    assert ("torch-eager" in rows) or ("torch-eager" in parts)
