"""Malformed and hostile requests against a real daemon: each gets its error reply, nobody else notices."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import zmq

from edgert.client import Client
from edgert.errors import RequestError
from edgert.serve import protocol
from test_serve import KWS, SINE, Daemon, close_enough, config_text, free_port, litert_outputs, numba_cache  # noqa: F401

KWS_IN = "serving_default_input:0"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, numba_cache):
    tmp = tmp_path_factory.mktemp("errors")
    port = free_port()
    d = Daemon(tmp, numba_cache, config_text(port, {"sine": SINE, "kws": KWS},
                                             # every request through the queue, so it can fill up
                                             server='queue_size = 2\nmax_message = "1MiB"\ninline_max = 0\n'),
               port=port)
    with d:
        d.wait_ready()
        yield d


@pytest.fixture()
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)  # closes sockets a failed test left open (term() would wait for them)


def raw(ctx: zmq.Context, d: Daemon, kind: int = zmq.DEALER) -> zmq.Socket:
    s = ctx.socket(kind)
    s.linger = 0
    s.connect(d.endpoint)
    return s


def ask(sock: zmq.Socket, frames: list, *, delimiter: bool = True, timeout_ms: int = 10_000) -> protocol.Reply:
    sock.send_multipart(([b""] if delimiter else []) + frames)
    assert sock.poll(timeout_ms), "no reply"
    parts = sock.recv_multipart()
    if delimiter:
        assert parts[0] == b""
        parts = parts[1:]
    return protocol.decode_reply(parts)


def kws_header(**changes) -> dict:
    h = {"v": 1, "id": "e1", "type": "infer", "model": "kws",
         "inputs": [{"name": KWS_IN, "dtype": "float32", "shape": [1, 49, 10, 1]}]}
    h.update(changes)
    return h


X = np.random.default_rng(3).standard_normal((1, 49, 10, 1)).astype(np.float32)


@pytest.mark.parametrize("frames, kind, rid", [
    ([json.dumps(kws_header(model="nope")).encode(), X.tobytes()], "unknown_model", "e1"),
    ([json.dumps(kws_header(inputs=[])).encode()], "bad_input_count", "e1"),
    ([json.dumps(kws_header(inputs=[kws_header()["inputs"][0]] * 2)).encode(), X.tobytes(), X.tobytes()],
     "bad_input_count", "e1"),
    ([json.dumps(kws_header(inputs=[{"name": "x", "dtype": "float32", "shape": [1, 49, 10, 1]}])).encode(),
      X.tobytes()], "bad_input_name", "e1"),
    ([json.dumps(kws_header(inputs=[{"name": KWS_IN, "dtype": "float32", "shape": [1, 10, 49, 1]}])).encode(),
      X.tobytes()], "bad_shape", "e1"),
    ([json.dumps(kws_header(inputs=[{"name": KWS_IN, "dtype": "float64", "shape": [1, 49, 10, 1]}])).encode(),
      X.astype(np.float64).tobytes()], "bad_dtype", "e1"),
    ([json.dumps(kws_header()).encode(), X.tobytes()[:-1]], "bad_length", "e1"),
    ([b'{"v": 1, "id": "e1", "type": "infer", ', X.tobytes()], "bad_json", None),
    ([json.dumps(kws_header(v=99)).encode(), X.tobytes()], "unsupported_version", "e1"),
    ([json.dumps(kws_header(type="launch")).encode()], "unknown_type", "e1"),
    ([json.dumps(kws_header(inputs=[{"dtype": "uint8", "shape": [600_000]}] * 2)).encode(),
      bytes(600_000), bytes(600_000)], "too_large", "e1"),
])
def test_malformed_request_gets_its_error(daemon, ctx, frames, kind, rid):
    sock = raw(ctx, daemon)
    reply = ask(sock, frames)
    assert (reply.status, reply.error_kind, reply.id) == ("error", kind, rid), reply
    assert reply.error_message
    # ... and the daemon goes on serving, on the same connection.
    ok = ask(sock, protocol.encode_request("after", model="kws", inputs=[X]))
    assert ok.status == "ok" and close_enough(ok.arrays[0], litert_outputs(KWS, [X])[0])


def test_req_socket_and_dealer_without_delimiter(daemon, ctx):
    req = raw(ctx, daemon, zmq.REQ)
    req.send_multipart(protocol.encode_request("r", "ping"))
    assert req.poll(10_000)
    assert protocol.decode_reply(req.recv_multipart()).result["status"] == "serving"
    reply = ask(raw(ctx, daemon), protocol.encode_request(5, model="sine", inputs=[np.ones((1, 1), np.float32)]),
                delimiter=False)
    assert reply.status == "ok" and reply.id == 5


def test_expired_deadline_gets_timeout_without_running(daemon, ctx):
    sock = raw(ctx, daemon)
    before = Client(daemon.endpoint).stats()["models"]["kws"]
    reply = ask(sock, protocol.encode_request("late", model="kws", inputs=[X], deadline_ms=0.001))
    assert (reply.status, reply.error_kind, reply.id) == ("timeout", "timeout", "late")
    after = Client(daemon.endpoint).stats()["models"]["kws"]
    assert after["ok"] == before["ok"] and after["errors"].get("timeout", 0) == before["errors"].get("timeout", 0) + 1


def test_full_queue_answers_busy_at_once(daemon, ctx):
    sock = raw(ctx, daemon)
    n = 200
    for i in range(n):
        sock.send_multipart([b"", *protocol.encode_request(i, model="kws", inputs=[X])])
    replies = {}
    end = time.monotonic() + 60
    while len(replies) < n and time.monotonic() < end:
        if sock.poll(1000):
            r = protocol.decode_reply(sock.recv_multipart()[1:])
            replies[r.id] = r
    assert sorted(replies) == list(range(n)), "every request is answered"
    statuses = [r.status for r in replies.values()]
    assert statuses.count("busy") > 0 and statuses.count("ok") > 0
    ref = litert_outputs(KWS, [X])[0]
    assert all(close_enough(r.arrays[0], ref) for r in replies.values() if r.status == "ok")
    assert all(r.error_kind == "busy" for r in replies.values() if r.status == "busy")
    assert Client(daemon.endpoint).stats()["models"]["kws"]["inline"] == 0  # inline_max = 0: all queued


def test_disconnect_mid_request_does_not_disturb_others(daemon, ctx):
    with Client(daemon.endpoint, timeout=10) as good:
        for _ in range(20):
            gone = raw(ctx, daemon)
            gone.send_multipart([b"", *protocol.encode_request("bye", model="kws", inputs=[X])])
            gone.close(linger=0)
        # Not even ZMTP: a TCP peer that sends junk and hangs up.
        with socket.create_connection(("127.0.0.1", daemon.port)) as junk:
            junk.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(1000))
        x = np.array([[1.25]], np.float32)
        for _ in range(20):
            (y,) = good.infer("sine", [x])
            assert close_enough(y, litert_outputs(SINE, [x])[0])


def test_100mib_message_is_refused_without_growing(daemon, ctx):
    with Client(daemon.endpoint, timeout=10) as client:
        client.ping()
        rss_before = daemon.rss()
        big = np.zeros(100 * 1024 * 1024 // 4, np.float32)
        # The library refuses before sending (the daemon's limit is learnt from ping)...
        with pytest.raises(RequestError) as err:
            client.infer("kws", [big])
        assert err.value.kind == "too_large" and "1048576" in str(err.value)
        # ... and a raw peer that sends it anyway is cut off by zmq before the frame is buffered.
        sock = raw(ctx, daemon)
        sock.send_multipart([b"", json.dumps(kws_header(inputs=[{"dtype": "float32", "shape": [big.size]}])).encode(),
                             big], copy=False)
        assert not sock.poll(1500), "no reply: the connection is dropped"
        sock.close(linger=0)
        assert client.ping()["status"] == "serving"
        assert daemon.rss() - rss_before < 16 * 1024 * 1024
        x = np.array([[0.5]], np.float32)
        assert close_enough(client.infer("sine", [x])[0], litert_outputs(SINE, [x])[0])
        rejected = client.stats()["rejected"]
        assert rejected.get("unknown_model", 0) >= 1 and rejected.get("bad_json", 0) >= 1
