"""ModelBuilder produces models LiteRT's reference kernels load and run, for every op edgert needs."""

from __future__ import annotations

import numpy as np
import pytest
import tflite

from edgert.errors import ModelError
from edgert.model.builder import ModelBuilder, RESOURCE, csr_sparsity, options_table_for, quant
from edgert.reference import random_inputs, reference_interpreter, run_reference
from oneop import build_one_op

F = np.float32
I32 = np.int32
RNG = np.random.Generator(np.random.PCG64(7))


def w(*shape: int, dtype=F) -> np.ndarray:
    return RNG.uniform(-1, 1, size=shape).astype(dtype)


def ints(values) -> np.ndarray:
    return np.asarray(values, dtype=I32)


X4 = ((1, 4, 4, 3), F)
X8 = ((1, 8, 8, 3), F)

# opcode, graph input specs, output specs, options, consts {position: array | None}, version
CASES = {
    "CONV_2D": ("CONV_2D", [X8], [((1, 8, 8, 4), F)],
                {"padding": "SAME", "stride_w": 1, "stride_h": 1, "fused_activation_function": "RELU6",
                 "dilation_w_factor": 1, "dilation_h_factor": 1},
                {1: w(4, 3, 3, 3), 2: w(4)}, 1),
    "CONV_2D_valid_stride2_dilated": ("CONV_2D", [X8], [((1, 2, 2, 4), F)],
                                      {"padding": "VALID", "stride_w": 2, "stride_h": 2,
                                       "dilation_w_factor": 2, "dilation_h_factor": 2},
                                      {1: w(4, 3, 3, 3), 2: w(4)}, 1),
    "CONV_2D_int8_per_channel": (
        "CONV_2D", [((1, 8, 8, 3), np.int8, quant(0.05, -3))], [((1, 4, 4, 4), np.int8, quant(0.1, 5))],
        {"padding": "SAME", "stride_w": 2, "stride_h": 2, "fused_activation_function": "RELU"},
        {1: (w(4, 3, 3, 3).__mul__(127).astype(np.int8), quant([0.01, 0.02, 0.03, 0.04], 0, axis=0)),
         2: (ints([100, -200, 300, 0]), quant([0.0005, 0.001, 0.0015, 0.002], 0))}, 3),
    "DEPTHWISE_CONV_2D": ("DEPTHWISE_CONV_2D", [X8], [((1, 8, 8, 6), F)],
                          {"padding": "SAME", "stride_w": 1, "stride_h": 1, "depth_multiplier": 2,
                           "fused_activation_function": "RELU6"},
                          {1: w(1, 3, 3, 6), 2: w(6)}, 1),
    "TRANSPOSE_CONV": ("TRANSPOSE_CONV", [X8], [((1, 16, 16, 4), F)],
                       {"padding": "SAME", "stride_w": 2, "stride_h": 2},
                       {0: ints([1, 16, 16, 4]), 1: w(4, 3, 3, 3), 3: w(4)}, 3),
    "FULLY_CONNECTED": ("FULLY_CONNECTED", [((2, 8), F)], [((2, 4), F)],
                        {"fused_activation_function": "NONE", "keep_num_dims": False},
                        {1: w(4, 8), 2: w(4)}, 1),
    "BATCH_MATMUL": ("BATCH_MATMUL", [((2, 3, 4), F), ((2, 4, 5), F)], [((2, 3, 5), F)],
                     {"adj_x": False, "adj_y": False}, {}, 1),
    "ADD": ("ADD", [X4], [((1, 4, 4, 3), F)], {"fused_activation_function": "RELU"}, {1: w(3)}, 1),
    "SUB": ("SUB", [X4, X4], [((1, 4, 4, 3), F)], {}, {}, 1),
    "MUL": ("MUL", [X4], [((1, 4, 4, 3), F)], {"fused_activation_function": "RELU6"}, {1: w(1, 1, 1, 3)}, 1),
    "DIV": ("DIV", [X4], [((1, 4, 4, 3), F)], {}, {1: np.full((3,), 2.0, F)}, 1),
    "MAXIMUM": ("MAXIMUM", [X4, X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "MINIMUM": ("MINIMUM", [X4, X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "SQUARED_DIFFERENCE": ("SQUARED_DIFFERENCE", [X4, X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "RSQRT": ("RSQRT", [X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "SQRT": ("SQRT", [X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "RELU": ("RELU", [X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "RELU6": ("RELU6", [X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "LEAKY_RELU": ("LEAKY_RELU", [X4], [((1, 4, 4, 3), F)], {"alpha": 0.2}, {}, 1),
    "PRELU": ("PRELU", [X4], [((1, 4, 4, 3), F)], None, {1: w(1, 1, 3)}, 1),
    "HARD_SWISH": ("HARD_SWISH", [X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "LOGISTIC": ("LOGISTIC", [X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "TANH": ("TANH", [X4], [((1, 4, 4, 3), F)], None, {}, 1),
    "SOFTMAX": ("SOFTMAX", [((2, 10), F)], [((2, 10), F)], {"beta": 1.0}, {}, 1),
    "MEAN": ("MEAN", [X4], [((1, 1, 1, 3), F)], {"keep_dims": True}, {1: ints([1, 2])}, 1),
    "SUM": ("SUM", [X4], [((1, 4, 4), F)], {"keep_dims": False}, {1: ints([3])}, 1),
    "AVERAGE_POOL_2D": ("AVERAGE_POOL_2D", [X8], [((1, 4, 4, 3), F)],
                        {"padding": "VALID", "stride_w": 2, "stride_h": 2, "filter_width": 2, "filter_height": 2},
                        {}, 1),
    "MAX_POOL_2D": ("MAX_POOL_2D", [X8], [((1, 4, 4, 3), F)],
                    {"padding": "SAME", "stride_w": 2, "stride_h": 2, "filter_width": 3, "filter_height": 3,
                     "fused_activation_function": "RELU"}, {}, 1),
    "PAD": ("PAD", [X4], [((1, 6, 8, 3), F)], None, {1: ints([[0, 0], [1, 1], [2, 2], [0, 0]])}, 1),
    "PADV2": ("PADV2", [X4], [((1, 6, 8, 3), F)], None,
              {1: ints([[0, 0], [1, 1], [2, 2], [0, 0]]), 2: np.array(0.5, F)}, 1),
    "RESHAPE": ("RESHAPE", [X4], [((1, 48), F)], {"new_shape": [1, 48]}, {1: ints([1, 48])}, 1),
    "SQUEEZE": ("SQUEEZE", [((1, 4, 1, 3), F)], [((4, 3), F)], {"squeeze_dims": [0, 2]}, {}, 1),
    "EXPAND_DIMS": ("EXPAND_DIMS", [((4, 3), F)], [((1, 4, 3), F)], None, {1: ints([0])}, 1),
    "CONCATENATION": ("CONCATENATION", [X4, ((1, 4, 4, 2), F)], [((1, 4, 4, 5), F)],
                      {"axis": 3, "fused_activation_function": "NONE"}, {}, 1),
    "STRIDED_SLICE": ("STRIDED_SLICE", [X8], [((1, 3, 8, 3), F)],
                      {"begin_mask": 0, "end_mask": 0, "shrink_axis_mask": 0},
                      {1: ints([0, 1, 0, 0]), 2: ints([1, 7, 8, 3]), 3: ints([1, 2, 1, 1])}, 1),
    "SLICE": ("SLICE", [X8], [((1, 2, 3, 3), F)], None, {1: ints([0, 1, 1, 0]), 2: ints([1, 2, 3, -1])}, 1),
    "TRANSPOSE": ("TRANSPOSE", [X4], [((1, 3, 4, 4), F)], None, {1: ints([0, 3, 1, 2])}, 1),
    "GATHER": ("GATHER", [((5, 3), F)], [((3, 3), F)], {"axis": 0, "batch_dims": 0}, {1: ints([4, 0, 2])}, 1),
    "GATHER_indices_input": ("GATHER", [((5, 3), F), ((2, 2), I32)], [((2, 2, 3), F)], {"axis": 0}, {}, 1),
    "RESIZE_BILINEAR": ("RESIZE_BILINEAR", [X4], [((1, 8, 8, 3), F)],
                        {"align_corners": False, "half_pixel_centers": True}, {1: ints([8, 8])}, 1),
    "RESIZE_NEAREST_NEIGHBOR": ("RESIZE_NEAREST_NEIGHBOR", [X4], [((1, 8, 8, 3), F)],
                                {"align_corners": False}, {1: ints([8, 8])}, 1),
    "DEPTH_TO_SPACE": ("DEPTH_TO_SPACE", [((1, 2, 2, 12), F)], [((1, 4, 4, 3), F)], {"block_size": 2}, {}, 1),
    "SPACE_TO_DEPTH": ("SPACE_TO_DEPTH", [X4], [((1, 2, 2, 12), F)], {"block_size": 2}, {}, 1),
    "DEQUANTIZE_int8": ("DEQUANTIZE", [((1, 4, 4, 3), np.int8, quant(0.1, 2))], [((1, 4, 4, 3), F)], None, {}, 2),
    "QUANTIZE": ("QUANTIZE", [X4], [((1, 4, 4, 3), np.int8, quant(0.01, -4))], None, {}, 1),
}

# int8 variants with the quantization LiteRT requires (e.g. softmax/logistic output 1/256, -128).
Q8 = ((1, 4, 4, 3), np.int8, quant(0.05, -2))
Q8_OUT = ((1, 4, 4, 3), np.int8, quant(0.08, 3))
CASES.update({
    "ADD_int8": ("ADD", [Q8, ((1, 4, 4, 3), np.int8, quant(0.03, 1))], [Q8_OUT], {}, {}, 2),
    "MUL_int8": ("MUL", [Q8, Q8], [Q8_OUT], {}, {}, 2),
    "FULLY_CONNECTED_int8": ("FULLY_CONNECTED", [((2, 8), np.int8, quant(0.05, -1))],
                             [((2, 4), np.int8, quant(0.2, 0))], {},
                             {1: ((w(4, 8) * 127).astype(np.int8), quant(0.01, 0)),
                              2: (ints([10, -10, 0, 5]), quant(0.0005, 0))}, 4),
    "DEPTHWISE_CONV_2D_int8_per_channel": (
        "DEPTHWISE_CONV_2D", [((1, 8, 8, 3), np.int8, quant(0.05, 0))], [((1, 8, 8, 3), np.int8, quant(0.1, -5))],
        {"padding": "SAME", "stride_w": 1, "stride_h": 1, "depth_multiplier": 1},
        {1: ((w(1, 3, 3, 3) * 127).astype(np.int8), quant([0.01, 0.02, 0.03], 0, axis=3)),
         2: (ints([1, 2, 3]), quant([0.0005, 0.001, 0.0015], 0, axis=0))}, 3),
    "AVERAGE_POOL_2D_int8": ("AVERAGE_POOL_2D", [((1, 8, 8, 3), np.int8, quant(0.05, -2))],
                             [((1, 4, 4, 3), np.int8, quant(0.05, -2))],
                             {"padding": "VALID", "stride_w": 2, "stride_h": 2, "filter_width": 2,
                              "filter_height": 2}, {}, 2),
    "MEAN_int8": ("MEAN", [Q8], [((1, 1, 1, 3), np.int8, quant(0.05, -2))], {"keep_dims": True},
                  {1: ints([1, 2])}, 2),
    "SOFTMAX_int8": ("SOFTMAX", [((2, 10), np.int8, quant(0.1, 0))], [((2, 10), np.int8, quant(1 / 256, -128))],
                     {"beta": 1.0}, {}, 2),
    "LOGISTIC_int8": ("LOGISTIC", [Q8], [((1, 4, 4, 3), np.int8, quant(1 / 256, -128))], None, {}, 2),
    "CONCATENATION_int8": ("CONCATENATION", [Q8, Q8], [((1, 4, 4, 6), np.int8, quant(0.05, -2))],
                           {"axis": -1}, {}, 2),
})


@pytest.mark.parametrize("case", sorted(CASES), ids=str)
def test_one_op_model_runs_in_litert_ref(case: str) -> None:
    opcode, in_specs, out_specs, options, consts, version = CASES[case]
    model = build_one_op(opcode, in_specs, out_specs, options=options, consts=consts, version=version)
    assert model[4:8] == b"TFL3"
    interpreter = reference_interpreter(model)
    details = interpreter.get_input_details()
    assert [tuple(d["shape"]) for d in details] == [tuple(s[0]) for s in in_specs]
    outs = run_reference(model, random_inputs([s[:2] for s in in_specs], seed=3))
    assert [o.shape for o in outs] == [tuple(s[0]) for s in out_specs]
    assert [o.dtype for o in outs] == [np.dtype(s[1]) for s in out_specs]


def test_options_reach_the_kernel() -> None:
    # RELU6 fused into ADD must clip: proves enum options are serialized, not dropped.
    model = build_one_op("ADD", [X4, X4], [((1, 4, 4, 3), F)], options={"fused_activation_function": "RELU6"})
    a = np.full((1, 4, 4, 3), 5.0, F)
    (out,) = run_reference(model, [a, a])
    assert np.all(out == 6.0)
    # Vector option + float option: LEAKY_RELU alpha.
    model = build_one_op("LEAKY_RELU", [((4,), F)], [((4,), F)], options={"alpha": 0.25})
    (out,) = run_reference(model, [np.array([-4, -1, 0, 2], F)])
    np.testing.assert_array_equal(out, np.array([-1, -0.25, 0, 2], F))


def test_reshape_and_transpose_values() -> None:
    x = np.arange(48, dtype=F).reshape(1, 4, 4, 3)
    (out,) = run_reference(build_one_op(*CASES["TRANSPOSE"][:5]), [x])
    np.testing.assert_array_equal(out, x.transpose(0, 3, 1, 2))
    (out,) = run_reference(build_one_op(*CASES["SQUEEZE"][:5]), [x[:, :, :1, :].reshape(1, 4, 1, 3)])
    np.testing.assert_array_equal(out, x[0, :, 0, :])


def test_unknown_option_field_and_bad_enum_are_rejected() -> None:
    b = ModelBuilder()
    x = b.input("x", (1, 4), F)
    y = b.tensor("y", (1, 4), F)
    with pytest.raises(ValueError, match="stride"):
        b.op("ADD", [x, x], [y], options={"stride": 2})
    with pytest.raises(ValueError, match="RELU7"):
        b.op("ADD", [x, x], [y], options={"fused_activation_function": "RELU7"})
    with pytest.raises(ValueError, match="no builtin options"):
        b.op("RELU", [x], [y], options={"alpha": 1.0})
    with pytest.raises(ValueError, match="NOT_AN_OP"):
        b.op("NOT_AN_OP", [x], [y])
    from edgert.model.options import OPTION_TYPES

    pool_options = OPTION_TYPES["Pool2DOptions"][0](*([None] * 6))
    with pytest.raises(ValueError, match="Conv2DOptions"):
        b.op("CONV_2D", [x, x], [y], options=pool_options)
    with pytest.raises(ValueError, match="out of range"):
        b.op("RELU", [x], [99])


def test_every_mapped_options_table_exists_in_the_schema() -> None:
    from edgert.model.builder import _OPTIONS_TABLE

    for opcode, table in _OPTIONS_TABLE.items():
        assert isinstance(getattr(tflite.BuiltinOperator, opcode), int), opcode
        assert table is None or isinstance(getattr(tflite.BuiltinOptions, table), int), (opcode, table)


def test_options_table_mapping() -> None:
    assert options_table_for("MAXIMUM") == "MaximumMinimumOptions"
    assert options_table_for("MEAN") == "ReducerOptions"
    assert options_table_for("AVERAGE_POOL_2D") == "Pool2DOptions"
    assert options_table_for("BATCH_MATMUL") == "BatchMatMulOptions"
    assert options_table_for("SELECT_V2") == "SelectV2Options"  # via the CamelCase rule
    assert options_table_for("RELU") is None


def test_opcodes_written_like_the_converter() -> None:
    b = ModelBuilder()
    x = b.input("x", (2, 3), F)
    y = b.tensor("y", (2, 3), F)
    z = b.tensor("z", (2, 3), F)
    b.op("ADD", [x, x], [y])
    b.op("GELU", [y], [z], options={"approximate": True})  # builtin code 150 > 127
    b.output(z)
    model = tflite.Model.GetRootAs(b.build())
    assert model.Version() == 3
    codes = [(model.OperatorCodes(i).DeprecatedBuiltinCode(), model.OperatorCodes(i).BuiltinCode())
             for i in range(model.OperatorCodesLength())]
    assert codes == [(0, 0), (127, tflite.BuiltinOperator.GELU)]
    assert model.Buffers(0).DataLength() == 0
    (out,) = run_reference(b.build(), [np.zeros((2, 3), F)])
    assert out.shape == (2, 3)


def test_constant_data_is_16_byte_aligned_and_exact() -> None:
    b = ModelBuilder()
    consts = [np.arange(n, dtype=dt) for n, dt in [(3, np.int8), (5, np.float32), (7, np.int64), (2, np.float16)]]
    for i, c in enumerate(consts):
        b.const(f"c{i}", c)
    data = b.build()
    model = tflite.Model.GetRootAs(data)
    sg = model.Subgraphs(0)
    for i, c in enumerate(consts):
        t = sg.Tensors(i)
        buf = model.Buffers(t.Buffer())
        raw = buf.DataAsNumpy()
        assert raw.ctypes.data % 16 == (np.frombuffer(data, np.uint8).ctypes.data % 16)  # same phase as file start
        offset = raw.ctypes.data - np.frombuffer(data, np.uint8).ctypes.data
        assert offset % 16 == 0
        assert raw.tobytes() == c.tobytes()


def test_float16_const_dequantize() -> None:
    b = ModelBuilder()
    x = b.input("x", (4, 3), F)
    w16 = np.linspace(-2, 2, 12, dtype=np.float16).reshape(4, 3)
    c = b.const("w16", w16)
    wf = b.tensor("w32", (4, 3), F)
    y = b.tensor("y", (4, 3), F)
    b.op("DEQUANTIZE", [c], [wf], version=3)
    b.op("ADD", [x, wf], [y])
    b.output(y)
    (out,) = run_reference(b.build(), [np.zeros((4, 3), F)])
    np.testing.assert_array_equal(out, w16.astype(F))


@pytest.mark.parametrize("block", [None, (2, 2)], ids=["csr", "block2x2"])
def test_sparse_const_densify(block) -> None:
    dense = np.zeros((4, 6), F)
    dense[0, 1], dense[1, 4], dense[3, 0], dense[3, 5], dense[2, 2] = 1.5, -2.0, 3.0, 4.0, 0.25
    values, sparsity = csr_sparsity(dense, block)
    b = ModelBuilder()
    x = b.input("x", (4, 6), F)
    s = b.sparse_const("sparse_w", values, dense.shape, sparsity)
    d = b.tensor("dense_w", dense.shape, F)
    y = b.tensor("y", dense.shape, F)
    b.op("DENSIFY", [s], [d])
    b.op("ADD", [x, d], [y])
    b.output(y)
    (out,) = run_reference(b.build(), [np.zeros((4, 6), F)])
    np.testing.assert_array_equal(out, dense)


def test_call_once_and_resource_variables() -> None:
    """Subgraph 1 (run once) assigns a constant to a resource variable; main reads it and adds x."""
    b = ModelBuilder()
    init_value = np.array([[1.0, 2.0, 3.0]], F)
    with b.subgraph("init") as init_index:
        handle = b.tensor("init_handle", (), RESOURCE)
        value = b.const("init_value", init_value)
        b.op("VAR_HANDLE", [], [handle], options={"container": "", "shared_name": "state"})
        b.op("ASSIGN_VARIABLE", [handle, value], [])
    assert b.current_subgraph == 0
    x = b.input("x", (1, 3), F)
    handle = b.tensor("handle", (), RESOURCE)
    state = b.tensor("state", (1, 3), F)
    y = b.tensor("y", (1, 3), F)
    b.op("CALL_ONCE", [], [], options={"init_subgraph_index": init_index})
    b.op("VAR_HANDLE", [], [handle], options={"shared_name": "state"})
    b.op("READ_VARIABLE", [handle], [state])
    b.op("ADD", [x, state], [y])
    b.output(y)
    b.signature("serving_default", {"x": x}, {"y": y})
    model = b.build()
    interpreter = reference_interpreter(model)
    x_in = np.array([[10.0, 20.0, 30.0]], F)
    for _ in range(2):  # CALL_ONCE runs the init subgraph on the first invoke only; state persists
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x_in)
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_array_equal(out, x_in + init_value)
    runner = interpreter.get_signature_runner("serving_default")
    np.testing.assert_array_equal(runner(x=x_in)["y"], x_in + init_value)


def test_variable_tensor_flag_and_metadata() -> None:
    b = ModelBuilder(description="meta")
    v = b.variable("state", (2, 2), F, initial=np.ones((2, 2), F))
    b.metadata("min_runtime_version", b"1.5.0")
    b.metadata("extra", b"\x00\x01")
    model = tflite.Model.GetRootAs(b.build())
    assert model.Description() == b"meta"
    assert model.Subgraphs(0).Tensors(v).IsVariable()
    entries = {model.Metadata(i).Name(): model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
               for i in range(model.MetadataLength())}
    assert entries == {b"min_runtime_version": b"1.5.0", b"extra": b"\x00\x01"}


def test_custom_op_is_refused_by_litert_by_name() -> None:
    b = ModelBuilder()
    x = b.input("x", (1, 4), F)
    y = b.tensor("y", (1, 4), F)
    b.custom_op("MyFancyOp", [x], [y], custom_options=b"\x01\x02")
    b.output(y)
    model = b.build()
    fb = tflite.Model.GetRootAs(model)
    assert fb.OperatorCodes(0).CustomCode() == b"MyFancyOp"
    assert fb.OperatorCodes(0).BuiltinCode() == tflite.BuiltinOperator.CUSTOM
    assert fb.Subgraphs(0).Operators(0).CustomOptionsAsNumpy().tobytes() == b"\x01\x02"
    with pytest.raises(ModelError, match="MyFancyOp"):
        reference_interpreter(model)


def test_optional_input_minus_one_is_written() -> None:
    model = build_one_op("FULLY_CONNECTED", [((2, 8), F)], [((2, 4), F)], consts={1: w(4, 8), 2: None})
    op = tflite.Model.GetRootAs(model).Subgraphs(0).Operators(0)
    assert list(op.InputsAsNumpy()) == [0, 1, -1]
    assert run_reference(model, random_inputs([((2, 8), F)]))[0].shape == (2, 4)


def test_quantization_parameters_round_trip() -> None:
    b = ModelBuilder()
    t = b.const("w", np.zeros((3, 2), np.int8), quant([0.5, 0.25, 0.125], [0, 1, -1], axis=0))
    q = tflite.Model.GetRootAs(b.build()).Subgraphs(0).Tensors(t).Quantization()
    assert list(q.ScaleAsNumpy()) == [0.5, 0.25, 0.125]
    assert list(q.ZeroPointAsNumpy()) == [0, 1, -1]
    assert q.QuantizedDimension() == 0


def test_dynamic_shape_signature() -> None:
    b = ModelBuilder()
    x = b.input("x", (1, 4), F, shape_signature=(-1, 4))
    y = b.tensor("y", (1, 4), F, shape_signature=(-1, 4))
    b.op("RELU", [x], [y])
    b.output(y)
    interpreter = reference_interpreter(b.build())
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, 4]
    (out,) = run_reference(b.build(), [np.full((3, 4), -1.0, F)])
    assert out.shape == (3, 4) and np.all(out == 0)


@pytest.mark.parametrize("case", sorted(CASES), ids=str)
def test_edgert_reader_reads_back_what_was_built(case: str) -> None:
    from edgert.model.reader import load_model

    opcode, in_specs, out_specs, options, consts, version = CASES[case]
    graph = load_model(build_one_op(opcode, in_specs, out_specs, options=options, consts=consts, version=version))
    (op,) = graph.operators
    assert (op.opcode, op.version) == (opcode, version)
    assert sum(i == -1 for i in op.inputs) == sum(v is None for v in consts.values())
    for key, value in (options or {}).items():
        got = getattr(op.options, key)
        if isinstance(value, list):
            assert got == tuple(value), key
        elif isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-6), key
        else:
            assert got == value, key
    for pos, value in consts.items():
        if value is None:
            continue
        arr, q = value if isinstance(value, tuple) else (value, None)
        t = graph.tensors[op.inputs[pos]]
        np.testing.assert_array_equal(t.data, arr)
        assert t.data.dtype == arr.dtype
        if q is not None:
            np.testing.assert_allclose(t.quantization.scales, q.scales, rtol=1e-7)
            assert t.quantization.zero_points == q.zero_points


def test_options_dataclass_from_reader_rebuilds_the_same_op() -> None:
    from edgert.model.reader import load_model

    opcode, in_specs, out_specs, options, consts, version = CASES["CONV_2D_int8_per_channel"]
    first = load_model(build_one_op(opcode, in_specs, out_specs, options=options, consts=consts, version=version))
    again = load_model(build_one_op(opcode, in_specs, out_specs, options=first.operators[0].options,
                                    consts=consts, version=version))
    assert again.operators[0].options == first.operators[0].options
