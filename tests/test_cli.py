"""The `edgert` commands a user runs first: inspect, run, verify, warmup (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from conftest import DATA

SINE = DATA / "sine_float.tflite"


def edgert(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgert.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_inspect_json_is_the_documented_format():
    proc = edgert("inspect", DATA / "hey_jarvis.tflite", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info) >= {"model", "sha256", "file_bytes", "schema_version", "description", "subgraphs", "inputs",
                         "outputs", "operators", "supported", "tensor_counts", "weight_bytes",
                         "activation_bytes_sum", "metadata"}
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["quantization"]["zero_points"] == [-128]
    assert info["supported"] is True
    assert {"op": "CALL_ONCE", "version": 1, "count": 1, "supported": True, "reason": None} in info["operators"]


def test_inspect_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(SINE.read_bytes()[:100])
    proc = edgert("inspect", bad)
    assert proc.returncode == 2 and "bad.tflite" in proc.stderr and "Traceback" not in proc.stderr


def test_run_reads_and_writes_npz(tmp_path):
    x = np.array([[0.5]], np.float32)
    np.savez(tmp_path / "in.npz", x)
    proc = edgert("run", SINE, "--input", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as out:
        (y,) = out.values()
    assert y.shape == (1, 1) and abs(float(y[0, 0]) - np.sin(0.5)) < 0.1  # the model approximates sin


def test_verify_json_reports_ok_and_errors_per_output():
    proc = edgert("verify", DATA / "kws_ds_cnn_int8.tflite", "--json", "--runs", "2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    (out,) = report["outputs"]
    assert out["ok"] and out["max_abs_error"] <= 1 and out["off_by_one_fraction"] <= 0.01
    assert {"max_abs_error", "max_rel_error", "ok"} <= set(out)


def test_warmup_fills_the_numba_cache(tmp_path):
    cache = tmp_path / "cache"
    config = tmp_path / "edgert.toml"
    config.write_text(f'[runtime]\nnumba_cache_dir = "{cache}"\n\n[[models]]\nname = "sine"\npath = "{SINE}"\n')
    proc = edgert("warmup", "--config", config)
    assert proc.returncode == 0, proc.stderr
    assert "warm: 1 model(s)" in proc.stdout
    assert any(cache.rglob("*.nbi")), "no numba index files written to the configured cache"
