"""The systemd notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG, STOPPING.

A datagram of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET` (a path, or an
abstract socket when it starts with `@`). Twenty lines of documented protocol, so no
dependency: the libraries for it are either unmaintained or need libsystemd to build.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages; does nothing when not started by systemd with Type=notify."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        enabled = usec is not None and (pid is None or pid == str(os.getpid()))
        self.watchdog_s = int(usec) / 1e6 if enabled and usec and usec.isdigit() else None
        self._sock: socket.socket | None = None

    def send(self, **fields: str) -> None:
        """Send one message, e.g. send(READY="1", STATUS="syncing")."""
        if self.address is None:
            return
        text = "\n".join(f"{k}={v}" for k, v in fields.items())
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                # Never block the service on a full notify queue (the manager may be slow).
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(text.encode("utf-8", "replace"), addr)
        except BlockingIOError:
            log.debug("systemd notify queue full; dropped %s", ",".join(fields))
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)

    def ready(self, status: str) -> None:
        """The service is up."""
        self.send(READY="1", STATUS=status)

    def status(self, status: str) -> None:
        """A one-line status for `systemctl status`."""
        self.send(STATUS=status)

    def watchdog(self) -> None:
        """Keep-alive ping (WatchdogSec=)."""
        self.send(WATCHDOG="1")

    def stopping(self) -> None:
        """The service is shutting down."""
        self.send(STOPPING="1", STATUS="stopping")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
