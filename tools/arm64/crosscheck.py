"""x86-64 vs aarch64 cross-check for tools/arm64-check.sh: reference outputs on the host, checks in the arm64 root.

Subcommands (each prints what it checked and exits non-zero on a failure):
  x86-reference OUT   on the x86-64 host: seeded inputs, edgert and LiteRT BUILTIN_REF outputs,
                      `verify` reports and encoded wire frames, saved under OUT for the arm64 side
  record FILE.npz     on x86-64: the record tests/test_crossarch.py checks every platform against
                      (tests/data/crossarch_x86_64.npz)
  cpu                 in the arm64 root: the emulated CPU is the board's (aarch64, no SVE/dot-product
                      under QEMU_CPU=cortex-a72), numba targets it, LiteRT's interpreter starts
  verify X86          `edgert verify --json` per model (numba cache hits/misses counted), same verdict as x86
  compare X86         edgert and LiteRT outputs on the x86 inputs against the x86 outputs; wire frames byte-equal
  serve X86           `edgert warmup`, then `edgert serve` (READY=1 over NOTIFY_SOCKET, no compile),
                      `edgert infer` and `edgert status` against it, SIGTERM -> exit 0

Stdlib + numpy + edgert only, so the same file runs on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # this checkout's edgert on both sides, whatever the python has installed
DATA = REPO / "tests" / "data"
# Small models from tests/data: float, int8 and a streaming (stateful) uint8 model, and the bundled default.
MODELS = ("sine_float", "kws_ds_cnn_float", "ic_resnet8_float", "hand_recrop",
          "kws_ds_cnn_int8", "ic_resnet8_int8", "hey_jarvis")
SERVED = ("hand_recrop", "kws_ds_cnn_int8")
INPUT_SEED = 1234
RUNS = 2  # consecutive requests on one executor, so state carried between them is compared too
WIRE_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
               "float16", "float32", "float64", "complex64")
EDGERT = str(Path(sys.executable).with_name("edgert"))


def _model_path(name: str) -> Path:
    return DATA / f"{name}.tflite"


def _say(ok: bool, text: str) -> bool:
    print(f"  {'ok  ' if ok else 'FAIL'} {text}", flush=True)
    return ok


# ---- x86-64 side ---------------------------------------------------------------------------

def _wire_arrays() -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(7))
    out = {}
    for name in WIRE_DTYPES:
        raw = rng.integers(0, 256, size=2 * 3 * 5 * np.dtype(name).itemsize, dtype=np.uint8)
        if name == "bool":
            out[name] = (raw % 2 == 1).reshape(2, 3, 5)
        else:  # every bit pattern (NaNs too) read as little-endian, then held in native order
            out[name] = raw.view(np.dtype(name).newbyteorder("<")).reshape(2, 3, 5).astype(name)
    return out


def _wire_frames() -> dict[str, list[bytes]]:
    from edgert.serve import protocol

    arrays = _wire_arrays()
    request = protocol.encode_request("wire-check", model="m", inputs=arrays, deadline_ms=250.0)
    reply = protocol.encode_reply("wire-check", outputs=list(arrays.items()), timing_us={"run": 1})
    return {kind: [bytes(memoryview(f).cast("B")) if not isinstance(f, bytes) else f for f in frames]
            for kind, frames in (("request", request), ("reply", reply))}


def x86_reference(out: Path) -> int:
    from edgert.errors import EdgeRTError
    from edgert.reference import random_inputs, reference_interpreter
    from edgert.runtime.executor import Executor
    from edgert.verify import verify_model

    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        stale.unlink()
    failed = False
    for name in MODELS:
        path = _model_path(name)
        try:
            report = verify_model(path)
        except EdgeRTError as exc:
            (out / f"{name}.verify.json").write_text(json.dumps({"error": str(exc)}))
            print(f"  x86-64 cannot run {name}: {str(exc).splitlines()[0]}")
            continue
        (out / f"{name}.verify.json").write_text(json.dumps(report))
        ex = Executor({"m": path})
        ip = reference_interpreter(path, kernels="ref")
        specs = ex.input_specs("m")
        saved: dict[str, np.ndarray] = {}
        for r in range(RUNS):
            inputs = random_inputs([(s.shape, s.dtype) for s in specs], seed=INPUT_SEED + r)
            for d, value in zip(ip.get_input_details(), inputs):
                ip.set_tensor(d["index"], value)
            ip.invoke()
            refs = [ip.get_tensor(d["index"]) for d in ip.get_output_details()]
            ours = ex.run("m", inputs)
            for i, a in enumerate(inputs):
                saved[f"run{r}_in{i}"] = a
            for i, (o, ref) in enumerate(zip(ours, refs)):
                saved[f"run{r}_edgert{i}"] = o
                saved[f"run{r}_litert{i}"] = ref
        np.savez(out / f"{name}.npz", **saved)
        failed |= not report["ok"]
        print(f"  x86-64 {name}: verify {'OK' if report['ok'] else 'MISMATCH'}, {RUNS} seeded runs saved")
    frames = _wire_frames()
    np.savez(out / "wire.npz", **{f"{kind}{i}": np.frombuffer(f, np.uint8)
                                  for kind, fs in frames.items() for i, f in enumerate(fs)})
    host = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "byteorder": sys.byteorder}
    (out / "host.json").write_text(json.dumps(host))
    print(f"  x86-64 host: {host}; wire frames saved")
    return 1 if failed else 0


def _input_digest(inputs: list[np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in inputs:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def record(out: Path) -> int:
    """Write the x86-64 record that tests/test_crossarch.py checks every platform against."""
    from edgert.reference import random_inputs, run_reference
    from edgert.runtime.executor import Executor
    from edgert.serve import protocol

    if platform.machine() != "x86_64":
        print(f"record: run this on x86-64 (this is {platform.machine()})")
        return 1
    rec: dict[str, np.ndarray] = {}
    for name in MODELS:
        ex = Executor({"m": _model_path(name)})
        inputs = random_inputs([(s.shape, s.dtype) for s in ex.input_specs("m")], seed=INPUT_SEED)
        rec[f"{name}__inputs_sha256"] = np.array(_input_digest(inputs))
        for i, o in enumerate(run_reference(_model_path(name), inputs)):
            rec[f"{name}__litert{i}"] = o
        for i, o in enumerate(ex.run("m", inputs)):
            rec[f"{name}__edgert{i}"] = o
    arrays = _wire_arrays()
    for dtype, a in arrays.items():
        rec[f"wire__array__{dtype}"] = a
    for i, f in enumerate(protocol.encode_request("wire-check", model="m", inputs=arrays, deadline_ms=250.0)):
        rec[f"wire__request{i}"] = np.frombuffer(f if isinstance(f, bytes) else np.ascontiguousarray(f).tobytes(), np.uint8)
    np.savez_compressed(out, **rec)
    print(f"record: {len(rec)} arrays, {out.stat().st_size} bytes -> {out}")
    return 0


# ---- aarch64 side --------------------------------------------------------------------------

def cpu() -> int:
    from numpy._core._multiarray_umath import __cpu_features__ as feats

    ok = _say(platform.machine() == "aarch64", f"platform.machine() = {platform.machine()}, byte order {sys.byteorder}")
    ok &= _say(sys.byteorder == "little", "little-endian, as the wire format and .tflite files are")
    present = sorted(k for k, v in feats.items() if v)
    print(f"  numpy sees CPU features: {' '.join(present)}")
    wanted = os.environ.get("QEMU_CPU", "")
    if wanted == "cortex-a72":
        ok &= _say(feats.get("ASIMD", False) and not feats.get("SVE", False) and not feats.get("ASIMDDP", False),
                   "QEMU_CPU=cortex-a72: NEON present, no SVE, no dot-product (a Raspberry Pi 4's CPU)")
    import llvmlite.binding as llvm
    import numba

    name = llvm.get_host_cpu_name()
    ok &= _say(name == wanted or not wanted, f"numba {numba.__version__} compiles for host CPU {name!r}")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    ip = Interpreter(model_path=str(_model_path("sine_float")),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    ip.allocate_tensors()
    ip.invoke()
    ok &= _say(True, "LiteRT Interpreter() starts and runs (it crashes when the host's x86 cpuinfo shows through)")
    return 0 if ok else 1


def _cache_events(text: str) -> tuple[int, int, str]:
    """NUMBA_DEBUG_CACHE lines -> (compiled and saved, loaded from cache, the other output)."""
    saved = loaded = 0
    rest = []
    for line in text.splitlines():
        if line.startswith("[cache]"):
            saved += "data saved to" in line
            loaded += "data loaded from" in line
        else:
            rest.append(line)
    return saved, loaded, "\n".join(rest)


def _edgert(args: list[str], timeout: float, debug_cache: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_DEBUG_CACHE="1" if debug_cache else "0")
    return subprocess.run([EDGERT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def verify(x86: Path) -> int:
    ok = True
    totals = [0, 0]
    for name in MODELS:
        want = json.loads((x86 / f"{name}.verify.json").read_text())
        t0 = time.monotonic()
        proc = _edgert(["verify", "--json", str(_model_path(name))], timeout=1800, debug_cache=True)
        dt = time.monotonic() - t0
        saved, loaded, out = _cache_events(proc.stdout)
        totals[0] += saved
        totals[1] += loaded
        cache = f"numba: {saved} compiled+saved, {loaded} loaded from cache"
        if "error" in want:
            same = proc.returncode == 2 and want["error"].splitlines()[0] in proc.stderr
            ok &= _say(same, f"{name}: x86-64 cannot run it either ({want['error'].splitlines()[0]}); "
                             f"aarch64 says the same: {same} [{dt:.1f} s]")
            continue
        if proc.returncode not in (0, 1):
            ok &= _say(False, f"{name}: edgert verify exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
            continue
        got = json.loads(out)
        errs = ", ".join(f"{o['name']} {o['dtype']} max abs err {o['max_abs_error']:.3g} "
                         f"(x86-64 {w['max_abs_error']:.3g}, tol {o['tolerance']:.3g})"
                         for o, w in zip(got["outputs"], want["outputs"]))
        ok &= _say(got["ok"] and got["ok"] == want["ok"] and got["arena_bytes"] == want["arena_bytes"],
                   f"{name}: {'OK' if got['ok'] else 'MISMATCH'} vs LiteRT BUILTIN_REF; arena "
                   f"{got['arena_bytes']} B (x86-64 {want['arena_bytes']} B); {errs}; {cache} [{dt:.1f} s]")
    print(f"  numba cache over all verify runs: {totals[0]} kernels compiled and saved, {totals[1]} loaded from cache")
    return 0 if ok else 1


def _same(label: str, got: np.ndarray, want: np.ndarray) -> tuple[bool, str]:
    """Integers bit-identical (fixed-point arithmetic has no reason to differ); floats bit-identical
    or within the project's tolerance rule (BLAS kernels differ per CPU), the difference shown."""
    from edgert.verify import compare_output

    if got.shape == want.shape and got.dtype == want.dtype and got.tobytes() == want.tobytes():
        return True, f"{label}: bit-identical"
    c = compare_output(label, got, want)
    return c.ok and want.dtype.kind == "f", (f"{label}: DIFFERS from x86-64: max abs {c.max_abs_error:.3g} (tolerance {c.tolerance:.3g}), "
                  f"max rel {c.max_rel_error:.3g}, {np.count_nonzero(got != want)} of {want.size} elements")


def compare(x86: Path) -> int:
    from edgert.reference import reference_interpreter
    from edgert.runtime.executor import Executor
    from edgert.serve import protocol

    ok = True
    differences = 0
    for name in MODELS:
        npz_path = x86 / f"{name}.npz"
        if not npz_path.exists():
            print(f"  skip {name}: no x86-64 outputs (x86-64 cannot run it)")
            continue
        saved = np.load(npz_path)
        path = _model_path(name)
        ex = Executor({"m": path})
        ip = reference_interpreter(path, kernels="ref")
        n_in = len(ex.input_specs("m"))
        for r in range(RUNS):
            inputs = [saved[f"run{r}_in{i}"] for i in range(n_in)]
            for d, value in zip(ip.get_input_details(), inputs):
                ip.set_tensor(d["index"], value)
            ip.invoke()
            refs = [ip.get_tensor(d["index"]) for d in ip.get_output_details()]
            ours = ex.run("m", inputs)
            for i, (o, ref) in enumerate(zip(ours, refs)):
                for who, got in (("edgert", o), ("litert", ref)):
                    good, text = _same(f"{name} run {r} output {i} {who}", got, saved[f"run{r}_{who}{i}"])
                    differences += "DIFFERS" in text
                    ok &= _say(good, text)
    wire = np.load(x86 / "wire.npz")
    frames = _wire_frames()
    for kind, fs in frames.items():
        want = [wire[f"{kind}{i}"].tobytes() for i in range(len(fs))]
        ok &= _say(fs == want, f"wire {kind}: {len(fs)} frames ({sum(map(len, fs))} bytes, {len(WIRE_DTYPES)} dtypes) "
                               f"byte-identical to the x86-64 encoding: {fs == want}")
    req = protocol.decode_request([wire[f"request{i}"].tobytes() for i in range(len(frames["request"]))])
    arrays = _wire_arrays()
    decoded_ok = len(req.arrays) == len(arrays) and all(
        a.dtype == arrays[m.name].dtype and a.tobytes() == arrays[m.name].tobytes() for m, a in zip(req.inputs, req.arrays))
    ok &= _say(decoded_ok, "x86-64 request frames decode on aarch64 to the same arrays")
    print(f"  {differences} output(s) not bit-identical to x86-64")
    return 0 if ok else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(notify: socket.socket, proc: subprocess.Popen, timeout: float) -> tuple[bool, list[str]]:
    messages = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            msg = notify.recv(4096).decode(errors="replace")
        except TimeoutError:
            continue
        messages.append(msg.replace("\n", "; "))
        if "READY=1" in msg.split("\n"):
            return True, messages
    return False, messages


def serve(x86: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix="edgert-arm64-serve-"))
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    served = [m for m in SERVED if (x86 / f"{m}.npz").exists()]
    cache = os.environ.get("NUMBA_CACHE_DIR", str(work / "numba"))
    models = "".join(f'\n[[models]]\nname = "{m}"\npath = "{_model_path(m)}"\n' for m in served)
    config = work / "edgert.toml"
    config.write_text(f'[server]\nendpoints = ["{endpoint}"]\nlog_level = "info"\ndrain_timeout = "10s"\n'
                      f'[runtime]\nbudget = "48MiB"\nthreads = 2\nnumba_cache_dir = "{cache}"\n{models}')
    # What a board does at install time: fill the cache, so the daemon's start compiles nothing.
    t0 = time.monotonic()
    warm = _edgert(["warmup", "--config", str(config)], timeout=1800, debug_cache=True)
    saved, loaded, out = _cache_events(warm.stdout)
    if not _say(warm.returncode == 0, f"edgert warmup --config: exit {warm.returncode} [{time.monotonic() - t0:.1f} s] "
                                      f"numba: {saved} compiled+saved, {loaded} loaded from cache; "
                                      f"{out.strip().splitlines()[-1] if out.strip() else ''} {warm.stderr.strip()[-1000:]}"):
        return 1
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(work / "notify.sock"))
    notify.settimeout(1.0)
    log_path = work / "serve.log"
    env = dict(os.environ, NOTIFY_SOCKET=str(work / "notify.sock"), NUMBA_DEBUG_CACHE="1")
    ok = True
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([EDGERT, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        ready, messages = _wait_ready(notify, proc, timeout=1800)
        saved, loaded, _ = _cache_events(log_path.read_text())
        ok &= _say(ready, f"edgert serve {' + '.join(served)} on {endpoint}: READY=1 after {time.monotonic() - t0:.1f} s "
                          f"(numba: {saved} compiled+saved, {loaded} loaded from cache); notify: {messages[-1] if messages else '-'}")
        ok &= _say(ready and saved == 0 and loaded > 0, "after `edgert warmup` the daemon loads every kernel from the cache")
        if not ready:
            print(log_path.read_text()[-3000:])
            return 1
        for name in served:
            saved_npz = np.load(x86 / f"{name}.npz")
            n_in = sum(1 for k in saved_npz.files if k.startswith("run0_in"))
            np.savez(work / "in.npz", **{f"arr_{i}": saved_npz[f"run0_in{i}"] for i in range(n_in)})
            t1 = time.monotonic()
            proc_infer = _edgert(["infer", "--model", name, "--input", str(work / "in.npz"), "--output",
                                  str(work / "out.npz"), "--endpoint", endpoint, "--timeout", "60"], timeout=300)
            if not _say(proc_infer.returncode == 0, f"edgert infer --model {name}: exit {proc_infer.returncode} "
                                                    f"[{time.monotonic() - t1:.1f} s] {proc_infer.stdout.strip()} {proc_infer.stderr.strip()[-1000:]}"):
                ok = False
                continue
            with np.load(work / "out.npz") as got:
                for i, key in enumerate(got.files):
                    good, text = _same(f"served {name} output {i} ({key}) vs x86-64 edgert", got[key], saved_npz[f"run0_edgert{i}"])
                    ok &= _say(good, text)
        t1 = time.monotonic()
        proc_status = _edgert(["status", "--json", "--endpoint", endpoint], timeout=300)
        good = proc_status.returncode == 0
        if good:
            status = json.loads(proc_status.stdout)
            text = json.dumps(status)
            good = all(m in text for m in served)
            print(f"  status: {text[:600]}")
        ok &= _say(good, f"edgert status --json: exit {proc_status.returncode}, names every served model "
                         f"[{time.monotonic() - t1:.1f} s] {proc_status.stderr.strip()[-1000:]}")
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            rc = None
        ok &= _say(rc == 0, f"SIGTERM: daemon exited with {rc} after {time.monotonic() - t1:.1f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        notify.close()
    if not ok:
        print(log_path.read_text()[-3000:])
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("x86-reference", "record", "cpu", "verify", "compare", "serve"))
    p.add_argument("dir", nargs="?", type=Path, help="x86-64 reference directory")
    args = p.parse_args(argv)
    if args.command == "cpu":
        return cpu()
    if args.dir is None:
        p.error(f"{args.command} needs the x86-64 reference directory")
    return {"x86-reference": x86_reference, "record": record, "verify": verify, "compare": compare, "serve": serve}[args.command](args.dir)


if __name__ == "__main__":
    sys.exit(main())
