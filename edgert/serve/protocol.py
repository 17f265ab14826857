"""The wire format between edgert clients and the daemon: JSON header frame + one raw frame per tensor.

Pure functions, no sockets: encode/decode requests and replies as lists of frames. docs/protocol.md
is the normative description; this module is its reference implementation. No pickle: tensors
travel as raw little-endian C-order bytes described by (name, dtype, shape) in the header.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgert.errors import RequestError

PROTOCOL_VERSION = 1

# Request types. "infer" runs a model; the others are answered by the daemon's I/O thread.
REQUEST_TYPES = ("infer", "ping", "models", "stats", "memory", "reload")

# Reply statuses. Every non-"ok" reply also carries {"error": {"kind", "message"}}.
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_BUSY = "busy"
STATUS_TIMEOUT = "timeout"
STATUS_UNAVAILABLE = "unavailable"
STATUSES = (STATUS_OK, STATUS_ERROR, STATUS_BUSY, STATUS_TIMEOUT, STATUS_UNAVAILABLE)

MAX_ID_CHARS = 128
MAX_HEADER_BYTES = 64 * 1024

# Wire dtype names; byte order is always little-endian on the wire.
_DTYPE_NAMES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                "float16", "float32", "float64", "complex64")
DTYPES: dict[str, np.dtype] = {name: np.dtype(name).newbyteorder("<") for name in _DTYPE_NAMES}


def dtype_name(dtype: np.dtype | type | str) -> str:
    """Wire name of a numpy dtype ("float32"); RequestError(kind="bad_dtype") for one the wire lacks."""
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise RequestError(f"dtype {dt} cannot travel on the wire (supported: {', '.join(_DTYPE_NAMES)})",
                           kind="bad_dtype")
    return dt.name


@dataclass(frozen=True)
class TensorMeta:
    """Header description of one tensor frame."""

    name: str | None
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize

    def to_json(self) -> dict:
        out: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.name is not None:
            out = {"name": self.name, **out}
        return out


@dataclass(frozen=True)
class Request:
    """A decoded request: header fields and, for "infer", one read-only array per input (views on the frames)."""

    id: str | int | None
    type: str
    model: str | None = None
    deadline_ms: float | None = None
    inputs: tuple[TensorMeta, ...] = ()
    arrays: tuple[np.ndarray, ...] = ()
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A decoded reply."""

    id: str | int | None
    status: str
    outputs: tuple[TensorMeta, ...] = ()
    arrays: tuple[np.ndarray, ...] = ()
    result: Any = None
    error_kind: str | None = None
    error_message: str | None = None
    timing_us: dict = field(default_factory=dict)


def _bad(kind: str, message: str) -> RequestError:
    return RequestError(message, kind=kind)


def _frame_bytes(frame: Any) -> memoryview:
    """The payload of a frame given as bytes, memoryview, zmq.Frame or ndarray."""
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    if buf is not None:
        return memoryview(buf)
    return memoryview(frame)


def _tensor_meta(item: Any, where: str) -> TensorMeta:
    if not isinstance(item, dict):
        raise _bad("bad_header", f"{where} must be an object with dtype and shape")
    unknown = set(item) - {"name", "dtype", "shape"}
    if unknown:
        raise _bad("bad_header", f"{where} has unknown field(s) {sorted(unknown)}")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad("bad_header", f"{where}.name must be a string")
    dt = item.get("dtype")
    if dt not in DTYPES:
        raise _bad("bad_dtype", f"{where}.dtype {dt!r} is not one of {', '.join(_DTYPE_NAMES)}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise _bad("bad_shape", f"{where}.shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > 16:
        raise _bad("bad_shape", f"{where}.shape has {len(shape)} dimensions (at most 16)")
    return TensorMeta(name=name, dtype=dt, shape=tuple(shape))


def _array(meta: TensorMeta, frame: Any, where: str) -> np.ndarray:
    data = _frame_bytes(frame)
    if data.nbytes != meta.nbytes:
        raise _bad("bad_length", f"{where} ({meta.name or 'unnamed'}): frame has {data.nbytes} bytes, "
                                 f"dtype {meta.dtype} shape {list(meta.shape)} needs {meta.nbytes}")
    return np.frombuffer(data, dtype=DTYPES[meta.dtype]).reshape(meta.shape)


def _parse_header(frame: Any) -> dict:
    raw = _frame_bytes(frame)
    if raw.nbytes > MAX_HEADER_BYTES:
        raise _bad("too_large", f"header frame has {raw.nbytes} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(raw.tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad("bad_json", f"header frame is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _bad("bad_json", "header frame must be a JSON object")
    return header


def peek_id(frame: Any) -> str | int | None:
    """The request id of a header frame if it can be read at all (for error replies), else None."""
    try:
        rid = _parse_header(frame).get("id")
    except RequestError:
        return None
    return rid if _valid_id(rid) else None


def _valid_id(rid: Any) -> bool:
    return (isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS) or (
        isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**63)


_REQUEST_FIELDS = {"v", "id", "type", "model", "deadline_ms", "inputs", "options"}


def decode_request(frames: Sequence[Any], *, max_bytes: int | None = None) -> Request:
    """Frames after the envelope -> Request. Raises RequestError with a kind naming the problem."""
    if not frames:
        raise _bad("bad_header", "empty message: expected a JSON header frame")
    if max_bytes is not None:
        total = sum(_frame_bytes(f).nbytes for f in frames)
        if total > max_bytes:
            raise _bad("too_large", f"message has {total} bytes, the limit is {max_bytes}")
    header = _parse_header(frames[0])
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise _bad("unsupported_version",
                   f"protocol version {version!r} is not supported (this daemon speaks v={PROTOCOL_VERSION})")
    rid = header.get("id")
    if not _valid_id(rid):
        raise _bad("bad_header", f"id must be a non-empty string of at most {MAX_ID_CHARS} characters "
                                 f"or an integer, got {rid!r}")
    unknown = set(header) - _REQUEST_FIELDS
    if unknown:
        raise _bad("bad_header", f"unknown header field(s) {sorted(unknown)}")
    rtype = header.get("type", "infer")
    if rtype not in REQUEST_TYPES:
        raise _bad("unknown_type", f"type {rtype!r} is not one of {', '.join(REQUEST_TYPES)}")
    deadline = header.get("deadline_ms")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or not deadline > 0 or not math.isfinite(deadline)):
        raise _bad("bad_header", f"deadline_ms must be a positive number of milliseconds, got {deadline!r}")
    options = header.get("options", {})
    if not isinstance(options, dict):
        raise _bad("bad_header", "options must be an object")
    if rtype != "infer":
        if len(frames) != 1:
            raise _bad("bad_input_count", f"a {rtype} request has no tensor frames, got {len(frames) - 1}")
        return Request(id=rid, type=rtype, deadline_ms=deadline, options=options)
    model = header.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("bad_header", "an infer request needs a model name (\"model\": \"...\")")
    items = header.get("inputs")
    if not isinstance(items, list):
        raise _bad("bad_header", "an infer request needs \"inputs\": a list of {name, dtype, shape}")
    metas = tuple(_tensor_meta(item, f"inputs[{i}]") for i, item in enumerate(items))
    if len(frames) - 1 != len(metas):
        raise _bad("bad_input_count", f"header describes {len(metas)} input(s) but {len(frames) - 1} "
                                      f"tensor frame(s) followed")
    arrays = tuple(_array(m, f, f"inputs[{i}]") for i, (m, f) in enumerate(zip(metas, frames[1:])))
    return Request(id=rid, type=rtype, model=model, deadline_ms=deadline, inputs=metas, arrays=arrays,
                   options=options)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _le(array: np.ndarray) -> np.ndarray:
    """array as little-endian C-contiguous (a view when it already is)."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and np.little_endian is False):
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def encode_request(rid: str | int, rtype: str = "infer", *, model: str | None = None,
                   inputs: Sequence[np.ndarray] | dict[str, np.ndarray] | None = None,
                   deadline_ms: float | None = None, options: dict | None = None) -> list:
    """Build the frames of a request. `inputs` by position (list) or by name (dict)."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": rid, "type": rtype}
    frames: list = []
    if rtype == "infer":
        header["model"] = model
        items = list(inputs.items()) if isinstance(inputs, dict) else [(None, a) for a in (inputs or ())]
        metas = []
        for name, value in items:
            arr = _le(np.asarray(value))
            metas.append(TensorMeta(name, dtype_name(arr.dtype), tuple(arr.shape)).to_json())
            frames.append(arr)
        header["inputs"] = metas
    if deadline_ms is not None:
        header["deadline_ms"] = deadline_ms
    if options:
        header["options"] = options
    return [_dumps(header), *frames]


def encode_reply(rid: str | int | None, status: str = STATUS_OK, *,
                 outputs: Sequence[tuple[str, np.ndarray]] | None = None, result: Any = None,
                 error_kind: str | None = None, error_message: str | None = None,
                 timing_us: dict | None = None) -> list:
    """Build the frames of a reply; arrays are returned as-is (the caller decides copy or not)."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": rid, "status": status}
    frames: list = []
    if outputs is not None:
        metas = []
        for name, value in outputs:
            arr = _le(value)
            metas.append(TensorMeta(name, dtype_name(arr.dtype), tuple(arr.shape)).to_json())
            frames.append(arr)
        header["outputs"] = metas
    if result is not None:
        header["result"] = result
    if status != STATUS_OK:
        header["error"] = {"kind": error_kind or status, "message": error_message or status}
    if timing_us:
        header["timing_us"] = timing_us
    return [_dumps(header), *frames]


def error_reply(rid: str | int | None, exc: RequestError) -> list:
    """An error reply for a RequestError; the status follows the kind (busy, timeout, ...)."""
    status = {"busy": STATUS_BUSY, "timeout": STATUS_TIMEOUT,
              "shutting_down": STATUS_UNAVAILABLE}.get(exc.kind, STATUS_ERROR)
    return encode_reply(rid, status, error_kind=exc.kind, error_message=str(exc))


def decode_reply(frames: Sequence[Any]) -> Reply:
    """Frames after the envelope -> Reply. RequestError(kind="bad_reply") when it is not one."""
    if not frames:
        raise _bad("bad_reply", "empty reply")
    try:
        header = _parse_header(frames[0])
    except RequestError as exc:
        raise _bad("bad_reply", str(exc)) from None
    if header.get("v") != PROTOCOL_VERSION or header.get("status") not in STATUSES:
        raise _bad("bad_reply", f"not an edgert v{PROTOCOL_VERSION} reply: {header!r:.200}")
    metas = tuple(_tensor_meta(item, f"outputs[{i}]") for i, item in enumerate(header.get("outputs", [])))
    if len(metas) != len(frames) - 1:
        raise _bad("bad_reply", f"reply describes {len(metas)} output(s) but has {len(frames) - 1} frame(s)")
    arrays = tuple(_array(m, f, f"outputs[{i}]") for i, (m, f) in enumerate(zip(metas, frames[1:])))
    error = header.get("error") or {}
    return Reply(id=header.get("id"), status=header["status"], outputs=metas, arrays=arrays,
                 result=header.get("result"), error_kind=error.get("kind"),
                 error_message=error.get("message"), timing_us=header.get("timing_us") or {})


def split_envelope(frames: Sequence[Any]) -> tuple[list, list]:
    """ROUTER frames -> (envelope, body). The envelope is the routing id plus the empty delimiter
    REQ sockets add (DEALER clients may send it or not); the reply must start with the same envelope."""
    if len(frames) >= 2 and _frame_bytes(frames[1]).nbytes == 0:
        return list(frames[:2]), list(frames[2:])
    return list(frames[:1]), list(frames[1:])


def match_inputs(request: Request, specs: Sequence[Any]) -> list[np.ndarray]:
    """The request's arrays in the model's input order, checked against its specs (objects with
    name, shape, dtype). Inputs are matched by name when every input is named, else by position."""
    model = request.model
    if len(request.arrays) != len(specs):
        raise _bad("bad_input_count", f"model {model!r} takes {len(specs)} input(s) "
                                      f"({', '.join(s.name for s in specs)}), got {len(request.arrays)}")
    names = [m.name for m in request.inputs]
    if all(n is not None for n in names):
        by_name = dict(zip(names, request.arrays))
        if len(by_name) != len(names):
            raise _bad("bad_input_name", f"input names repeat: {names}")
        missing = [s.name for s in specs if s.name not in by_name]
        if missing:
            extra = sorted(set(names) - {s.name for s in specs})
            raise _bad("bad_input_name", f"model {model!r} has no input named {extra[0]!r} "
                                         f"(inputs: {', '.join(s.name for s in specs)})")
        ordered = [by_name[s.name] for s in specs]
    elif any(n is not None for n in names):
        raise _bad("bad_input_name", "name every input or none of them")
    else:
        ordered = list(request.arrays)
    for spec, arr in zip(specs, ordered):
        if np.dtype(spec.dtype) != arr.dtype.newbyteorder("="):
            raise _bad("bad_dtype", f"input {spec.name!r} of model {model!r} is {np.dtype(spec.dtype).name}, "
                                    f"got {arr.dtype.name}")
        if tuple(spec.shape) != arr.shape:
            raise _bad("bad_shape", f"input {spec.name!r} of model {model!r} has shape {list(spec.shape)}, "
                                    f"got {list(arr.shape)}")
    return ordered
