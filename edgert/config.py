"""The daemon's TOML config file -> validated, frozen dataclasses (ConfigError names key and problem).

Layout (every key optional except at least one [[models]] entry; see configs/default.toml):

    [server]   endpoints, queue_size, request_timeout, drain_timeout, inline_max, max_message, log_level
    [runtime]  budget, rss_limit, threads, numba_cache_dir, strategy, order, [runtime.aliasing]
    [security] curve_secret_key, curve_authorized_keys
    [[models]] name, path, plan

Relative paths are relative to the config file's directory; "bundled:NAME" names a model shipped
inside the edgert package (edgert/data/NAME).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from edgert.errors import ConfigError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).resolve().parent / "data"
LOG_LEVELS = ("debug", "info", "warning", "error")
ORDERS = ("file", "optimized")
ALIASING_SWITCHES = ("views", "inplace", "concat")  # fields of edgert.plan.Aliasing
MIN_MAX_MESSAGE = 1 << 20  # the client only asks the daemon for its limit above this size

# The config `edgert serve` uses without --config; configs/default.toml says the same (a test checks).
DEFAULT_TOML = """\
[server]
endpoints = ["tcp://127.0.0.1:5555"]

[runtime]
budget = "48MiB"

[[models]]
name = "hand_recrop"
path = "bundled:hand_recrop.tflite"
"""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path
    plan: Path | None = None


@dataclass(frozen=True)
class CurveConfig:
    """CURVE encryption and client authentication: the server's secret key file (zmq.auth format,
    from `zmq.auth.create_certificates`) and a directory of allowed clients' public key files."""

    secret_key: Path
    authorized_keys: Path


@dataclass(frozen=True)
class Config:
    models: tuple[ModelConfig, ...]
    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    queue_size: int = 32
    request_timeout: float = 10.0  # seconds; the deadline of requests that bring none
    drain_timeout: float = 10.0  # seconds SIGTERM waits for queued requests
    # Requests of a model whose last run took at most this long run on the I/O thread when the
    # compute thread is idle (no thread hand-off); 0 sends every request through the queue.
    inline_max: float = 0.002
    max_message_bytes: int = 16 << 20
    log_level: str = "info"
    budget: int | None = None
    rss_limit: int | None = None
    threads: int = 1
    numba_cache_dir: Path | None = None
    strategy: str = "default"
    order: str = "file"
    aliasing: Mapping[str, bool] = field(default_factory=dict)
    curve: CurveConfig | None = None
    source: str = "<default>"

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def non_loopback_endpoints(self) -> list[str]:
        """Endpoints reachable from other hosts (tcp on anything but a loopback address)."""
        return [e for e in self.endpoints if not _is_local_endpoint(e)]

    def exposure_warnings(self) -> list[str]:
        """One warning per endpoint other hosts can reach while CURVE is off."""
        if self.curve is not None:
            return []
        return [f"WARNING: {e} is reachable from other hosts and CURVE is not configured: anyone who can "
                f"reach it can run models and read replies in clear text. Bind 127.0.0.1 or ipc://, or set "
                f"[security] curve_secret_key and curve_authorized_keys." for e in self.non_loopback_endpoints()]


_SECTIONS = {
    "server": {"endpoints", "queue_size", "request_timeout", "drain_timeout", "inline_max", "max_message",
               "log_level"},
    "runtime": {"budget", "rss_limit", "threads", "numba_cache_dir", "strategy", "order", "aliasing"},
    "security": {"curve_secret_key", "curve_authorized_keys"},
    "models": {"name", "path", "plan"},
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$", re.IGNORECASE)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _parse_size(text: str) -> int:
    from edgert.plan.plan import parse_size  # the planner owns the size syntax

    return parse_size(text)


class _Reader:
    """Typed access to one table, collecting the key path for messages."""

    def __init__(self, source: str, base: Path):
        self.source = source
        self.base = base

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {problem}")

    def check_keys(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                            f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def size(self, value: Any, key: str) -> int:
        if isinstance(value, bool):
            raise self.fail(key, f"expected a size like \"48MiB\" or a byte count, got {value!r}")
        if isinstance(value, int):
            if value <= 0:
                raise self.fail(key, f"must be positive, got {value}")
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"expected a size like \"48MiB\", got {value!r}")
        try:
            n = _parse_size(value)
        except (ValueError, TypeError) as exc:
            raise self.fail(key, f"bad size {value!r} ({exc})") from None
        if n <= 0:
            raise self.fail(key, f"must be positive, got {value!r}")
        return n

    def duration(self, value: Any, key: str, *, allow_zero: bool = False) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
            unit = (m.group(2) or "s").lower()
            seconds = float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit]
        else:
            raise self.fail(key, f"expected a duration like \"5s\" or \"250ms\", got {value!r}")
        if not (seconds > 0 or (allow_zero and seconds == 0)):
            raise self.fail(key, f"must be {'zero or ' if allow_zero else ''}positive, got {value!r}")
        return seconds

    def positive_int(self, value: Any, key: str, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
            raise self.fail(key, f"expected an integer from 1 to {maximum}, got {value!r}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def path(self, value: Any, key: str, *, must_exist: bool = True, is_dir: bool = False) -> Path:
        text = self.string(value, key)
        if text.startswith(BUNDLED_PREFIX):
            path = BUNDLED_DIR / text[len(BUNDLED_PREFIX):]
        else:
            path = Path(text).expanduser()
            if not path.is_absolute():
                path = self.base / path
        if must_exist:
            if not path.exists():
                raise self.fail(key, f"file not found: {path}")
            if is_dir and not path.is_dir():
                raise self.fail(key, f"not a directory: {path}")
            if not is_dir and not path.is_file():
                raise self.fail(key, f"not a file: {path}")
        return path


def _is_local_endpoint(endpoint: str) -> bool:
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: assume reachable


def _endpoint(r: _Reader, value: Any, key: str) -> str:
    text = r.string(value, key)
    parts = urlsplit(text)
    if parts.scheme == "tcp":
        if not re.match(r"^tcp://(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(\d+|\*)$", text):
            raise r.fail(key, f"expected tcp://HOST:PORT, got {text!r}")
    elif parts.scheme == "ipc":
        if len(text) <= len("ipc://"):
            raise r.fail(key, f"expected ipc:///path/to/socket, got {text!r}")
    else:
        raise r.fail(key, f"endpoint must start with tcp:// or ipc://, got {text!r}")
    return text


def parse_config(data: Mapping[str, Any], *, base_dir: Path | str = ".", source: str = "<config>") -> Config:
    """A parsed TOML document -> Config. Raises ConfigError naming the key and the problem."""
    r = _Reader(source, Path(base_dir))
    r.check_keys(data, set(_SECTIONS), "")
    for section in ("server", "runtime", "security"):
        if section in data and not isinstance(data[section], dict):
            raise r.fail(section, "must be a table ([section])")
    server = data.get("server", {})
    runtime = data.get("runtime", {})
    security = data.get("security", {})
    r.check_keys(server, _SECTIONS["server"], "server")
    r.check_keys(runtime, _SECTIONS["runtime"], "runtime")
    r.check_keys(security, _SECTIONS["security"], "security")
    kw: dict[str, Any] = {}

    if "endpoints" in server:
        eps = server["endpoints"]
        if isinstance(eps, str):
            eps = [eps]
        if not isinstance(eps, list) or not eps:
            raise r.fail("server.endpoints", "expected a non-empty list of endpoints")
        kw["endpoints"] = tuple(_endpoint(r, e, f"server.endpoints[{i}]") for i, e in enumerate(eps))
        if len(set(kw["endpoints"])) != len(kw["endpoints"]):
            raise r.fail("server.endpoints", "an endpoint is listed twice")
    if "queue_size" in server:
        kw["queue_size"] = r.positive_int(server["queue_size"], "server.queue_size", 100_000)
    if "request_timeout" in server:
        kw["request_timeout"] = r.duration(server["request_timeout"], "server.request_timeout")
    if "drain_timeout" in server:
        kw["drain_timeout"] = r.duration(server["drain_timeout"], "server.drain_timeout")
    if "inline_max" in server:
        kw["inline_max"] = r.duration(server["inline_max"], "server.inline_max", allow_zero=True)
    if "max_message" in server:
        kw["max_message_bytes"] = r.size(server["max_message"], "server.max_message")
        if kw["max_message_bytes"] < MIN_MAX_MESSAGE:
            raise r.fail("server.max_message", f"must be at least 1MiB, got {server['max_message']!r}")
    if "log_level" in server:
        level = server["log_level"]
        if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
            raise r.fail("server.log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
        kw["log_level"] = level.lower()

    if "budget" in runtime:
        kw["budget"] = r.size(runtime["budget"], "runtime.budget")
    if "rss_limit" in runtime:
        kw["rss_limit"] = r.size(runtime["rss_limit"], "runtime.rss_limit")
    if "threads" in runtime:
        kw["threads"] = r.positive_int(runtime["threads"], "runtime.threads", 256)
    if "numba_cache_dir" in runtime:
        kw["numba_cache_dir"] = r.path(runtime["numba_cache_dir"], "runtime.numba_cache_dir", must_exist=False)
    if "strategy" in runtime:
        from edgert.plan.offsets import STRATEGIES

        kw["strategy"] = r.string(runtime["strategy"], "runtime.strategy")
        if kw["strategy"] not in STRATEGIES:
            raise r.fail("runtime.strategy", f"{kw['strategy']!r} is not one of {', '.join(STRATEGIES)}")
    if "order" in runtime:
        kw["order"] = r.string(runtime["order"], "runtime.order")
        if kw["order"] not in ORDERS:
            raise r.fail("runtime.order", f"{kw['order']!r} is not one of {', '.join(ORDERS)}")
    if "aliasing" in runtime:
        table = runtime["aliasing"]
        if not isinstance(table, dict) or not all(isinstance(v, bool) for v in table.values()):
            raise r.fail("runtime.aliasing", "expected a table of true/false switches")
        unknown = sorted(set(table) - set(ALIASING_SWITCHES))
        if unknown:
            raise r.fail(f"runtime.aliasing.{unknown[0]}", f"unknown switch (allowed: {', '.join(ALIASING_SWITCHES)})")
        kw["aliasing"] = dict(table)

    if security:
        missing = [k for k in ("curve_secret_key", "curve_authorized_keys") if k not in security]
        if missing:
            raise r.fail(f"security.{missing[0]}", "CURVE needs both curve_secret_key and curve_authorized_keys")
        kw["curve"] = CurveConfig(
            secret_key=r.path(security["curve_secret_key"], "security.curve_secret_key"),
            authorized_keys=r.path(security["curve_authorized_keys"], "security.curve_authorized_keys",
                                   is_dir=True))

    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise r.fail("models", "at least one [[models]] entry (name, path) is required")
    parsed: list[ModelConfig] = []
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            raise r.fail(where, "must be a table ([[models]])")
        r.check_keys(entry, _SECTIONS["models"], where)
        for req in ("name", "path"):
            if req not in entry:
                raise r.fail(f"{where}.{req}", "missing")
        name = r.string(entry["name"], f"{where}.name")
        if not _NAME_RE.match(name):
            raise r.fail(f"{where}.name", f"{name!r}: use 1-64 letters, digits, '_', '.', '-'")
        if name in {m.name for m in parsed}:
            raise r.fail(f"{where}.name", f"model {name!r} is configured twice")
        plan = r.path(entry["plan"], f"{where}.plan") if "plan" in entry else None
        parsed.append(ModelConfig(name=name, path=r.path(entry["path"], f"{where}.path"), plan=plan))
    kw["models"] = tuple(parsed)
    return Config(source=source, **kw)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    return parse_toml(text, base_dir=path.resolve().parent, source=str(path))


def parse_toml(text: str, *, base_dir: Path | str = ".", source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_config(data, base_dir=base_dir, source=source)


def with_endpoints(config: Config, endpoints: list[str]) -> Config:
    """config with server.endpoints replaced (the --endpoint option), validated like the file's."""
    import dataclasses

    r = _Reader("--endpoint", Path("."))
    return dataclasses.replace(config, endpoints=tuple(_endpoint(r, e, f"--endpoint[{i}]")
                                                       for i, e in enumerate(endpoints)))


def default_config() -> Config:
    """The config used without --config: the bundled model on tcp://127.0.0.1:5555."""
    return parse_toml(DEFAULT_TOML, base_dir=BUNDLED_DIR, source="<built-in default>")
