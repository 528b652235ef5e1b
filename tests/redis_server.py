"""Private ``redis-server`` processes for tests that need to control the server.

Each :class:`RedisServer` runs on a free port in its own temporary directory,
with persistence off, so a test can kill it, restart it on the same port, or
read its ``INFO`` without touching the machine's shared Redis.

When ``redis-server`` is not installed the tests that need it are skipped with
the reason shown, except under ``CI=true``, where a missing server is a failure
(CI is supposed to have it, and silently skipping would hide the gap).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_command", "require_binary"]


def require_binary(name: str = "redis-server") -> str:
    """The path of ``name``; skip the test (fail under ``CI=true``) if missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must provide it", pytrace=False)
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _encode(*args: object) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_command(port: int, *args: object, timeout: float = 2.0) -> bytes:
    """Send one command with a blocking socket and return the raw reply bytes
    (enough for PING, INFO, DBSIZE and the like in test assertions)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_encode(*args))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
            if data.startswith(b"$"):
                header, _, rest = data.partition(b"\r\n")
                if len(rest) >= int(header[1:]) + 2:
                    return data
            elif data.endswith(b"\r\n"):
                return data


class RedisServer:
    """One ``redis-server`` process; ``start``/``kill``/``stop``/``restart`` it."""

    def __init__(
        self,
        *extra_args: str,
        port: int | None = None,
        tls: bool = False,
        config_file: str | None = None,
        sentinel: bool = False,
    ) -> None:
        self.binary = require_binary()
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.tls = tls
        # redis-server wants a config file as its first argument; Sentinel needs one
        # (it writes its state back into it).
        self.leading_args = ([config_file] if config_file else []) + (
            ["--sentinel"] if sentinel else []
        )
        self.dir = Path(tempfile.mkdtemp(prefix="channels-runtime-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        port_args = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        args = [self.binary, *self.leading_args, *port_args]
        args += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.dir), *self.extra_args]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited at start ({self.process.returncode})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                if self.tls or redis_command(self.port, "PING").startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start in {timeout}s")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def command(self, *args: object) -> bytes:
        return redis_command(self.port, *args)

    def connected_clients(self) -> int:
        """Clients connected right now, not counting the one asking."""
        info = self.command("INFO", "clients").decode()
        for line in info.splitlines():
            if line.startswith("connected_clients:"):
                return int(line.split(":")[1]) - 1
        raise AssertionError(f"no connected_clients in {info!r}")

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
