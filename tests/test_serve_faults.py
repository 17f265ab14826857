"""Faults a service meets: SIGTERM under load, SIGHUP with good and broken configs, a budget that
does not fit, and the systemd notification protocol on a real NOTIFY_SOCKET."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import numpy as np
import pytest
import zmq

from edgert.client import Client
from edgert.serve import protocol
from edgert.serve.systemd import Notifier
from test_serve import (KWS, REPO, SINE, Daemon, close_enough, config_text, free_port, litert_outputs,  # noqa: F401
                        numba_cache)

HAND = REPO / "edgert" / "data" / "hand_recrop.tflite"


def test_sigterm_under_load_answers_in_flight_and_exits_0(tmp_path, numba_cache):
    port = free_port()
    # inline_max = 0: every request queues, so SIGTERM finds queued ones even on a machine where
    # hand_recrop runs under the 2 ms default (then the I/O thread would run each one itself).
    # 8 clients x 24 pipelined requests: hand_recrop runs in well under a millisecond now, so the
    # queue only builds up when there is more work in flight than the I/O thread reads meanwhile.
    per_client = 24
    total = 8 * per_client
    cfg = config_text(port, {"hand": HAND}, server=f"queue_size = {total}\ninline_max = 0\n",
                      runtime='budget = "48MiB"\n')
    with Daemon(tmp_path, numba_cache, cfg, port=port) as d:
        d.wait_ready()
        x = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
        ref = litert_outputs(HAND, [x])[0]
        ctx = zmq.Context()
        socks = [ctx.socket(zmq.DEALER) for _ in range(8)]
        try:
            for s in socks:
                s.linger = 0
                s.connect(d.endpoint)
            for k, s in enumerate(socks):
                for i in range(per_client):
                    s.send_multipart([b"", *protocol.encode_request(f"{k}-{i}", model="hand", inputs=[x])])
            poller = zmq.Poller()
            for s in socks:
                poller.register(s, zmq.POLLIN)
            replies: dict = {}

            def collect(timeout_ms: int) -> None:
                for s, _ in poller.poll(timeout_ms):
                    r = protocol.decode_reply(s.recv_multipart()[1:])
                    replies[r.id] = r

            while not replies:
                collect(10_000)
            d.signal(signal.SIGTERM)  # while the queue still holds most of them
            end = time.monotonic() + 30
            while len(replies) < total and time.monotonic() < end:
                collect(500)
            assert d.wait_exit(30) == 0
        finally:
            for s in socks:
                s.close(linger=0)
            ctx.term()
        log = d.log()
        queued = int(re.search(r"stopping: finishing (\d+) queued", log).group(1))
        assert queued > 0, log
        assert len(replies) == total, f"{total - len(replies)} in-flight request(s) lost"
        # Accepted requests are answered with results; ones the daemon read only after SIGTERM
        # are refused with "unavailable" instead of being dropped.
        ok = [r for r in replies.values() if r.status == "ok"]
        refused = [r for r in replies.values() if r.status != "ok"]
        assert all((r.status, r.error_kind) == ("unavailable", "shutting_down") for r in refused)
        assert len(ok) >= queued + 1
        assert all(close_enough(r.arrays[0], ref) for r in ok)
        assert "drained; exiting" in log


def test_sighup_reload_good_and_broken_configs(tmp_path, numba_cache):
    port = free_port()
    good = config_text(port, {"sine": SINE})
    with Daemon(tmp_path, numba_cache, good, port=port) as d, Client(d.endpoint, timeout=20) as client:
        d.wait_ready()
        x = np.array([[0.7]], np.float32)
        sine_ref = litert_outputs(SINE, [x])[0]

        d.config_path.write_text(good + "\n[runtime.surprise]\n")  # broken: unknown key
        d.signal(signal.SIGHUP)
        d.wait_log("reload failed")
        assert "runtime.surprise" in d.log()
        assert client.models().keys() == {"sine"} and close_enough(client.infer("sine", [x])[0], sine_ref)

        too_small = config_text(port, {"sine": SINE, "kws": KWS}, runtime="budget = 1024\n")
        d.config_path.write_text(too_small)
        d.signal(signal.SIGHUP)
        log = d.wait_log("budget is 1,024 bytes")
        assert log.count("reload failed") == 2
        assert client.models().keys() == {"sine"} and close_enough(client.infer("sine", [x])[0], sine_ref)

        d.config_path.write_text(config_text(port, {"sine": SINE, "kws": KWS}))
        d.signal(signal.SIGHUP)
        d.wait_log("reloaded: serving sine, kws")
        assert client.models().keys() == {"sine", "kws"}
        k = np.random.default_rng(2).standard_normal((1, 49, 10, 1)).astype(np.float32)
        assert close_enough(client.infer("kws", [k])[0], litert_outputs(KWS, [k])[0])
        assert close_enough(client.infer("sine", [x])[0], sine_ref)

        # The same through the control request, which waits for the outcome.
        d.config_path.write_text("[[models]]\n")
        with pytest.raises(Exception) as err:
            client.reload()
        assert getattr(err.value, "kind", None) == "reload_failed" and "models[0].name" in str(err.value)
        d.config_path.write_text(config_text(port, {"kws": KWS}))
        assert client.reload()["models"] == ["kws"]
        assert client.models().keys() == {"kws"}


def test_budget_below_plan_exits_2_with_needed_bytes(tmp_path, numba_cache):
    port = free_port()
    with Daemon(tmp_path, numba_cache, config_text(port, {"kws": KWS}, runtime="budget = 4096\n"), port=port) as d:
        assert d.wait_exit(120) == 2
        log = d.log()
    m = re.search(r"needs ([\d,]+) bytes, budget 4,096 bytes", log)
    assert m, log
    assert int(m.group(1).replace(",", "")) > 4096


def test_notify_socket_sees_ready_status_watchdog_stopping(tmp_path, numba_cache):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    messages: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    port = free_port()
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    try:
        with Daemon(tmp_path, numba_cache, config_text(port, {"sine": SINE}), env=env, port=port) as d:
            d.wait_ready()
            end = time.monotonic() + 20
            while sum(m == "WATCHDOG=1" for m in messages) < 3 and time.monotonic() < end:
                time.sleep(0.05)
            d.signal(signal.SIGTERM)
            assert d.wait_exit(30) == 0
            end = time.monotonic() + 5
            while "STOPPING=1" not in messages and time.monotonic() < end:
                time.sleep(0.05)
    finally:
        stop.set()
        listener.join(timeout=5)
        sock.close()
    ready = [i for i, m in enumerate(messages) if m.startswith("READY=1")]
    assert ready, messages
    assert any(m.startswith("STATUS=compiling kernels") or m.startswith("STATUS=loading") for m in messages[:ready[0]])
    assert re.search(r"STATUS=serving sine; RSS [\d.]+ MiB, arena .* of budget 16.0 MiB", messages[ready[0]])
    watchdogs = [i for i, m in enumerate(messages) if m == "WATCHDOG=1"]
    assert len(watchdogs) >= 3 and watchdogs[0] > ready[0]
    assert messages.index("STOPPING=1") > ready[0]


def test_notifier_abstract_namespace_and_disabled():
    name = f"edgert-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_interval == 1.0
        assert n.ready("up") and sock.recv(100) == b"READY=1\nSTATUS=up"
        assert n.status("a\nb") and sock.recv(100) == b"STATUS=a b"
    off = Notifier.from_env({})
    assert not off.enabled and off.watchdog_interval is None and off.ready() is False
    other_pid = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval is None  # the watchdog is for another process
