"""Config files: the shipped examples load, and every kind of mistake names its key and problem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgert.config import (DEFAULT_ENDPOINT, default_config, load_config, parse_toml)
from edgert.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgert.toml"
    path.write_text(text)
    return path


MODEL = f'[[models]]\nname = "sine"\npath = "{DATA / "sine_float.tflite"}"\n'


@pytest.mark.parametrize("name", ["default.toml", "raspberry-pi-4.toml", "jetson-nano.toml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.models and all(m.path.is_file() for m in cfg.models)
    assert cfg.budget is not None and cfg.budget > 0
    assert not cfg.non_loopback_endpoints()


def test_default_config_is_configs_default_toml():
    built_in = default_config()
    shipped = load_config(REPO / "configs" / "default.toml")
    assert dataclasses.replace(built_in, source="x") == dataclasses.replace(shipped, source="x")
    assert built_in.endpoints == (DEFAULT_ENDPOINT,)
    assert built_in.models[0].path.name == "hand_recrop.tflite"
    assert built_in.budget == 48 * 1024 * 1024


def test_full_config(tmp_path):
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.tflite"
    model.write_bytes((DATA / "sine_float.tflite").read_bytes())
    plan = tmp_path / "m.plan.json"
    plan.write_text("{}")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "server.key_secret").write_text("x")
    cfg = load_config(write(tmp_path, f'''
[server]
endpoints = ["tcp://127.0.0.1:7000", "ipc://{tmp_path}/s.sock"]
queue_size = 4
request_timeout = "250ms"
drain_timeout = 3
max_message = "2MiB"
log_level = "DEBUG"

[runtime]
budget = "1.5MiB"
rss_limit = 100000000
threads = 2
numba_cache_dir = "cache"
strategy = "greedy"
order = "optimized"
aliasing = {{ views = true, inplace = false }}

[security]
curve_secret_key = "keys/server.key_secret"
curve_authorized_keys = "keys"

[[models]]
name = "m"
path = "models/m.tflite"   # relative to the config file
plan = "m.plan.json"
'''))
    assert cfg.endpoints == ("tcp://127.0.0.1:7000", f"ipc://{tmp_path}/s.sock")
    assert (cfg.queue_size, cfg.request_timeout, cfg.drain_timeout) == (4, 0.25, 3.0)
    assert cfg.max_message_bytes == 2 * 1024 * 1024 and cfg.log_level == "debug"
    assert cfg.budget == 1536 * 1024 and cfg.rss_limit == 100_000_000 and cfg.threads == 2
    assert cfg.numba_cache_dir == tmp_path / "cache"
    assert (cfg.strategy, cfg.order, dict(cfg.aliasing)) == ("greedy", "optimized", {"views": True, "inplace": False})
    assert cfg.curve.secret_key == keys / "server.key_secret" and cfg.curve.authorized_keys == keys
    assert cfg.models[0].path == model and cfg.models[0].plan == plan


@pytest.mark.parametrize("text, key, problem", [
    ('[server]\nport = 5\n' + MODEL, "server.port", "unknown key"),
    ('[sever]\n' + MODEL, "sever", "unknown key"),
    ('[runtime]\nbudget = "48 parsecs"\n' + MODEL, "runtime.budget", "bad size"),
    ('[runtime]\nbudget = "-4MiB"\n' + MODEL, "runtime.budget", "bad size"),
    ('[runtime]\nbudget = 0\n' + MODEL, "runtime.budget", "positive"),
    ('[runtime]\nbudget = true\n' + MODEL, "runtime.budget", "size"),
    ('[runtime]\nrss_limit = [1]\n' + MODEL, "runtime.rss_limit", "size"),
    ('[runtime]\nthreads = 0\n' + MODEL, "runtime.threads", "integer from 1"),
    ('[runtime]\nstrategy = "fastest"\n' + MODEL, "runtime.strategy", "not one of"),
    ('[runtime]\norder = "random"\n' + MODEL, "runtime.order", "not one of"),
    ('[runtime]\naliasing = { views = "yes" }\n' + MODEL, "runtime.aliasing", "true/false"),
    ('[runtime]\naliasing = { magic = true }\n' + MODEL, "runtime.aliasing.magic", "unknown switch"),
    ('[server]\nqueue_size = "lots"\n' + MODEL, "server.queue_size", "integer"),
    ('[server]\nrequest_timeout = "soon"\n' + MODEL, "server.request_timeout", "duration"),
    ('[server]\nrequest_timeout = "0s"\n' + MODEL, "server.request_timeout", "positive"),
    ('[server]\nmax_message = "1KiB"\n' + MODEL, "server.max_message", "at least 1MiB"),
    ('[server]\nlog_level = "loud"\n' + MODEL, "server.log_level", "one of"),
    ('[server]\nendpoints = []\n' + MODEL, "server.endpoints", "non-empty"),
    ('[server]\nendpoints = ["udp://1.2.3.4:5"]\n' + MODEL, "server.endpoints[0]", "tcp:// or ipc://"),
    ('[server]\nendpoints = ["tcp://127.0.0.1"]\n' + MODEL, "server.endpoints[0]", "HOST:PORT"),
    ('[server]\nendpoints = ["tcp://127.0.0.1:1", "tcp://127.0.0.1:1"]\n' + MODEL, "server.endpoints", "twice"),
    ('[server]\n', "models", "at least one"),
    ('[[models]]\nname = "x"\n', "models[0].path", "missing"),
    ('[[models]]\npath = "x.tflite"\n', "models[0].name", "missing"),
    ('[[models]]\nname = "x"\npath = "nope.tflite"\n', "models[0].path", "file not found"),
    (MODEL + 'plan = "nope.json"\n', "models[0].plan", "file not found"),
    (MODEL + 'weights = 1\n', "models[0].weights", "unknown key"),
    (MODEL + MODEL, "models[1].name", "configured twice"),
    (MODEL.replace('"sine"', '"a b"'), "models[0].name", "letters"),
    ('[security]\ncurve_secret_key = "k"\n' + MODEL, "security.curve_authorized_keys", "both"),
    ('[security]\ncurve_secret_key = "k"\ncurve_authorized_keys = "."\n' + MODEL, "security.curve_secret_key",
     "file not found"),
    ('models = 3', "models", "at least one"),
    ('[server\n', "not valid TOML", ""),
])
def test_config_errors_name_key_and_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert key in message and problem in message, message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize("endpoint, remote", [
    ("tcp://127.0.0.1:5555", False), ("tcp://localhost:5555", False), ("tcp://[::1]:5555", False),
    ("tcp://127.0.0.2:5555", False), ("ipc:///run/edgert.sock", False),
    ("tcp://0.0.0.0:5555", True), ("tcp://*:5555", True), ("tcp://192.168.1.10:5555", True),
    ("tcp://eth0:5555", True),
])
def test_non_loopback_endpoints(endpoint, remote):
    cfg = parse_toml(f'[server]\nendpoints = ["{endpoint}"]\n' + MODEL)
    assert cfg.non_loopback_endpoints() == ([endpoint] if remote else [])


def test_bundled_prefix_and_durations():
    cfg = parse_toml('[server]\nrequest_timeout = "2min"\ndrain_timeout = "1.5s"\n'
                     '[[models]]\nname = "h"\npath = "bundled:hand_recrop.tflite"\n')
    assert cfg.request_timeout == 120.0 and cfg.drain_timeout == 1.5
    assert cfg.models[0].path.is_file()


def test_inline_max_defaults_to_2ms_and_takes_zero():
    assert parse_toml(MODEL).inline_max == 0.002
    assert parse_toml('[server]\ninline_max = "5ms"\n' + MODEL).inline_max == 0.005
    assert parse_toml('[server]\ninline_max = 0\n' + MODEL).inline_max == 0.0
    for bad in ('"-1ms"', '"fast"', "true"):
        with pytest.raises(ConfigError, match="server.inline_max"):
            parse_toml(f'[server]\ninline_max = {bad}\n' + MODEL)
    with pytest.raises(ConfigError, match="server.drain_timeout.*positive"):
        parse_toml('[server]\ndrain_timeout = 0\n' + MODEL)


def test_exposure_warning_without_curve(tmp_path):
    open_cfg = parse_toml('[server]\nendpoints = ["tcp://0.0.0.0:5555", "tcp://127.0.0.1:5556"]\n' + MODEL)
    (warning,) = open_cfg.exposure_warnings()
    assert "tcp://0.0.0.0:5555" in warning and "CURVE" in warning
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "s.key_secret").write_text("x")
    closed = parse_toml('[server]\nendpoints = ["tcp://0.0.0.0:5555"]\n[security]\ncurve_secret_key = "keys/s.key_secret"\n'
                        'curve_authorized_keys = "keys"\n' + MODEL, base_dir=tmp_path)
    assert closed.exposure_warnings() == []
    assert parse_toml(MODEL).exposure_warnings() == []
