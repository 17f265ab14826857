"""The daemon: a ZeroMQ ROUTER in front of one Executor, with a bounded queue between them.

Threads: the main thread is the I/O loop — it owns the ROUTER socket, decodes and validates every
request against the current models' specs, answers control requests and malformed ones itself,
and forwards replies. One compute thread takes jobs from a bounded queue; its replies travel back
over an inproc PAIR socket because zmq sockets must stay on one thread. The Executor is not
thread-safe: a lock makes its runs one at a time. A short job (its model's last run took at most
`server.inline_max`) that finds the queue empty and the compute thread idle runs on the I/O thread
itself — the two thread hand-offs cost more than such a run. Reloads build a whole new Executor
on a loader thread; the switch is a marker in the job queue, so requests validated against the
old models still run on them.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zmq
import zmq.auth

from edgert import __version__
from edgert.config import Config, load_config
from edgert.errors import BudgetExceeded, EdgeRTError, RequestError
from edgert.serve import protocol
from edgert.serve.memory import MemoryReport, ProcessMemory, format_bytes, model_memory
from edgert.serve.systemd import Notifier

log = logging.getLogger("edgert.serve")

LATENCY_SAMPLES = 4096  # per model; a ring, so stats cost no memory growth under load
COMPUTE_STACK_BYTES = 16 * 2**20  # virtual: only the pages a kernel touches become resident
STALL_LIMIT_S = 60.0  # a compute thread silent this long stops the systemd watchdog pings
STATUS_EVERY_S = 5.0
ARRIVAL_QUIET_S = 0.1  # after a drain, exit once no request has arrived for this long


# -- the loaded models -----------------------------------------------------------------------------

@dataclass
class ModelSet:
    """One loaded generation of models: the executor and the facts the I/O thread needs about it."""

    config: Config
    executor: Any
    inputs: dict[str, list]  # model -> [TensorSpec]
    output_names: dict[str, list[str]]
    description: dict[str, dict]  # the `models` reply
    kernel_count: int
    load_seconds: float

    def memory_figures(self) -> dict:
        ex = self.executor
        models = tuple(model_memory(name, ex.plans.get(name), _file_bytes(self.config, name))
                       for name in ex.models)
        return {"arena_bytes": int(ex.arena_bytes), "activation_bytes": int(ex.activation_bytes),
                "persistent_bytes": int(ex.persistent_bytes), "budget": ex.budget, "models": models}


def _file_bytes(config: Config, name: str) -> int | None:
    for m in config.models:
        if m.name == name:
            try:
                return m.path.stat().st_size
            except OSError:
                return None
    return None


def load_models(config: Config, progress: Callable[[str], None] | None = None) -> ModelSet:
    """Build the Executor for a config: load, plan (BudgetExceeded if it does not fit), compile, warm up."""
    from edgert.runtime.executor import Executor  # late: importing numba honours NUMBA_CACHE_DIR set by the CLI

    kwargs: dict[str, Any] = {}
    if config.aliasing:
        from edgert.plan import Aliasing

        kwargs["aliasing"] = Aliasing(**config.aliasing)
    plans = {m.name: m.plan for m in config.models if m.plan is not None}
    start = time.monotonic()
    executor = Executor({m.name: m.path for m in config.models}, budget=config.budget, threads=config.threads,
                        strategy=config.strategy, order=config.order, plans=plans or None, progress=progress,
                        **kwargs)
    inputs = {name: list(executor.input_specs(name)) for name in executor.models}
    outputs = {name: list(executor.output_specs(name)) for name in executor.models}
    for name, specs in inputs.items():
        need = sum(int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize for s in specs)
        if need > config.max_message_bytes:
            raise RequestError(f"model {name!r} takes {need} bytes of input but server.max_message is "
                               f"{config.max_message_bytes}; raise it", kind="config")
    description = {name: {"inputs": [s.to_json() for s in inputs[name]],
                          "outputs": [s.to_json() for s in outputs[name]]} for name in executor.models}
    return ModelSet(config=config, executor=executor, inputs=inputs,
                    output_names={n: [s.name for s in o] for n, o in outputs.items()}, description=description,
                    kernel_count=int(executor.kernel_count()), load_seconds=time.monotonic() - start)


# -- statistics ------------------------------------------------------------------------------------

class _ModelStats:
    __slots__ = ("requests", "ok", "inline", "errors", "latency", "run", "n")

    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.inline = 0
        self.errors: dict[str, int] = {}
        self.latency = np.zeros(LATENCY_SAMPLES)
        self.run = np.zeros(LATENCY_SAMPLES)
        self.n = 0


def _percentiles(samples: np.ndarray) -> dict:
    if samples.size == 0:
        return {"p50": None, "p90": None, "p99": None}
    p = np.percentile(samples, [50, 90, 99])
    return {"p50": round(float(p[0]), 4), "p90": round(float(p[1]), 4), "p99": round(float(p[2]), 4)}


class Stats:
    """Counters shared by the I/O and compute threads (one lock; each update is a few field writes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _ModelStats] = {}
        self._rejected: dict[str, int] = {}  # errors not attributable to a configured model

    def _get(self, model: str) -> _ModelStats:
        s = self._models.get(model)
        if s is None:
            s = self._models[model] = _ModelStats()
        return s

    def ok(self, model: str, latency_ms: float, run_ms: float, inline: bool) -> None:
        with self._lock:
            s = self._get(model)
            s.requests += 1
            s.ok += 1
            s.inline += inline
            i = s.n % LATENCY_SAMPLES
            s.latency[i] = latency_ms
            s.run[i] = run_ms
            s.n += 1

    def error(self, model: str | None, kind: str) -> None:
        with self._lock:
            if model is None:
                self._rejected[kind] = self._rejected.get(kind, 0) + 1
            else:
                s = self._get(model)
                s.requests += 1
                s.errors[kind] = s.errors.get(kind, 0) + 1

    def snapshot(self, models: list[str]) -> dict:
        with self._lock:
            out = {}
            for name in models:
                s = self._get(name)
                k = min(s.n, LATENCY_SAMPLES)
                out[name] = {"requests": s.requests, "ok": s.ok, "inline": s.inline, "errors": dict(s.errors),
                             "latency_ms": _percentiles(s.latency[:k]), "run_ms": _percentiles(s.run[:k]),
                             "latency_samples": k}
            return {"models": out, "rejected": dict(self._rejected)}


# -- jobs between the threads ----------------------------------------------------------------------

@dataclass
class _Job:
    envelope: list
    rid: str | int
    model: str
    arrays: list
    received: float  # monotonic seconds
    deadline: float


@dataclass
class _Swap:
    models: ModelSet


_STOP = object()


class _Compute(threading.Thread):
    """Runs queued jobs in order and sends their reply frames to the I/O thread."""

    def __init__(self, context: zmq.Context, address: str, jobs: queue.Queue, models: ModelSet, stats: Stats,
                 lock: threading.Lock, run_ms: dict[str, float]):
        super().__init__(name="edgert-compute", daemon=True)
        self.jobs = jobs
        self.models = models
        self.stats = stats
        self.lock = lock  # held while any executor runs: the I/O thread runs small jobs inline
        self.run_ms = run_ms
        self.heartbeat = time.monotonic()
        self._sock = context.socket(zmq.PAIR)
        self._sock.sndhwm = 0  # the job queue already bounds how much can be in flight
        self._sock.connect(address)

    def run(self) -> None:
        self.models.executor.claim_thread()
        try:
            while True:
                try:
                    job = self.jobs.get(timeout=0.25)
                except queue.Empty:
                    self.heartbeat = time.monotonic()
                    continue
                self.heartbeat = time.monotonic()
                if job is _STOP:
                    break
                if isinstance(job, _Swap):
                    with self.lock:
                        old, self.models = self.models, job.models
                        del old  # the old executor's arena is freed once the I/O thread drops it too
                        self.models.executor.claim_thread()
                    continue
                self._run(job)
        finally:
            self._sock.send_multipart([b"stopped"])
            self._sock.close(linger=-1)

    def _run(self, job: _Job) -> None:
        with self.lock:
            frames = execute(self.models, job, self.stats, self.run_ms, inline=False)
            # copy=True: outputs are arena views, so zmq must own a copy before the lock is released.
            self._sock.send_multipart(frames, copy=True)


def execute(models: ModelSet, job: _Job, stats: Stats, run_ms: dict[str, float], *, inline: bool) -> list:
    """Run one validated job on `models`; the reply frames (envelope first). Caller holds the executor lock.

    Outputs are arena views the next run overwrites, so the caller must send the frames with
    copy=True before it releases the lock. run_ms[model] is set to this run's time (the inline
    decision reads it).
    """
    start = time.monotonic()
    if start > job.deadline:
        stats.error(job.model, "timeout")
        late = (start - job.deadline) * 1000
        return job.envelope + protocol.error_reply(job.rid, RequestError(
            f"deadline passed {late:.1f} ms before the request could start", kind="timeout"))
    try:
        outs = models.executor.run(job.model, job.arrays, copy=False)
    except RequestError as exc:
        stats.error(job.model, exc.kind)
        return job.envelope + protocol.error_reply(job.rid, exc)
    except Exception as exc:  # a kernel bug must not kill the daemon: report it, keep serving
        log.exception("model %s failed on request %s", job.model, job.rid)
        stats.error(job.model, "internal")
        return job.envelope + protocol.error_reply(
            job.rid, RequestError(f"internal error: {type(exc).__name__}: {exc}", kind="internal"))
    end = time.monotonic()
    run_ms[job.model] = (end - start) * 1000
    frames = protocol.encode_reply(job.rid, outputs=list(zip(models.output_names[job.model], outs)),
                                   timing_us={"queue": int((start - job.received) * 1e6),
                                              "run": int((end - start) * 1e6)})
    stats.ok(job.model, (end - job.received) * 1000, (end - start) * 1000, inline)
    return job.envelope + frames


# -- the server ------------------------------------------------------------------------------------

@dataclass
class _Reload:
    requesters: list = field(default_factory=list)  # (envelope, rid) waiting for the result
    result: Any = None  # ModelSet or an exception
    done: bool = False


class Server:
    """`Server(config, config_path).run() -> exit code`. Loads models before binding is served."""

    def __init__(self, config: Config, *, config_path: Path | str | None = None,
                 notifier: Notifier | None = None):
        self.config = config
        self.config_path = None if config_path is None else Path(config_path)
        self.notifier = notifier or Notifier.from_env()
        self.stats = Stats()
        self.started = time.monotonic()
        self._context: zmq.Context | None = None
        self._router: zmq.Socket | None = None
        self._pair: zmq.Socket | None = None
        self._auth = None
        self._jobs: queue.Queue = queue.Queue()
        self._models: ModelSet | None = None
        self._compute: _Compute | None = None
        self._exec_lock = threading.Lock()  # one executor run at a time, on either thread
        self._run_ms: dict[str, float] = {}  # model -> its last run's time (either thread writes)
        self._claimed: ModelSet | None = None  # the models whose `threads` setting this thread took
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._term = False
        self._hup = False
        self._reload: _Reload | None = None
        self._draining_since: float | None = None
        self._inflight = 0
        self._rss_warned = False

    # -- start-up ----------------------------------------------------------------------------
    def _progress(self, text: str) -> None:
        log.info("%s", text)
        self.notifier.status(text)

    def _bind(self) -> None:
        cfg = self.config
        self._context = zmq.Context()
        router = self._context.socket(zmq.ROUTER)
        router.linger = 1000
        # zmq drops the connection of a peer whose frame exceeds this, before allocating it.
        router.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_bytes)
        if cfg.curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            public, secret = zmq.auth.load_certificate(str(cfg.curve.secret_key))
            if secret is None:
                raise EdgeRTError(f"{cfg.curve.secret_key}: holds no secret key (security.curve_secret_key)")
            self._auth = ThreadAuthenticator(self._context, log=logging.getLogger("edgert.auth"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(cfg.curve.authorized_keys))
            router.curve_secretkey = secret
            router.curve_publickey = public
            router.curve_server = True
        for warning in cfg.exposure_warnings():
            log.warning("%s", warning)
        for ep in cfg.endpoints:
            try:
                router.bind(ep)
            except zmq.ZMQError as exc:
                router.close(linger=0)
                raise EdgeRTError(f"cannot bind {ep}: {exc}") from None
        self._router = router
        self._pair = self._context.socket(zmq.PAIR)
        self._pair.rcvhwm = 0
        self._pair.bind("inproc://edgert-replies")

    def start(self) -> None:
        """Bind (fail fast on a taken port), load + warm up the models, start the compute thread."""
        self._bind()
        self._progress(f"loading {len(self.config.models)} model(s): {', '.join(self.config.model_names)}")
        self._models = load_models(self.config, progress=self._progress)
        figures = self._models.memory_figures()
        rss = ProcessMemory.of()
        log.info("ready in %.1fs: arena %s (activations %s, persistent %s), budget %s, RSS %s, %d kernels",
                 self._models.load_seconds, format_bytes(figures["arena_bytes"]),
                 format_bytes(figures["activation_bytes"]), format_bytes(figures["persistent_bytes"]),
                 format_bytes(figures["budget"]), format_bytes(rss.rss), self._models.kernel_count)
        if self.config.rss_limit is not None and rss.rss > self.config.rss_limit:
            raise EdgeRTError(f"RSS after warm-up is {rss.rss} bytes ({format_bytes(rss.rss)}), over "
                              f"runtime.rss_limit {self.config.rss_limit} ({format_bytes(self.config.rss_limit)})")
        self._compute = _Compute(self._context, "inproc://edgert-replies", self._jobs, self._models, self.stats,
                                 self._exec_lock, self._run_ms)
        # The vector kernels keep their blocks on the calling thread's stack (by qdot.py's buffer
        # limits up to about 0.6 MiB in one call); a thread's default stack is the C library's
        # (8 MiB on glibc, 128 KiB on musl), so the compute thread asks for its own size.
        previous = threading.stack_size(COMPUTE_STACK_BYTES)
        try:
            self._compute.start()
        finally:
            threading.stack_size(previous)
        for sig, handler in ((signal.SIGTERM, self._on_term), (signal.SIGINT, self._on_term),
                             (signal.SIGHUP, self._on_hup)):
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self.notifier.ready(self._status_line())
        log.info("serving on %s", ", ".join(self.config.endpoints))

    def _on_term(self, signum: int, frame: Any) -> None:
        self._term = True

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._hup = True

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # already has wake-ups pending

    def _status_line(self) -> str:
        assert self._models is not None
        rss = ProcessMemory.of().rss
        budget = self._models.executor.budget
        total = sum(s["requests"] for s in self.stats.snapshot(list(self._models.executor.models))["models"].values())
        return (f"serving {', '.join(self._models.executor.models)}; RSS {format_bytes(rss)}, arena "
                f"{format_bytes(self._models.executor.arena_bytes)} of budget {format_bytes(budget)}; "
                f"{total} requests")

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit code."""
        if self._compute is None:
            self.start()
        router, pair = self._router, self._pair
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pair, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        wd_interval = self.notifier.watchdog_interval
        last_wd = last_status = 0.0
        stopped = False
        try:
            while True:
                now = time.monotonic()
                timeout = 0.5 if wd_interval is None else min(0.5, wd_interval / 2)
                events = dict(poller.poll(int(timeout * 1000)))
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                if pair in events:
                    stopped = self._forward_replies() or stopped
                if router in events:
                    self._serve_requests()
                if self._term and self._draining_since is None:
                    self._start_drain()
                if self._hup:
                    self._hup = False
                    self._start_reload(None)
                if self._reload is not None and self._reload.done:
                    self._finish_reload()
                now = time.monotonic()
                if wd_interval is not None and now - last_wd >= wd_interval and self._healthy(now):
                    self.notifier.watchdog()
                    last_wd = now
                if self.notifier.enabled and now - last_status >= STATUS_EVERY_S and self._draining_since is None:
                    self.notifier.status(self._status_line())
                    last_status = now
                self._check_rss()
                if self._draining_since is not None:
                    if stopped:
                        self._refuse_arrivals(self._draining_since + self.config.drain_timeout)
                        log.info("drained; exiting")
                        return 0
                    if now - self._draining_since > self.config.drain_timeout:
                        log.warning("drain timeout (%.1fs) passed with %d request(s) unanswered; exiting",
                                    self.config.drain_timeout, self._inflight)
                        return 0
        finally:
            self._shutdown()

    def _refuse_arrivals(self, until: float) -> None:
        """Answer requests still arriving after the drain (`shutting_down`) until the socket has been
        quiet for ARRIVAL_QUIET_S, or `until`: a client whose request was in transit at SIGTERM gets a
        definite answer instead of waiting out its timeout."""
        while time.monotonic() < until:
            if not self._router.poll(int(ARRIVAL_QUIET_S * 1000), zmq.POLLIN):
                return
            self._serve_requests()

    def _healthy(self, now: float) -> bool:
        c = self._compute
        return c is not None and c.is_alive() and now - c.heartbeat < STALL_LIMIT_S

    def _check_rss(self) -> None:
        limit = self.config.rss_limit
        if limit is None or self._rss_warned:
            return
        rss = ProcessMemory.of().rss
        if rss > limit:
            self._rss_warned = True
            log.warning("RSS %d bytes is over runtime.rss_limit %d", rss, limit)

    def _forward_replies(self) -> bool:
        """Move every ready reply from the compute thread to the ROUTER. True when it has stopped."""
        stopped = False
        while True:
            try:
                frames = self._pair.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return stopped
            if len(frames) == 1 and frames[0].bytes == b"stopped":
                stopped = True
                continue
            self._inflight -= 1
            self._router.send_multipart(frames, copy=False)

    def _reply(self, envelope: list, frames: list) -> None:
        self._router.send_multipart(envelope + frames, copy=False)

    def _reject(self, envelope: list, rid: Any, exc: RequestError, model: str | None) -> None:
        known = self._models is not None and model in self._models.inputs
        self.stats.error(model if known else None, exc.kind)
        self._reply(envelope, protocol.error_reply(rid, exc))

    def _serve_requests(self) -> None:
        # Bounded batch per wake-up so replies and signals are not starved by a flood.
        for _ in range(256):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frames, time.monotonic())

    def _handle(self, frames: list, received: float) -> None:
        envelope, body = protocol.split_envelope(frames)
        try:
            req = protocol.decode_request(body, max_bytes=self.config.max_message_bytes)
        except RequestError as exc:
            self._reject(envelope, protocol.peek_id(body[0]) if body else None, exc, None)
            return
        models = self._models
        if req.type != "infer":
            self._control(envelope, req)
            return
        if self._draining_since is not None:
            self._reject(envelope, req.id, RequestError("the daemon is shutting down", kind="shutting_down"),
                         req.model)
            return
        specs = models.inputs.get(req.model)
        if specs is None:
            self._reject(envelope, req.id, RequestError(
                f"unknown model {req.model!r} (serving: {', '.join(models.inputs)})", kind="unknown_model"), None)
            return
        try:
            arrays = protocol.match_inputs(req, specs)
        except RequestError as exc:
            self._reject(envelope, req.id, exc, req.model)
            return
        if self._jobs.qsize() >= self.config.queue_size:
            self._reject(envelope, req.id, RequestError(
                f"queue full ({self.config.queue_size} requests waiting)", kind="busy"), req.model)
            return
        wait = self.config.request_timeout if req.deadline_ms is None else req.deadline_ms / 1000.0
        # The arrays are views on the received frames; the job keeps them alive until the run.
        job = _Job(envelope, req.id, req.model, arrays, received, received + wait)
        if self._run_inline(models, job):
            return
        self._inflight += 1
        self._jobs.put(job)

    def _run_inline(self, models: ModelSet, job: _Job) -> bool:
        """Run a short job here when nothing is queued and the compute thread is idle: no thread
        hand-off, the reply goes straight out. False (the job is untouched) when it must queue."""
        limit = self.config.inline_max * 1000
        if limit <= 0 or self._run_ms.get(job.model, 0.0) > limit or self._jobs.qsize():
            return False
        if not self._exec_lock.acquire(blocking=False):
            return False
        try:
            if self._claimed is not models:  # numba's thread count is per thread
                models.executor.claim_thread()
                self._claimed = models
            frames = execute(models, job, self.stats, self._run_ms, inline=True)
            self._router.send_multipart(frames, copy=True)
        finally:
            self._exec_lock.release()
        return True

    # -- control requests --------------------------------------------------------------------
    def _control(self, envelope: list, req: protocol.Request) -> None:
        models = self._models
        if req.type == "ping":
            result = {"status": "draining" if self._draining_since is not None else "serving",
                      "version": __version__, "protocol": protocol.PROTOCOL_VERSION, "pid": os.getpid(),
                      "models": list(models.executor.models), "uptime_s": round(time.monotonic() - self.started, 3),
                      "max_message_bytes": self.config.max_message_bytes,
                      "reloading": self._reload is not None}
        elif req.type == "models":
            result = models.description
        elif req.type == "stats":
            result = self.stats.snapshot(list(models.executor.models))
            result.update(queue_depth=self._jobs.qsize(), queue_size=self.config.queue_size,
                          inflight=self._inflight, uptime_s=round(time.monotonic() - self.started, 3))
        elif req.type == "memory":
            result = self.memory_report().to_json()
        elif req.type == "reload":
            self._start_reload((envelope, req.id))
            return
        else:  # pragma: no cover - decode_request admits only the types above
            raise AssertionError(req.type)
        self._reply(envelope, protocol.encode_reply(req.id, result=result))

    def memory_report(self) -> MemoryReport:
        figures = self._models.memory_figures()
        return MemoryReport(process=ProcessMemory.of(), rss_limit=self.config.rss_limit,
                            kernel_count=self._models.kernel_count, **figures)

    # -- reload ------------------------------------------------------------------------------
    def _start_reload(self, requester: tuple | None) -> None:
        if self._draining_since is not None:
            if requester is not None:
                self._reply(requester[0], protocol.error_reply(requester[1], RequestError(
                    "the daemon is shutting down", kind="shutting_down")))
            return
        if self._reload is not None:  # one at a time; later callers get the same result
            if requester is not None:
                self._reload.requesters.append(requester)
            return
        self._reload = state = _Reload(requesters=[requester] if requester else [])
        log.info("reloading %s", self.config_path or "the built-in default config")
        self.notifier.reloading()

        def work() -> None:
            try:
                cfg = load_config(self.config_path) if self.config_path else self.config
                fixed = [k for k in ("endpoints", "curve", "max_message_bytes")
                         if getattr(cfg, k) != getattr(self.config, k)]
                if fixed:
                    log.warning("reload: %s changed; that takes a restart (kept the running values)",
                                ", ".join(fixed))
                    cfg = _replace(cfg, **{k: getattr(self.config, k) for k in fixed})
                state.result = load_models(cfg, progress=self._progress)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old models serving
                state.result = exc
            state.done = True
            self._wake()

        threading.Thread(target=work, name="edgert-reload", daemon=True).start()

    def _finish_reload(self) -> None:
        state, self._reload = self._reload, None
        if isinstance(state.result, ModelSet):
            new = state.result
            self.config = new.config
            logging.getLogger("edgert").setLevel(new.config.log_level.upper())
            self._models = new
            self._jobs.put(_Swap(new))  # after every job validated against the old models
            log.info("reloaded: serving %s", ", ".join(new.executor.models))
            reply = {"status": "reloaded", "models": list(new.executor.models),
                     "load_seconds": round(new.load_seconds, 3)}
            frames = lambda rid: protocol.encode_reply(rid, result=reply)  # noqa: E731
        else:
            exc = state.result
            log.error("reload failed, still serving the previous models: %s", exc)
            kind = "reload_failed"
            frames = lambda rid: protocol.error_reply(rid, RequestError(  # noqa: E731
                f"reload failed, previous models still serving: {exc}", kind=kind))
        self.notifier.ready(self._status_line())
        for envelope, rid in state.requesters:
            self._reply(envelope, frames(rid))

    # -- shutdown ----------------------------------------------------------------------------
    def _start_drain(self) -> None:
        self._draining_since = time.monotonic()
        log.info("stopping: finishing %d queued request(s)", self._inflight)
        self.notifier.stopping()
        self._jobs.put(_STOP)

    def _shutdown(self) -> None:
        signal.set_wakeup_fd(-1)
        if self._router is not None:
            self._router.close(linger=1000)  # let queued replies reach their clients
        if self._pair is not None:
            self._pair.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        compute_done = self._compute is None or not self._compute.is_alive()
        if self._context is not None and compute_done:
            # term() waits for every socket; a compute thread stuck past the drain timeout still
            # holds one, and the process is exiting anyway.
            self._context.term()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _replace(cfg: Config, **changes: Any) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def serve(config: Config, *, config_path: Path | str | None = None) -> int:
    """Start a Server and run it; BudgetExceeded and other start-up errors propagate to the CLI."""
    server = Server(config, config_path=config_path)
    try:
        server.start()
    except BaseException:
        server._shutdown()
        raise
    return server.run()
