"""Wire format: requests and replies round-trip, and each malformed request is named by its kind."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from edgert.errors import RequestError
from edgert.serve import protocol as p


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple
    dtype: np.dtype


SPECS = [Spec("image", (1, 4, 4, 3), np.dtype("float32")), Spec("mask", (2,), np.dtype("int8"))]


def header(**fields) -> bytes:
    base = {"v": 1, "id": "r1", "type": "infer", "model": "m",
            "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 4, 4, 3]},
                       {"name": "mask", "dtype": "int8", "shape": [2]}]}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


IMAGE = np.arange(48, dtype=np.float32).reshape(1, 4, 4, 3)
MASK = np.array([-1, 7], dtype=np.int8)
GOOD = [header(), IMAGE.tobytes(), MASK.tobytes()]


def kind_of(frames, **kw) -> str:
    with pytest.raises(RequestError) as err:
        req = p.decode_request(frames, **kw)
        p.match_inputs(req, SPECS)
    return err.value.kind


def test_request_round_trip_positional_and_named():
    for inputs in ([IMAGE, MASK], {"mask": MASK, "image": IMAGE}):
        frames = p.encode_request(7, model="m", inputs=inputs, deadline_ms=50)
        req = p.decode_request([bytes(memoryview(f)) for f in frames])
        assert (req.id, req.type, req.model, req.deadline_ms) == (7, "infer", "m", 50)
        ordered = p.match_inputs(req, SPECS)
        np.testing.assert_array_equal(ordered[0], IMAGE)
        np.testing.assert_array_equal(ordered[1], MASK)
        assert not ordered[0].flags.writeable  # a view on the frame, no copy


def test_big_endian_inputs_travel_little_endian():
    frames = p.encode_request("x", model="m", inputs=[IMAGE.astype(">f4"), MASK])
    req = p.decode_request([bytes(memoryview(f)) for f in frames])
    np.testing.assert_array_equal(p.match_inputs(req, SPECS)[0], IMAGE)


def test_control_requests():
    for rtype in ("ping", "models", "stats", "memory", "reload"):
        req = p.decode_request(p.encode_request("c", rtype))
        assert req.type == rtype and req.arrays == ()


def test_reply_round_trip():
    out = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    frames = p.encode_reply("r", outputs=[("y", out)], timing_us={"run": 5})
    reply = p.decode_reply([bytes(memoryview(f)) for f in frames])
    assert reply.id == "r" and reply.status == "ok" and reply.outputs[0].name == "y"
    np.testing.assert_array_equal(reply.arrays[0], out)
    assert reply.timing_us == {"run": 5}
    control = p.decode_reply(p.encode_reply(3, result={"a": [1, 2]}))
    assert control.result == {"a": [1, 2]} and control.arrays == ()


@pytest.mark.parametrize("kind, status", [("busy", "busy"), ("timeout", "timeout"),
                                          ("shutting_down", "unavailable"), ("bad_shape", "error")])
def test_error_replies(kind, status):
    reply = p.decode_reply(p.error_reply("q", RequestError("why", kind=kind)))
    assert (reply.id, reply.status, reply.error_kind, reply.error_message) == ("q", status, kind, "why")


@pytest.mark.parametrize("frames, kind", [
    ([], "bad_header"),
    ([b"{not json", IMAGE.tobytes(), MASK.tobytes()], "bad_json"),
    ([b"\xff\xfe", IMAGE.tobytes(), MASK.tobytes()], "bad_json"),
    ([b"[1, 2]"], "bad_json"),
    ([header(v=2), IMAGE.tobytes(), MASK.tobytes()], "unsupported_version"),
    ([header(v=None), IMAGE.tobytes(), MASK.tobytes()], "unsupported_version"),
    ([header(id=None), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(id=""), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(id="x" * 200), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(type="explode"), IMAGE.tobytes(), MASK.tobytes()], "unknown_type"),
    ([header(extra=1), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(model=None), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(deadline_ms=-5), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(deadline_ms="soon"), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(inputs=None), IMAGE.tobytes(), MASK.tobytes()], "bad_header"),
    ([header(), IMAGE.tobytes()], "bad_input_count"),
    ([header(), IMAGE.tobytes(), MASK.tobytes(), b"x"], "bad_input_count"),
    ([header(inputs=[{"name": "image", "dtype": "float32", "shape": [1, 4, 4, 3]}]), IMAGE.tobytes()],
     "bad_input_count"),
    ([header(), IMAGE.tobytes()[:-4], MASK.tobytes()], "bad_length"),
    ([header(), IMAGE.tobytes(), MASK.tobytes() + b"\0"], "bad_length"),
    ([header(inputs=[{"name": "image", "dtype": "float32", "shape": [1, 4, 4, 3]},
                     {"name": "mask", "dtype": "object", "shape": [2]}]), IMAGE.tobytes(), MASK.tobytes()],
     "bad_dtype"),
    ([header(inputs=[{"name": "image", "dtype": "float64", "shape": [1, 4, 4, 3]},
                     {"name": "mask", "dtype": "int8", "shape": [2]}]), IMAGE.astype(np.float64).tobytes(),
      MASK.tobytes()], "bad_dtype"),
    ([header(inputs=[{"name": "image", "dtype": "float32", "shape": [1, 4, 3, 4]},
                     {"name": "mask", "dtype": "int8", "shape": [2]}]), IMAGE.tobytes(), MASK.tobytes()],
     "bad_shape"),
    ([header(inputs=[{"name": "image", "dtype": "float32", "shape": [1, 4, -4, 3]},
                     {"name": "mask", "dtype": "int8", "shape": [2]}]), IMAGE.tobytes(), MASK.tobytes()],
     "bad_shape"),
    ([header(inputs=[{"name": "image", "dtype": "float32", "shape": [1, 4, 4, 3]},
                     {"name": "masque", "dtype": "int8", "shape": [2]}]), IMAGE.tobytes(), MASK.tobytes()],
     "bad_input_name"),
    ([header(inputs=[{"name": "image", "dtype": "float32", "shape": [1, 4, 4, 3]},
                     {"dtype": "int8", "shape": [2]}]), IMAGE.tobytes(), MASK.tobytes()], "bad_input_name"),
    ([header(inputs=[{"name": "image", "dtype": "float32", "shape": [1, 4, 4, 3]},
                     {"name": "image", "dtype": "int8", "shape": [2]}]), IMAGE.tobytes(), MASK.tobytes()],
     "bad_input_name"),
    ([b" " * (p.MAX_HEADER_BYTES + 1)], "too_large"),
])
def test_malformed_requests(frames, kind):
    assert kind_of(frames) == kind


def test_message_size_limit_counts_every_frame():
    size = sum(len(f) for f in GOOD)
    assert kind_of(GOOD, max_bytes=size - 1) == "too_large"
    p.match_inputs(p.decode_request(GOOD, max_bytes=size), SPECS)


def test_peek_id_for_error_replies():
    assert p.peek_id(header(v=9)) == "r1"
    assert p.peek_id(b"{bad") is None
    assert p.peek_id(json.dumps({"id": ["x"]}).encode()) is None


def test_envelopes():
    assert p.split_envelope([b"peer", b"", b"h", b"t"]) == ([b"peer", b""], [b"h", b"t"])
    assert p.split_envelope([b"peer", b"h"]) == ([b"peer"], [b"h"])


def test_bad_replies_are_detected():
    with pytest.raises(RequestError, match="bad_reply|not an edgert"):
        p.decode_reply([b'{"v": 1, "status": "fine"}'])
    frames = p.encode_reply("r", outputs=[("y", np.zeros(3, np.float32))])
    with pytest.raises(RequestError):
        p.decode_reply(frames[:1])


def test_unsupported_dtype_on_encode():
    with pytest.raises(RequestError) as err:
        p.encode_request("x", model="m", inputs=[np.array(["a"])])
    assert err.value.kind == "bad_dtype"
