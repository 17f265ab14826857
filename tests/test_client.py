"""The client library: lazy-pirate retries, request-id matching, and CURVE authentication."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
import zmq.auth

from edgert.client import Client, Unavailable
from edgert.serve import protocol
from test_serve import SINE, Daemon, close_enough, config_text, free_port, litert_outputs, numba_cache  # noqa: F401


def test_unavailable_after_retries():
    port = free_port()  # nothing listens here
    with Client(f"tcp://127.0.0.1:{port}", timeout=0.2, retries=2) as client:
        start = time.monotonic()
        with pytest.raises(Unavailable, match="3 attempt"):
            client.ping()
        assert time.monotonic() - start >= 0.6


def test_reply_with_another_id_is_discarded_and_retry_uses_a_fresh_socket():
    """A peer (not edgert) that first stays silent, then answers with a stale id before the right one."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    peers: list[bytes] = []

    def serve() -> None:
        first = router.recv_multipart()  # attempt 1: never answered
        peers.append(first[0])
        second = router.recv_multipart()
        peers.append(second[0])
        rid = protocol.decode_request(second[2:]).id
        router.send_multipart([second[0], b"", *protocol.encode_reply("stale-id", result={"n": 0})])
        router.send_multipart([second[0], b"", *protocol.encode_reply(rid, result={"status": "serving"})])

    t = threading.Thread(target=serve)
    t.start()
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=0.5, retries=1, context=ctx) as client:
            assert client.ping() == {"status": "serving"}
    finally:
        t.join(timeout=10)
        router.close(linger=0)
        ctx.term()
    assert len(peers) == 2 and peers[0] != peers[1], "the retry came from a new socket"


def test_retry_reaches_a_daemon_that_starts_late(tmp_path, numba_cache):
    port = free_port()
    d = Daemon(tmp_path, numba_cache, config_text(port, {"sine": SINE}), port=port)
    client = Client(d.endpoint, timeout=2.0, retries=60)
    result: dict = {}
    x = np.array([[0.3]], np.float32)
    t = threading.Thread(target=lambda: result.setdefault("y", client.infer("sine", [x])))
    t.start()  # the request is sent before the daemon exists
    try:
        with d:
            t.join(timeout=150)
            assert close_enough(result["y"][0], litert_outputs(SINE, [x])[0])
    finally:
        client.close()


def test_curve_allows_listed_keys_only(tmp_path, numba_cache):
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(keys, "server")
    good_public, good_secret = zmq.auth.create_certificates(keys, "good")
    _, bad_secret = zmq.auth.create_certificates(keys, "bad")
    (allowed / "good.key").write_bytes(open(good_public, "rb").read())
    port = free_port()
    cfg = config_text(port, {"sine": SINE}, extra=f'[security]\ncurve_secret_key = "{server_secret}"\n'
                                                  f'curve_authorized_keys = "{allowed}"\n')
    with Daemon(tmp_path, numba_cache, cfg, port=port) as d:
        x = np.array([[1.0]], np.float32)
        with Client(d.endpoint, timeout=2.0, retries=75, curve_server_key=server_public,
                    curve_client_key=good_secret) as good:
            assert close_enough(good.infer("sine", [x])[0], litert_outputs(SINE, [x])[0])
        with Client(d.endpoint, timeout=1.0, retries=0, curve_server_key=server_public,
                    curve_client_key=bad_secret) as bad:
            with pytest.raises(Unavailable):
                bad.ping()
        with Client(d.endpoint, timeout=1.0, retries=0) as plain:
            with pytest.raises(Unavailable):
                plain.ping()
