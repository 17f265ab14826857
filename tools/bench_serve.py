"""Benchmark the daemon: round-trip overhead over an in-process run, throughput, RSS against LiteRT.

    /work/venv/bin/python tools/bench_serve.py [--json out.json] [--seconds 3]

Starts a real `edgert serve` on 127.0.0.1 with three models — sine (4-byte input, a real model),
relu64k (a one-op RELU model built here with a 64 KiB input and output) and the bundled
hand_recrop (768 KiB input, ~8 ms of compute) — and measures:
  * p50/p90 of Executor.run in this process vs Client.infer through the daemon; the difference is
    what serving adds (serialisation, two socket hops, the queue, thread hand-off);
  * requests/s with 1 and 8 client threads (one socket per thread);
  * the daemon's RSS (private and file-backed) after warm-up and after the load, against a Python
    process that serves the same models with LiteRT (Interpreter per model + pyzmq imported).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SINE = REPO / "tests" / "data" / "sine_float.tflite"
HAND = REPO / "edgert" / "data" / "hand_recrop.tflite"


def build_relu64k(path: Path) -> Path:
    from edgert.model.builder import ModelBuilder

    b = ModelBuilder(description="bench: RELU on 64 KiB")
    x = b.input("x", (1, 128, 128, 1), np.float32)
    y = b.tensor("y", (1, 128, 128, 1), np.float32)
    b.op("RELU", [x], [y])
    b.output(y)
    path.write_bytes(b.build())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p90_ms": round(float(np.percentile(a, 90)), 4),
            "n": len(samples)}


def rss_of(pid: int) -> dict:
    import psutil

    mi = psutil.Process(pid).memory_info()
    return {"rss": mi.rss, "private": mi.rss - mi.shared, "file_backed": mi.shared}


LITERT_SERVER = textwrap.dedent("""
    import sys, json, numpy as np, zmq, psutil
    from ai_edge_litert.interpreter import Interpreter
    its = []
    for path in sys.argv[1:]:
        it = Interpreter(model_path=path)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
        its.append(it)
    ctx = zmq.Context(); sock = ctx.socket(zmq.ROUTER)
    mi = psutil.Process().memory_info()
    print(json.dumps({"rss": mi.rss, "private": mi.rss - mi.shared, "file_backed": mi.shared}))
""")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    ap.add_argument("--n", type=int, default=2000, help="round trips per small model")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edgert-bench-"))
    cache = Path(os.environ.get("NUMBA_CACHE_DIR") or tmp / "numba")
    os.environ["NUMBA_CACHE_DIR"] = str(cache)
    relu = build_relu64k(tmp / "relu64k.tflite")
    models = {"sine": SINE, "relu64k": relu, "hand": HAND}
    port = free_port()
    cfg = tmp / "bench.toml"
    cfg.write_text(f'[server]\nendpoints = ["tcp://127.0.0.1:{port}"]\nqueue_size = 64\n[runtime]\nbudget = "48MiB"\n'
                   + "".join(f'[[models]]\nname = "{n}"\npath = "{p}"\n' for n, p in models.items()))
    log = open(tmp / "daemon.log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "edgert.cli", "serve", "--config", str(cfg)],
                              stdout=log, stderr=subprocess.STDOUT)
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        from edgert.client import Client
        from edgert.runtime.executor import Executor

        endpoint = f"tcp://127.0.0.1:{port}"
        with Client(endpoint, timeout=1.0, retries=300) as c:
            c.ping()
        results["daemon_rss_ready"] = rss_of(daemon.pid)
        ex = Executor(models, budget=48 << 20)
        rng = np.random.default_rng(0)
        inputs = {n: [rng.standard_normal(s.shape).astype(s.dtype) for s in ex.input_specs(n)] for n in models}
        counts = {"sine": args.n, "relu64k": args.n, "hand": max(50, args.n // 20)}

        overhead = {}
        with Client(endpoint, timeout=30) as client:
            for name, xs in inputs.items():
                for _ in range(20):
                    ex.run(name, xs)
                    client.infer(name, xs)
                local, remote = [], []
                for _ in range(counts[name]):  # interleaved so drift hits both alike
                    t = time.perf_counter()
                    ex.run(name, xs)
                    local.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    client.infer(name, xs)
                    remote.append(time.perf_counter() - t)
                lp, rp = pct(local), pct(remote)
                overhead[name] = {"input_bytes": int(sum(x.nbytes for x in xs)), "in_process": lp, "served": rp,
                                  "added_p50_ms": round(rp["p50_ms"] - lp["p50_ms"], 4)}
        results["round_trip"] = overhead

        throughput = {}
        for name in ("sine", "relu64k", "hand"):
            for threads in (1, 8):
                client = Client(endpoint, timeout=30)
                stop = time.monotonic() + args.seconds
                done = [0] * threads

                def work(i: int) -> None:
                    while time.monotonic() < stop:
                        client.infer(name, inputs[name])
                        done[i] += 1

                ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
                t0 = time.monotonic()
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                elapsed = time.monotonic() - t0
                client.close()
                throughput[f"{name}/{threads}"] = round(sum(done) / elapsed, 1)
        results["throughput_rps"] = throughput
        results["daemon_rss_after_load"] = rss_of(daemon.pid)
        with Client(endpoint) as c:
            mem = c.memory()
        results["daemon_arena_bytes"] = mem["arena_bytes"]
        out = subprocess.run([sys.executable, "-c", LITERT_SERVER, *map(str, models.values())],
                             capture_output=True, text=True, check=True)
        results["litert_process_rss"] = json.loads(out.stdout)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()

    mib = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
    print(f"{'model':8} {'input':>9} {'in-process p50':>15} {'served p50':>11} {'added p50':>10} {'served p90':>11}")
    for name, r in results["round_trip"].items():
        print(f"{name:8} {r['input_bytes']:>9,} {r['in_process']['p50_ms']:>12.3f} ms {r['served']['p50_ms']:>8.3f} ms "
              f"{r['added_p50_ms']:>7.3f} ms {r['served']['p90_ms']:>8.3f} ms")
    print("throughput (requests/s): " + ", ".join(f"{k} clients: {v}" for k, v in results["throughput_rps"].items()))
    for label, key in (("daemon, ready", "daemon_rss_ready"), ("daemon, after load", "daemon_rss_after_load"),
                       ("LiteRT in Python", "litert_process_rss")):
        r = results[key]
        print(f"RSS {label:20} {mib(r['rss']):>10} (private {mib(r['private'])}, file-backed {mib(r['file_backed'])})")
    print(f"daemon arena: {results['daemon_arena_bytes']:,} bytes")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
