"""Typed operator options: one frozen dataclass per TFLite options table, fields named as in schema.fbs.

The dataclasses are derived once, at import, from the generated `tflite` schema classes, so every
options table of the schema (Conv2DOptions, ReshapeOptions, ...) has a value type whose field
names are the schema's snake_case names. Enum fields hold upper-case names ("SAME", "RELU6"),
vector fields hold tuples. Kernels read them as plain attributes: `op.options.stride_w`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import fields, make_dataclass
from typing import Any

import numpy as np
import tflite

_SKIP_METHODS = {"Init", "GetRootAs"}
_ENUM_FIELDS = {
    "padding": "Padding",
    "fused_activation_function": "ActivationFunctionType",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "mode": "MirrorPadMode",
    "in_data_type": "TensorType",
    "out_data_type": "TensorType",
    "output_type": "TensorType",
    "quantized_bias_type": "TensorType",
    "idx_out_type": "TensorType",
    "out_type": "TensorType",
    "combiner": "CombinerType",
    "type": "LSHProjectionType",
    "kernel_type": "LSTMKernelType",
    "reduce_function": "ReduceWindowFunction",
}


def snake_case(name: str) -> str:
    """Conv2D-style CamelCase getter name -> schema field name (DilationWFactor -> dilation_w_factor)."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", s)
    return s.lower()


def _enum_names(enum_class_name: str) -> dict[int, str]:
    cls = getattr(tflite, enum_class_name, None)
    if cls is None:
        return {}
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _getters(schema_class: type) -> list[tuple[str, str, bool]]:
    """(field name, getter name, is_vector) for every field of a schema table class."""
    names = [n for n in vars(schema_class) if not n.startswith("_")]
    out = []
    for n in names:
        if n in _SKIP_METHODS or n.startswith("GetRootAs") or n.endswith("BufferHasIdentifier"):
            continue
        if n.endswith(("AsNumpy", "Length", "IsNone")):
            continue
        fn = vars(schema_class)[n]
        if isinstance(fn, classmethod) or not callable(fn):
            continue
        params = list(inspect.signature(fn).parameters)
        is_vector = f"{n}Length" in names
        if len(params) == 1 or (is_vector and len(params) == 2):
            out.append((snake_case(n), n, is_vector))
    return out


def _build_option_types() -> dict[str, tuple[type, type, list[tuple[str, str, bool]]]]:
    """Options table name -> (our dataclass, schema class, getters)."""
    types = {}
    for union in ("BuiltinOptions", "BuiltinOptions2"):
        for name, code in vars(getattr(tflite, union)).items():
            if name.startswith("_") or not isinstance(code, int) or code == 0:
                continue
            schema_class = getattr(tflite, name, None)
            if schema_class is None:
                continue
            getters = _getters(schema_class)
            cls = make_dataclass(name, [(f, Any) for f, _, _ in getters], frozen=True,
                                 namespace={"__module__": __name__})
            types[name] = (cls, schema_class, getters)
    return types


OPTION_TYPES = _build_option_types()
_UNION_NAMES = {
    union: {v: k for k, v in vars(getattr(tflite, union)).items() if not k.startswith("_") and isinstance(v, int)}
    for union in ("BuiltinOptions", "BuiltinOptions2")
}
_ENUMS = {f: _enum_names(e) for f, e in _ENUM_FIELDS.items()}


def _value(obj: Any, getter: str, is_vector: bool, field: str, max_len: int) -> Any:
    if is_vector:
        n = getattr(obj, f"{getter}Length")()
        if n < 0 or n > max_len:
            raise ValueError(f"options vector {field} has absurd length {n}")
        as_numpy = getattr(obj, f"{getter}AsNumpy", None)
        if as_numpy is not None:
            arr = as_numpy()
            return tuple(arr.tolist()) if isinstance(arr, np.ndarray) else ()
        return tuple(getattr(obj, getter)(j) for j in range(n))
    v = getattr(obj, getter)()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if field in _ENUMS and isinstance(v, int):
        return _ENUMS[field].get(v, v)
    if isinstance(v, (int, float, bool)) or v is None:
        return v
    return None  # nested tables (rare, StableHLO) are not decoded


def parse_options(union: str, type_code: int, table: Any, max_len: int) -> Any:
    """The typed options of one operator, or None when it has none (or of an unknown type)."""
    if type_code == 0 or table is None:
        return None
    name = _UNION_NAMES[union].get(type_code)
    if name is None or name not in OPTION_TYPES:
        return None
    cls, schema_class, getters = OPTION_TYPES[name]
    obj = schema_class()
    obj.Init(table.Bytes, table.Pos)
    return cls(**{f: _value(obj, g, vec, f, max_len) for f, g, vec in getters})


def options_dict(options: Any) -> dict[str, Any]:
    """An options value as a plain dict (for JSON output)."""
    if options is None:
        return {}
    return {f.name: getattr(options, f.name) for f in fields(options)}
