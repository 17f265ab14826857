"""systemd service notification (sd_notify) without libsystemd: READY, STATUS, WATCHDOG, STOPPING.

The protocol is one AF_UNIX datagram of newline-separated KEY=VALUE lines sent to $NOTIFY_SOCKET
(a path, or an abstract-namespace name when it starts with '@'). Outside systemd the variable is
unset and every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping


def _address(value: str) -> str | bytes:
    # '@' marks Linux's abstract namespace: the real address starts with a NUL byte.
    return "\0" + value[1:] if value.startswith("@") else value


@dataclass
class Notifier:
    """Sends sd_notify messages to one socket. `Notifier.from_env()` reads NOTIFY_SOCKET and the
    watchdog settings; an unset socket yields a notifier whose calls do nothing."""

    address: str | None = None
    watchdog_usec: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET") or None
        if addr is not None and not (addr.startswith("/") or addr.startswith("@")):
            addr = None  # vsock and other schemes are not for local services
        usec = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process that must ping; another PID (a child) must not.
        if raw and raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(address=addr, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the configured timeout, as sd_watchdog_enabled advises)."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def notify(self, **fields: str | int) -> bool:
        """Send KEY=VALUE lines (keys upper-cased: notify(ready=1, status="...")). True when sent."""
        if self.address is None:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(_address(self.address))
                sock.sendall(payload)
        except OSError:
            return False  # systemd gone or socket not ours: never take the daemon down for it
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(ready=1, **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(status=text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def reloading(self) -> bool:
        return self.notify(reloading=1)

    def stopping(self) -> bool:
        return self.notify(stopping=1)
