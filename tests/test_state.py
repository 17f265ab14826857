"""Stateful models: resource variables persist across requests, CALL_ONCE initialises them, reset_state restarts."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_MODELS
from edgert.model.builder import RESOURCE, ModelBuilder
from edgert.reference import random_inputs, reference_interpreter
from edgert.runtime.executor import Executor

F = np.float32


def _accumulator() -> bytes:
    """y = state + x; state := y. The init subgraph sets state to [1, 2, 3]."""
    b = ModelBuilder()
    with b.subgraph("init") as init_index:
        h = b.tensor("init_handle", (), RESOURCE)
        v = b.const("init_value", np.array([[1.0, 2.0, 3.0]], F))
        b.op("VAR_HANDLE", [], [h], options={"container": "", "shared_name": "acc"})
        b.op("ASSIGN_VARIABLE", [h, v], [])
    x = b.input("x", (1, 3), F)
    h = b.tensor("handle", (), RESOURCE)
    s = b.tensor("state", (1, 3), F)
    y = b.tensor("y", (1, 3), F)
    b.op("CALL_ONCE", [], [], options={"init_subgraph_index": init_index})
    b.op("VAR_HANDLE", [], [h], options={"shared_name": "acc"})
    b.op("READ_VARIABLE", [h], [s])
    b.op("ADD", [x, s], [y])
    b.op("ASSIGN_VARIABLE", [h, y], [])
    b.output(y)
    return b.build()


def _litert_sequence(model, inputs_seq):
    ip = reference_interpreter(model)
    ins, outs = ip.get_input_details(), ip.get_output_details()
    result = []
    for inputs in inputs_seq:
        for d, v in zip(ins, inputs):
            ip.set_tensor(d["index"], v)
        ip.invoke()
        result.append([ip.get_tensor(d["index"]).copy() for d in outs])
    return result


def _check_sequence(model, calls: int, exact: bool):
    ex = Executor({"m": model})
    seq = [random_inputs([(s.shape, s.dtype) for s in ex.input_specs("m")], seed=i) for i in range(calls)]
    ref = _litert_sequence(model, seq)
    first = [ex.run("m", x) for x in seq]
    for i, (ours, theirs) in enumerate(zip(first, ref)):
        for o, r in zip(ours, theirs):
            if exact:
                np.testing.assert_array_equal(o, r, err_msg=f"call {i}")
            else:
                np.testing.assert_allclose(o, r, atol=1e-5, err_msg=f"call {i}")
    ex.reset_state()
    again = [ex.run("m", x) for x in seq]
    for i, (a, b) in enumerate(zip(first, again)):
        for o1, o2 in zip(a, b):
            np.testing.assert_array_equal(o1, o2, err_msg=f"after reset_state, call {i}")
    return first


def test_accumulator_matches_litert_call_by_call_and_resets():
    outs = _check_sequence(_accumulator(), calls=20, exact=False)
    assert not np.array_equal(outs[0][0], outs[1][0])  # the state really changes between calls


def test_state_lives_in_the_persistent_region():
    ex = Executor({"m": _accumulator()})
    p = ex.plans["m"]
    handles = [pl for pl in p.placements.values() if pl.region == "persistent"]
    assert handles and all(pl.size >= 12 for pl in handles)
    assert ex.persistent_bytes >= 12


WAKEWORD = sorted((SHARED_MODELS / "real" / "pymicro-wakeword").glob("*.tflite")) if SHARED_MODELS.is_dir() else []


@pytest.mark.parametrize("path", WAKEWORD or [None], ids=lambda p: p.name if p else "absent")
def test_microwakeword_50_calls_match_litert(path, data_dir):
    path = path or data_dir / "hey_jarvis.tflite"
    from edgert.errors import UnsupportedOpError
    try:
        Executor({"m": path})
    except UnsupportedOpError as e:
        pytest.skip(f"int8 kernels not complete yet: {e}")
    _check_sequence(path, calls=50, exact=False)
