"""`edgert plan`: text, JSON, SVG, budget failure, raw interval instances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgert.cli import main

DATA = Path(__file__).resolve().parent / "data"
MODEL = DATA / "kws_ds_cnn_int8.tflite"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="test model missing")


def test_plan_json_and_svg(tmp_path, capsys):
    svg = tmp_path / "plan.svg"
    assert main(["plan", str(MODEL), "--json", "--svg", str(svg), "--order", "optimized"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("arena_bytes", "lower_bound_bytes", "naive_bytes", "persistent_bytes", "strategy", "order", "plan_ms"):
        assert key in d
    assert d["order"] == "optimized" and d["lower_bound_bytes"] <= d["arena_bytes"] <= d["naive_bytes"]
    names = {t["name"] for t in d["tensors"]}
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("<rect") > len(d["tensors"]) // 2
    assert any(f"<title>{n}" in text for n in names)


def test_plan_text_and_budget(capsys):
    assert main(["plan", str(MODEL), "--budget", "8MiB"]) == 0
    out = capsys.readouterr().out
    assert "lower bound" in out and "budget" in out
    assert main(["plan", str(MODEL), "--budget", "1KiB", "--no-inplace"]) == 2
    err = capsys.readouterr().err
    assert "budget is 1,024 bytes" in err and "lower bound" in err


def test_plan_bad_size_and_strategy(capsys):
    assert main(["plan", str(MODEL), "--budget", "eight megs"]) == 2
    assert "not a size" in capsys.readouterr().err
    assert main(["plan", str(MODEL), "--strategy", "fastest"]) == 2
    assert "strategy" in capsys.readouterr().err


def test_plan_intervals(tmp_path, capsys):
    csv = tmp_path / "input.12.csv"
    csv.write_text("id,lower,upper,size\nb1,0,3,4\nb2,3,9,4\nb3,0,9,4\nb4,9,21,4\nb5,0,21,4\n")
    assert main(["plan", "--intervals", str(csv), "--time-limit", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["peak_bytes"] == d["lower_bound_bytes"] == 12
    assert set(d["offsets"]) == {"b1", "b2", "b3", "b4", "b5"}
    assert d["offsets"]["b5"] + 4 <= 12
