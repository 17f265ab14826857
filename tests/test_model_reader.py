"""The model reader against LiteRT's own view of every shared model, and its errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from conftest import DATA, model_id, shared_models
from edgert.errors import ModelError
from edgert.model import load_model

ALL_MODELS = shared_models() or sorted(DATA.glob("*.tflite"))


@pytest.mark.parametrize("path", ALL_MODELS, ids=model_id)
def test_every_tensor_matches_litert(path):
    graph = load_model(path)
    ip = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    ip.allocate_tensors()
    details = {d["index"]: d for d in ip.get_tensor_details()}
    main = graph.main
    assert [d["index"] for d in ip.get_input_details()] == list(main.inputs)
    assert [d["index"] for d in ip.get_output_details()] == list(main.outputs)
    checked_constants = 0
    # LiteRT's DENSIFY kernel renames its output tensor to "Densify_output" at prepare time.
    densified = {o for op in main.operators if op.opcode == "DENSIFY" for o in op.outputs}
    for t in main.tensors:
        d = details.get(t.index)
        if d is None:  # LiteRT hides some internal tensors (e.g. resource handles) from its details
            continue
        assert d["name"] == ("Densify_output" if t.index in densified else t.name)
        if t.type_name not in ("RESOURCE", "VARIANT"):
            assert np.dtype(d["dtype"]) == t.dtype, t.name
        assert tuple(d["shape_signature"]) == t.shape_signature, t.name
        if not t.is_dynamic:
            assert tuple(d["shape"]) == t.shape, t.name
        qp = d["quantization_parameters"]
        if t.quantization is None:
            assert qp["scales"].size == 0, t.name
        else:
            np.testing.assert_array_equal(qp["scales"], np.asarray(t.quantization.scales, np.float32), err_msg=t.name)
            np.testing.assert_array_equal(qp["zero_points"], np.asarray(t.quantization.zero_points), err_msg=t.name)
            assert qp["quantized_dimension"] == t.quantization.quantized_dimension
        if t.is_constant and t.sparsity is None:
            ref = ip.get_tensor(t.index)
            assert ref.dtype == t.data.dtype and ref.shape == t.data.shape, t.name
            assert ref.tobytes() == t.data.tobytes(), t.name
            checked_constants += 1
        if t.sparsity is not None:
            assert d["sparsity_parameters"], t.name
            assert tuple(d["sparsity_parameters"]["traversal_order"]) == t.sparsity.traversal_order
    assert checked_constants == sum(1 for t in main.tensors if t.is_constant and t.sparsity is None and t.index in details)


def test_constants_are_zero_copy_views_of_the_file():
    graph = load_model(DATA / "kws_ds_cnn_float.tflite")
    weights = [t for t in graph.tensors if t.is_constant and t.nbytes > 1024]
    assert weights
    for t in weights:
        assert not t.data.flags.writeable
        base = t.data
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        assert not isinstance(base, np.ndarray), "constant data must view the mapped file, not a copy"


def test_typed_options_and_subgraphs():
    graph = load_model(DATA / "hey_jarvis.tflite")
    assert len(graph.subgraphs) == 2
    call_once = graph.operators[0]
    assert call_once.opcode == "CALL_ONCE" and call_once.options.init_subgraph_index == 1
    conv = next(op for op in graph.operators if op.opcode == "CONV_2D")
    assert conv.options.padding in ("SAME", "VALID")
    assert conv.options.fused_activation_function in ("NONE", "RELU", "RELU6")
    handles = [t for t in graph.tensors if t.type_name == "RESOURCE"]
    assert handles
    assert "min_runtime_version" in graph.metadata


def test_float16_and_sparse_constants_are_represented():
    path = next((p for p in shared_models() if p.name == "pose_detection.tflite"), None)
    if path is None:
        pytest.skip("../shared/models not present")
    graph = load_model(path)
    f16 = [t for t in graph.tensors if t.is_constant and t.dtype == np.float16]
    sparse = [t for t in graph.tensors if t.sparsity is not None]
    assert f16 and sparse
    s = sparse[0]
    assert s.data.ndim == 1 and s.data.size < s.size  # compressed values, not the dense array
    assert len(s.sparsity.dim_metadata) == len(s.sparsity.traversal_order)


def _bad(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope.tflite")
    with pytest.raises(ModelError, match="empty"):
        load_model(_bad(tmp_path, "empty.tflite", b""))
    with pytest.raises(ModelError, match="directory"):
        load_model(tmp_path)


def test_truncated_and_wrong_identifier(tmp_path):
    good = (DATA / "sine_float.tflite").read_bytes()
    with pytest.raises(ModelError, match="truncated"):
        load_model(_bad(tmp_path, "t.tflite", good[:6]))
    with pytest.raises(ModelError, match="file identifier"):
        load_model(_bad(tmp_path, "id.tflite", good[:4] + b"XXXX" + good[8:]))
    with pytest.raises(ModelError):
        load_model(_bad(tmp_path, "half.tflite", good[: len(good) // 2]))


def test_schema_version_and_index_errors():
    from edgert.model.builder import ModelBuilder

    b = ModelBuilder()
    x = b.input("x", (1, 4), np.float32)
    y = b.tensor("y", (1, 4), np.float32)
    b.op("RELU", [x], [y])
    b.output(y)
    good = b.build()
    load_model(good)
    # Patch the built flatbuffer through the schema's own offsets: version field and an input index.
    import tflite
    m = tflite.Model.GetRootAs(good, 0)
    pos = m._tab.Offset(4)
    assert pos
    data = bytearray(good)
    vpos = m._tab.Pos + pos
    data[vpos:vpos + 4] = (7).to_bytes(4, "little")
    with pytest.raises(ModelError, match="schema version 7"):
        load_model(bytes(data))
    op = m.Subgraphs(0).Operators(0)
    ipos = op._tab.Vector(op._tab.Offset(6))
    data = bytearray(good)
    data[ipos:ipos + 4] = (99).to_bytes(4, "little", signed=True)
    with pytest.raises(ModelError, match="refers to tensor 99"):
        load_model(bytes(data))


def test_constant_length_mismatch_and_absurd_shape():
    from edgert.model.builder import ModelBuilder

    b = ModelBuilder()
    x = b.input("x", (1, 4), np.float32)
    w = b.const("w", np.arange(4, dtype=np.float32).reshape(1, 4))
    y = b.tensor("y", (1, 4), np.float32)
    b.op("ADD", [x, w], [y])
    b.output(y)
    good = b.build()
    import tflite
    t = tflite.Model.GetRootAs(good, 0).Subgraphs(0).Tensors(1)
    spos = t._tab.Vector(t._tab.Offset(4))  # shape vector of "w"
    data = bytearray(good)
    data[spos + 4:spos + 8] = (5).to_bytes(4, "little")
    with pytest.raises(ModelError, match="constant data is 16 bytes but shape"):
        load_model(bytes(data))
    data[spos + 4:spos + 8] = (-3).to_bytes(4, "little", signed=True)
    with pytest.raises(ModelError, match="invalid shape"):
        load_model(bytes(data))
