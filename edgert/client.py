"""The client library for the edgert daemon: `Client(endpoint).infer(model, inputs) -> outputs`.

Threads: one Client may be shared by several threads. Each thread gets its own DEALER socket
(zmq sockets are not thread-safe; a per-thread socket avoids a lock that would serialise
requests), all from one zmq.Context. Call close() once, from any thread, when done.

Reliability ("lazy pirate"): each request waits `timeout` seconds for its reply; on silence the
socket is closed (its queued messages dropped) and the request is resent on a fresh socket, up to
`retries` more times, then Unavailable is raised. Replies carry the request id; a reply with another
id (a late answer to an abandoned attempt) is discarded. Retrying re-runs the request, which is
harmless for stateless models but advances a stateful (streaming) model twice: pass retries=0 there.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zmq
import zmq.auth

from edgert.errors import EdgeRTError, RequestError
from edgert.serve import protocol

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_ASK_LIMIT_ABOVE = 1 << 20  # the daemon's max message is at least this (config enforces it)
# Requests up to this size are copied into zmq's buffers: a zero-copy send hands the frame's
# release to pyzmq's garbage-collector thread, which measured ~70 us per 64 KiB request against
# ~5 us for the copy. Larger requests are sent without a copy.
_COPY_UP_TO = 512 << 10


class ServerError(EdgeRTError):
    """The daemon answered but did not run the request; `kind` says why."""

    def __init__(self, message: str, *, kind: str):
        super().__init__(message)
        self.kind = kind


class Busy(ServerError):
    """The daemon's request queue was full; try again later."""


class DeadlineExceeded(ServerError):
    """The request's deadline passed before the daemon could start it."""


class Unavailable(ServerError, TimeoutError):
    """No reply after every retry (daemon down, unreachable, key refused), or it is shutting down."""


def _raise_for(reply: protocol.Reply) -> None:
    message = reply.error_message or reply.status
    kind = reply.error_kind or reply.status
    if reply.status == protocol.STATUS_BUSY:
        raise Busy(message, kind=kind)
    if reply.status == protocol.STATUS_TIMEOUT:
        raise DeadlineExceeded(message, kind=kind)
    if reply.status == protocol.STATUS_UNAVAILABLE:
        raise Unavailable(message, kind=kind)
    if kind in ("unknown_model", "bad_input_count", "bad_input_name", "bad_shape", "bad_dtype",
                "bad_length", "too_large", "bad_header", "bad_json", "unsupported_version", "unknown_type"):
        raise RequestError(message, kind=kind)
    raise ServerError(message, kind=kind)


class Client:
    """Talks to one edgert daemon.

    endpoint: e.g. "tcp://127.0.0.1:5555" or "ipc:///run/edgert/edgert.sock".
    timeout: seconds to wait for each reply attempt; retries: fresh-socket resends after silence.
    deadline: default seconds the daemon may keep an infer request queued (None: its own default).
    curve_server_key / curve_client_key: key files from zmq.auth.create_certificates (the server's
    public file, this client's secret file) when the daemon requires CURVE.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 10.0, retries: int = 2,
                 deadline: float | None = None, curve_server_key: str | Path | None = None,
                 curve_client_key: str | Path | None = None, context: zmq.Context | None = None):
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self.deadline = deadline
        self._curve: tuple[bytes, bytes, bytes] | None = None
        if curve_server_key is not None or curve_client_key is not None:
            if curve_server_key is None or curve_client_key is None:
                raise ValueError("CURVE needs both curve_server_key and curve_client_key")
            server_public, _ = zmq.auth.load_certificate(str(curve_server_key))
            public, secret = zmq.auth.load_certificate(str(curve_client_key))
            if secret is None:
                raise ValueError(f"{curve_client_key} holds no secret key")
            self._curve = (server_public, public, secret)
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._local = threading.local()
        self._sockets: weakref.WeakSet = weakref.WeakSet()
        self._sockets_lock = threading.Lock()
        self._prefix = f"{os.getpid():x}-{uuid.uuid4().hex[:8]}-"
        self._counter = itertools.count()
        self._max_message: int | None = None
        self._closed = False

    # -- sockets -----------------------------------------------------------------------------
    def _socket(self) -> zmq.Socket:
        if self._closed:
            raise RuntimeError("client is closed")
        sock = getattr(self._local, "socket", None)
        if sock is None or sock.closed:
            sock = self._context.socket(zmq.DEALER)
            sock.linger = 0
            if self._curve is not None:
                sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self._curve
            sock.connect(self.endpoint)
            self._local.socket = sock
            with self._sockets_lock:
                self._sockets.add(sock)
        return sock

    def _drop_socket(self) -> None:
        sock = getattr(self._local, "socket", None)
        if sock is not None:
            sock.close(linger=0)
            self._local.socket = None

    def close(self) -> None:
        """Close every thread's socket (and the context, when the client made it)."""
        self._closed = True
        with self._sockets_lock:
            socks = list(self._sockets)
        for sock in socks:
            try:
                sock.close(linger=0)
            except zmq.ZMQError:
                pass
        if self._own_context:
            self._context.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------
    def _next_id(self) -> str:
        return self._prefix + str(next(self._counter))

    def request(self, frames_for_id, *, timeout: float | None = None, retries: int | None = None) -> protocol.Reply:
        """Send a request built by frames_for_id(request_id) and return the matching reply (any status)."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        rid = self._next_id()
        frames = frames_for_id(rid)
        copy = sum(memoryview(f).nbytes for f in frames) <= _COPY_UP_TO
        for attempt in range(retries + 1):
            sock = self._socket()
            # The empty delimiter makes the envelope the same as a REQ socket's.
            sock.send_multipart([b"", *frames], copy=copy)
            end = time.monotonic() + timeout
            while (left := end - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                    break
                parts = sock.recv_multipart(copy=False)
                body = parts[1:] if parts and len(parts[0]) == 0 else parts
                reply = protocol.decode_reply(body)
                if reply.id == rid:
                    return reply
                # else: a late reply to an earlier, abandoned request on this socket
            self._drop_socket()
        raise Unavailable(f"no reply from {self.endpoint} after {retries + 1} attempt(s) of {timeout:g}s",
                          kind="no_reply")

    def _control(self, rtype: str, **kw: Any) -> Any:
        reply = self.request(lambda rid: protocol.encode_request(rid, rtype), **kw)
        if reply.status != protocol.STATUS_OK:
            _raise_for(reply)
        return reply.result

    def infer(self, model: str, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray] | np.ndarray, *,
              deadline: float | None = None, timeout: float | None = None,
              retries: int | None = None) -> list[np.ndarray]:
        """Run `model` on inputs (list in input order, dict by input name, or one array) and
        return its outputs in output order. Raises RequestError (bad input), Busy,
        DeadlineExceeded, Unavailable, ServerError."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        elif not isinstance(inputs, Mapping):
            inputs = list(inputs)
        deadline = self.deadline if deadline is None else deadline
        deadline_ms = None if deadline is None else deadline * 1000.0
        values = inputs.values() if isinstance(inputs, Mapping) else inputs
        size = sum(np.asarray(v).nbytes for v in values)
        if size > _ASK_LIMIT_ABOVE:
            # Frames over the daemon's limit make zmq drop the connection without a reply, so
            # check here rather than time out.
            limit = self.max_message_bytes()
            if size > limit:
                raise RequestError(f"inputs have {size} bytes, the daemon accepts at most {limit}",
                                   kind="too_large")
        reply = self.request(lambda rid: protocol.encode_request(
            rid, "infer", model=model, inputs=inputs if isinstance(inputs, Mapping) else list(inputs),
            deadline_ms=deadline_ms), timeout=timeout, retries=retries)
        if reply.status != protocol.STATUS_OK:
            _raise_for(reply)
        return [np.array(a) for a in reply.arrays]  # own the bytes: the frame is gone after this

    def max_message_bytes(self) -> int:
        if self._max_message is None:
            self._max_message = int(self.ping()["max_message_bytes"])
        return self._max_message

    def ping(self, **kw: Any) -> dict:
        """Health: {"status", "version", "models", "uptime_s", "max_message_bytes", ...}."""
        return self._control("ping", **kw)

    def models(self, **kw: Any) -> dict:
        """{model: {"inputs": [{name, dtype, shape, quantization}], "outputs": [...]}}."""
        return self._control("models", **kw)

    def stats(self, **kw: Any) -> dict:
        """Per-model requests, errors by kind, latency p50/p90/p99 (ms), queue depth."""
        return self._control("stats", **kw)

    def memory(self, **kw: Any) -> dict:
        """Process RSS (private / file-backed), arena, budget, per-model plan figures, kernel count."""
        return self._control("memory", **kw)

    def reload(self, *, timeout: float = 600.0, **kw: Any) -> dict:
        """Ask the daemon to re-read its config and reload models (as SIGHUP does); waits for it."""
        return self._control("reload", timeout=timeout, retries=0, **kw)


def format_status(status: dict) -> str:
    """`edgert status` as text: {"ping", "stats", "memory"} replies -> a health line and two tables."""
    from edgert.serve.memory import format_bytes

    ping, stats, mem = status["ping"], status["stats"], status["memory"]
    proc = mem["process"]
    lines = [f"edgert {ping['version']} pid {ping['pid']}: {ping['status']}, up {ping['uptime_s']:.0f}s, "
             f"queue {stats['queue_depth']}/{stats['queue_size']}",
             f"memory: RSS {format_bytes(proc['rss'])} (private {format_bytes(proc['private'])}, file-backed "
             f"{format_bytes(proc['file_backed'])}), arena {format_bytes(mem['arena_bytes'])} of budget "
             f"{format_bytes(mem['budget'])}, {mem['kernel_count']} compiled kernels", "",
             f"{'model':20} {'requests':>9} {'ok':>9} {'errors':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  "
             f"{'arena':>10} {'lower bound':>12}"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for name, s in stats["models"].items():
        m = mem["models"].get(name, {})
        lat = s["latency_ms"]
        lines.append(f"{name:20} {s['requests']:>9} {s['ok']:>9} {sum(s['errors'].values()):>7} {fmt(lat['p50']):>8} "
                     f"{fmt(lat['p90']):>8} {fmt(lat['p99']):>8}  {format_bytes(m.get('arena_bytes')):>10} "
                     f"{format_bytes(m.get('lower_bound_bytes')):>12}")
        if s["errors"]:
            lines.append(f"{'':20} errors: " + ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())))
    if stats["rejected"]:
        lines.append("rejected before reaching a model: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(stats["rejected"].items())))
    return "\n".join(lines)
