"""Seeded mutations of real models: each one parses to a Graph or ends in ModelError — never another
exception, a hang, or a signal. Parsing runs in subprocesses so a crash is seen, not suffered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA

CASES = 600
BATCH = 150
MODELS = [DATA / n for n in ("sine_float.tflite", "hey_jarvis.tflite", "kws_ds_cnn_int8.tflite", "hand_recrop.tflite")]


@pytest.mark.parametrize("first", range(0, CASES, BATCH))
def test_mutated_models_end_in_graph_or_model_error(tmp_path, first):
    worker = Path(__file__).with_name("fuzz_reader_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(tmp_path), str(first), str(BATCH), *map(str, MODELS)],
        capture_output=True, text=True, timeout=300,
    )
    lines = proc.stdout.splitlines()
    last = lines[-1] if lines else "none"
    assert proc.returncode == 0, f"worker died (rc {proc.returncode}) after case {last!r}:\n{proc.stderr[-3000:]}"
    assert len(lines) == BATCH
    outcomes = [line.split()[1] for line in lines]
    # the mutations must exercise both paths, or the fuzzer tests nothing
    assert outcomes.count("modelerror") > BATCH // 10
    assert outcomes.count("ok") > 0
