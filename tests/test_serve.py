"""The daemon end to end: real `edgert serve` processes on 127.0.0.1, real sockets, real models.

Also the harness the other test_serve_*.py files import (Daemon, free_port, config_text).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from edgert.client import Client

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SINE = DATA / "sine_float.tflite"
KWS = DATA / "kws_ds_cnn_float.tflite"


# -- harness -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, models: dict[str, Path], *, server: str = "", runtime: str = 'budget = "16MiB"\n',
                extra: str = "") -> str:
    text = f'[server]\nendpoints = ["tcp://127.0.0.1:{port}"]\n{server}\n[runtime]\n{runtime}\n{extra}\n'
    for name, path in models.items():
        text += f'[[models]]\nname = "{name}"\npath = "{path}"\n'
    return text


@pytest.fixture(scope="session")
def numba_cache(tmp_path_factory) -> Path:
    # A fixed name under the session's base dir: the other test_serve_* modules import this fixture
    # (each import is its own fixture definition) and must share one warm cache.
    path = tmp_path_factory.getbasetemp() / "numba-cache"
    path.mkdir(exist_ok=True)
    return path


class Daemon:
    """One `edgert serve` process. Use as a context manager: it is always killed on exit."""

    def __init__(self, tmp_path: Path, numba_cache: Path, config: str | None = None, *, args: tuple = (),
                 env: dict | None = None, port: int | None = None):
        self.dir = tmp_path
        self.port = port
        self.config_path = None
        if config is not None:
            self.config_path = tmp_path / "edgert.toml"
            self.config_path.write_text(config)
        self.args = args
        self.env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache), **(env or {})}
        self.log_path = tmp_path / "daemon.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> "Daemon":
        cmd = [sys.executable, "-m", "edgert.cli", "serve", *self.args]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.dir)
        return self

    def wait_ready(self, timeout: float = 150.0) -> dict:
        end = time.monotonic() + timeout
        with Client(self.endpoint, timeout=0.5, retries=0) as client:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    return client.ping()
                except TimeoutError:
                    continue
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            log = self.log()
            if text in log:
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the daemon log:\n{self.log()}")

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def __enter__(self) -> "Daemon":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()


def run_cli(*args: str, env: dict, cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgert.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def litert_outputs(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def close_enough(got: np.ndarray, ref: np.ndarray) -> bool:
    """The project's float32 tolerance: max abs error <= 1e-4 * max(1, range of |ref|)."""
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return False
    r = np.abs(ref.astype(np.float64))
    tol = 1e-4 * max(1.0, float(r.max() - r.min()) if r.size else 1.0)
    return bool(np.max(np.abs(got.astype(np.float64) - ref)) <= tol)


# -- tests ---------------------------------------------------------------------------------------

def test_out_of_the_box_serve_answers_infer(tmp_path, numba_cache):
    """`edgert serve` with the built-in default config; `edgert infer` equals an in-process `edgert run`."""
    port = free_port()
    with Daemon(tmp_path, numba_cache, args=("--endpoint", f"tcp://127.0.0.1:{port}"), port=port) as d:
        ping = d.wait_ready()
        assert ping["models"] == ["hand_recrop"] and ping["status"] == "serving"
        with Client(d.endpoint) as client:
            spec = client.models()["hand_recrop"]["inputs"][0]
        x = np.random.default_rng(1).random(spec["shape"], dtype=np.float32)
        np.savez(tmp_path / "in.npz", **{spec["name"]: x})
        served = run_cli("infer", "--endpoint", d.endpoint, "--model", "hand_recrop", "--input", "in.npz",
                         "--output", "served.npz", env=d.env, cwd=tmp_path)
        assert served.returncode == 0, served.stderr
        assert "wrote served.npz" in served.stdout
        local = run_cli("run", str(REPO / "edgert" / "data" / "hand_recrop.tflite"), "--input", "in.npz",
                        "--output", "local.npz", env=d.env, cwd=tmp_path)
        assert local.returncode == 0, local.stderr
        with np.load(tmp_path / "served.npz") as a, np.load(tmp_path / "local.npz") as b:
            assert sorted(a.files) == sorted(b.files) and a.files
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k])
            ref = litert_outputs(REPO / "edgert" / "data" / "hand_recrop.tflite", [x])
            assert close_enough(a[a.files[0]], ref[0])

        status = run_cli("status", "--endpoint", d.endpoint, "--json", env=d.env, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["stats"]["models"]["hand_recrop"]["ok"] >= 1
        mem = report["memory"]
        assert mem["process"]["rss"] == mem["process"]["private"] + mem["process"]["file_backed"]
        assert mem["budget"] == 48 * 1024 * 1024 and 0 < mem["arena_bytes"] <= mem["budget"]
        assert mem["models"]["hand_recrop"]["arena_bytes"] > 0 and mem["kernel_count"] > 0
        table = run_cli("status", "--endpoint", d.endpoint, env=d.env, cwd=tmp_path)
        assert "hand_recrop" in table.stdout and "RSS" in table.stdout, table.stderr

        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, numba_cache):
    """A daemon serving sine and kws (float) for the load and error tests of this module."""
    tmp = tmp_path_factory.mktemp("two")
    port = free_port()
    d = Daemon(tmp, numba_cache, config_text(port, {"sine": SINE, "kws": KWS}, server="queue_size = 64\n"),
               port=port)
    with d:
        d.wait_ready()
        yield d


def test_load_8_threads_two_models(two_models):
    """8 threads x 250 requests over two models: every reply matches its own input, none lost, RSS flat."""
    d = two_models
    rng = np.random.default_rng(7)
    threads, per_thread = 8, 250
    n = threads * per_thread
    # Distinct inputs per request, so a reply crossed with another request's cannot pass.
    sine_x = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    kws_x = rng.standard_normal((n, 1, 49, 10, 1)).astype(np.float32)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    refs = {}
    for name, path, xs in (("sine", SINE, sine_x), ("kws", KWS, kws_x)):
        it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        out = []
        for x in xs:
            it.set_tensor(i_in, x)
            it.invoke()
            out.append(it.get_tensor(i_out).copy())
        refs[name] = out

    client = Client(d.endpoint, timeout=30, retries=0)
    failures: list[str] = []
    done = [0] * threads

    def work(t: int, count: int, offset: int) -> None:
        for k in range(count):
            i = (offset + t * count + k) % n
            name, xs = (("sine", sine_x), ("kws", kws_x))[(t + k) % 2]
            try:
                (y,) = client.infer(name, [xs[i]])
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                failures.append(f"{name}[{i}]: {type(exc).__name__}: {exc}")
                continue
            if not close_enough(y, refs[name][i]):
                failures.append(f"{name}[{i}]: wrong reply {y.ravel()[:4]} vs {refs[name][i].ravel()[:4]}")
            done[t] += 1

    def run(count: int, offset: int) -> None:
        ts = [threading.Thread(target=work, args=(t, count, offset)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=300)

    try:
        # One client at a time: short requests run on the I/O thread (server.inline_max, default 2 ms).
        before_inline = client.stats()["models"]["sine"]["inline"]
        for i in range(20):
            (y,) = client.infer("sine", [sine_x[i]])
            assert close_enough(y, refs["sine"][i])
        assert client.stats()["models"]["sine"]["inline"] == before_inline + 20
        # Then 8 clients at once: inline runs and queued runs interleave on one executor.
        run(25, 0)  # warm: sockets, pymalloc pools, latency rings
        before = d.rss()
        done[:] = [0] * threads
        run(per_thread, 0)
        after = d.rss()
        stats = client.stats()
    finally:
        client.close()
    assert not failures, failures[:5]
    assert done == [per_thread] * threads
    assert abs(after - before) <= 2 * 1024 * 1024, f"RSS {before} -> {after}"
    total_ok = sum(stats["models"][m]["ok"] for m in ("sine", "kws"))
    assert total_ok >= n + 25 * threads
    assert stats["models"]["kws"]["latency_ms"]["p50"] is not None and stats["queue_depth"] == 0


def test_tune_reports_smallest_budgets(tmp_path, numba_cache):
    cfg = tmp_path / "tune.toml"
    cfg.write_text(config_text(free_port(), {"sine": SINE, "kws": KWS}, runtime='budget = "1MiB"\n'))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)}
    out = run_cli("tune", "--config", str(cfg), "--json", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    configured = report["configured"]
    assert report["models"] == ["sine", "kws"] and report["fits"] is True
    assert report["budget_free_bytes"] == 1024 * 1024 - configured["arena_bytes"]
    options = report["options"]
    assert {(o["aliasing"], o["order"]) for o in options} >= {("all", "file"), ("none", "file")}
    assert report["smallest"]["arena_bytes"] == min(o["arena_bytes"] for o in options)
    for o in options:  # shared activations: max over models, persistent data adds up
        ms = o["models"].values()
        assert o["arena_bytes"] == sum(m["persistent_bytes"] for m in ms) + max(m["activation_bytes"] for m in ms)
        assert o["lower_bound_bytes"] <= o["arena_bytes"]
    text = run_cli("tune", "--config", str(cfg), env=env, cwd=tmp_path)
    assert "smallest:" in text.stdout and "fits" in text.stdout
