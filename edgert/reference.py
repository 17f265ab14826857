"""The correctness oracle: runs models in LiteRT (TFLite's reference kernels) and makes seeded test inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgert.errors import ModelError

__all__ = ["reference_interpreter", "run_reference", "random_inputs", "KERNELS"]

# Which LiteRT op resolver each `kernels=` name selects.
KERNELS: dict[str, OpResolverType] = {
    "ref": OpResolverType.BUILTIN_REF,  # reference kernels: the numerics edgert matches
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,  # optimized kernels, no XNNPACK
    "xnnpack": OpResolverType.AUTO,  # optimized kernels + default delegates (XNNPACK)
}

# int32/int64 inputs are usually indices, axes or sizes: keep them small and non-negative.
INT_INDEX_HIGH = 4
FLOAT_LOW, FLOAT_HIGH = -1.0, 1.0


def _describe(model: str | Path | bytes | bytearray | memoryview) -> str:
    return f"model of {len(model)} bytes" if isinstance(model, (bytes, bytearray, memoryview)) else str(model)


def reference_interpreter(model: str | Path | bytes, *, kernels: str = "ref", threads: int = 1) -> Interpreter:
    """A LiteRT interpreter for `model` (path or flatbuffer bytes) with tensors allocated.

    kernels: "ref" (BUILTIN_REF, the oracle), "builtin" (optimized, no delegates) or "xnnpack".
    Anything LiteRT rejects (corrupt file, unknown or custom op, bad shapes) raises ModelError
    carrying LiteRT's own message.
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {sorted(KERNELS)}, got {kernels!r}")
    kwargs: dict[str, Any] = {"experimental_op_resolver_type": KERNELS[kernels], "num_threads": threads}
    if isinstance(model, (bytes, bytearray, memoryview)):
        kwargs["model_content"] = bytes(model)
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        kwargs["model_path"] = str(path)
    try:
        interpreter = Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"LiteRT rejected {_describe(model)}: {e}") from e
    return interpreter


def run_reference(model: str | Path | bytes, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], *,
                  kernels: str = "ref") -> list[np.ndarray]:
    """Runs `model` once in LiteRT and returns copies of its outputs in graph output order.

    `inputs` is a sequence in graph input order or a mapping from input tensor name. An input
    whose shape differs from the model's (dynamic dims) resizes that input first.
    """
    interpreter = reference_interpreter(model, kernels=kernels)
    details = interpreter.get_input_details()
    if isinstance(inputs, Mapping):
        by_name = {d["name"]: d for d in details}
        unknown = sorted(set(inputs) - set(by_name))
        missing = sorted(set(by_name) - set(inputs))
        if unknown or missing:
            raise ValueError(f"input names do not match the model: unknown {unknown}, missing {missing}; "
                             f"model inputs are {sorted(by_name)}")
        arrays = [np.asarray(inputs[d["name"]]) for d in details]
    else:
        arrays = [np.asarray(a) for a in inputs]
        if len(arrays) != len(details):
            raise ValueError(f"model has {len(details)} inputs, got {len(arrays)}")
    try:
        resized = False
        for d, a in zip(details, arrays):
            if tuple(a.shape) != tuple(d["shape"]):
                interpreter.resize_tensor_input(d["index"], list(a.shape))
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for d, a in zip(details, arrays):
            if a.dtype != d["dtype"]:
                raise ValueError(f"input {d['name']!r} has dtype {d['dtype'].__name__}, got {a.dtype}")
            interpreter.set_tensor(d["index"], a)
        interpreter.invoke()
    except RuntimeError as e:
        raise ModelError(f"LiteRT failed to run {_describe(model)}: {e}") from e
    return [np.array(interpreter.get_tensor(d["index"]), copy=True) for d in interpreter.get_output_details()]


def _spec_parts(spec: Any) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(spec, Mapping):  # a LiteRT tensor detail dict
        return tuple(int(d) for d in spec["shape"]), np.dtype(spec["dtype"])
    if hasattr(spec, "shape") and hasattr(spec, "dtype") and not isinstance(spec, np.ndarray):
        return tuple(int(d) for d in spec.shape), np.dtype(spec.dtype)
    shape, dtype = spec[0], spec[1]
    return tuple(int(d) for d in shape), np.dtype(dtype)


def random_inputs(specs: Sequence[Any], seed: int = 0) -> list[np.ndarray]:
    """Seeded test inputs, one per spec, identical on every platform for a given seed (PCG64).

    specs: (shape, dtype) or (shape, dtype, quantization) tuples, objects with .shape/.dtype
    (e.g. edgert Tensor), or LiteRT tensor detail dicts. Quantization does not change the values.
    Values by dtype:
      float16/32/64: uniform in [-1, 1)
      int8/uint8/int16/uint16: uniform over the whole dtype range
      int32/int64/uint32/uint64: uniform in [0, 4) (they are usually indices, axes or sizes)
      bool: fair coin
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for spec in specs:
        shape, dtype = _spec_parts(spec)
        if dtype.kind == "f":
            a = rng.uniform(FLOAT_LOW, FLOAT_HIGH, size=shape).astype(dtype)
        elif dtype == np.bool_:
            a = rng.integers(0, 2, size=shape, dtype=np.int8).astype(np.bool_)
        elif dtype.kind in "iu" and dtype.itemsize <= 2:
            info = np.iinfo(dtype)
            a = rng.integers(int(info.min), int(info.max), size=shape, dtype=dtype, endpoint=True)
        elif dtype.kind in "iu":
            a = rng.integers(0, INT_INDEX_HIGH, size=shape, dtype=dtype)
        else:
            raise ValueError(f"random_inputs: no generator for dtype {dtype}")
        out.append(np.ascontiguousarray(a))
    return out
