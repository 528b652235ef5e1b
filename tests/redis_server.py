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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ErrorReply",
    "RedisServer",
    "SentinelSetup",
    "free_port",
    "info",
    "redis_call",
    "redis_command",
    "require_binary",
    "sentinel_server",
    "wait_until",
]


def require_binary(name: str = "redis-server") -> str:
    """The path of ``name``; skip the test (fail under ``CI=true``) if missing."""
    path = shutil.which(name)
    if path is None:
        package = "redis-server" if name.startswith("redis") else name
        reason = f"{name} is not installed (apt-get install {package})"
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


# -- replication and Sentinel -------------------------------------------------------


class ErrorReply(Exception):
    """An error reply (``-ERR ...``) returned by :func:`redis_call`."""


def _read_resp(reader: Any) -> Any:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return ErrorReply(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        return reader.read(length + 2)[:-2].decode("utf-8", "replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_resp(reader) for _ in range(count)]
    raise ConnectionError(f"not a RESP2 reply: {line!r}")


def redis_call(port: int, *args: object, timeout: float = 2.0) -> Any:
    """Send one command and return its parsed reply: ``str`` for strings, ``int``,
    ``list``, ``None``, or a :class:`ErrorReply` instance for an error reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_encode(*args))
        with sock.makefile("rb") as reader:
            return _read_resp(reader)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def info(port: int, section: str) -> dict[str, str]:
    """One ``INFO`` section of the server at ``port``, as a dict."""
    text = redis_call(port, "INFO", section)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#")


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (connection errors count as "not yet") until it returns
    something truthy, and return that; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = condition()
        except OSError as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(0.05)


def sentinel_server(
    master_port: int, master_name: str = "mymaster", config: Iterable[str] = (), quorum: int = 1
) -> RedisServer:
    """A Sentinel (not started yet) monitoring ``127.0.0.1:master_port`` as
    ``master_name``, with further ``sentinel ...`` lines from ``config``. Its
    configuration file, which Sentinel rewrites, is in its own directory."""
    server = RedisServer(sentinel=True)
    path = server.dir / "sentinel.conf"
    lines = [f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}", *config]
    path.write_text("\n".join(lines) + "\n")
    server.leading_args = [str(path), "--sentinel"]
    return server


class SentinelSetup:
    """A master, a replica of it, and ``sentinels`` Redis Sentinels watching them
    as ``master_name``, every process on a free port in its own directory.

    Failure detection is fast (``down_after_ms``), and the sentinels start out
    knowing the replica and each other (``known-replica``/``known-sentinel``
    lines), so a failover can start without the seconds Sentinel otherwise
    spends on discovery. ``data[port]`` is the data server on that port,
    whichever role it has now.
    """

    def __init__(
        self,
        sentinels: int = 1,
        quorum: int = 1,
        master_name: str = "mymaster",
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.master_name = master_name
        # A replica waits for the master's RDB: do not let the master wait 5 s first.
        self.master = RedisServer("--repl-diskless-sync-delay", "0")
        self.replica = RedisServer(
            "--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", str(self.master.port)
        )
        self.data = {self.master.port: self.master, self.replica.port: self.replica}
        ids = [os.urandom(20).hex() for _ in range(sentinels)]
        self.sentinels = [
            sentinel_server(self.master.port, master_name, quorum=quorum) for _ in range(sentinels)
        ]
        for my_id, sentinel in zip(ids, self.sentinels, strict=True):
            config = Path(sentinel.leading_args[0])
            lines = [
                f"sentinel myid {my_id}",
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
                f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
                f"sentinel known-replica {master_name} 127.0.0.1 {self.replica.port}",
            ]
            lines += [
                f"sentinel known-sentinel {master_name} 127.0.0.1 {other.port} {other_id}"
                for other_id, other in zip(ids, self.sentinels, strict=True)
                if other is not sentinel
            ]
            with config.open("a") as file:
                file.write("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> SentinelSetup:
        try:
            self.master.start()
            self.replica.start()
            self.wait_for_link(self.replica.port, timeout)
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_until_ready(timeout)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def hosts_entry(self) -> dict[str, Any]:
        """The layer's ``hosts`` entry for this setup."""
        return {
            "sentinels": [("127.0.0.1", s.port) for s in self.sentinels],
            "master_name": self.master_name,
        }

    def named_masters(self) -> list[int | None]:
        """The master port each sentinel names now (None: it cannot say)."""
        ports: list[int | None] = []
        for sentinel in self.sentinels:
            try:
                reply = redis_call(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
            except OSError:
                reply = None
            ports.append(int(reply[1]) if isinstance(reply, list) else None)
        return ports

    def wait_for_master(self, port: int, timeout: float = 30.0) -> None:
        """Wait until every sentinel names ``port`` as the master, and that server
        says it is one."""

        def settled() -> bool:
            if any(named != port for named in self.named_masters()):
                return False
            role = redis_call(port, "ROLE")
            return isinstance(role, list) and role[0] == "master"

        wait_until(settled, timeout, f"every sentinel to name 127.0.0.1:{port} as master")

    def wait_for_link(self, replica_port: int, timeout: float = 20.0) -> None:
        """Wait until the replica on ``replica_port`` is linked to its master and
        has everything the master has written (replication is asynchronous, and
        a master streams writes to a replica only once it has acknowledged its
        initial copy, which a replica does once a second)."""

        def synced() -> bool:
            replica = info(replica_port, "replication")
            if replica["role"] != "slave" or replica["master_link_status"] != "up":
                return False
            master = info(int(replica["master_port"]), "replication")
            return replica["slave_repl_offset"] == master["master_repl_offset"]

        wait_until(synced, timeout, f"the replica on {replica_port} to catch up")

    def wait_until_ready(self, timeout: float = 20.0) -> None:
        """Wait until every sentinel sees the master up and a healthy replica it
        could promote (what a failover needs)."""

        def ready() -> bool:
            for sentinel in self.sentinels:
                master = redis_call(sentinel.port, "SENTINEL", "MASTER", self.master_name)
                if not isinstance(master, list) or _pairs(master)["flags"] != "master":
                    return False
                replicas = redis_call(sentinel.port, "SENTINEL", "REPLICAS", self.master_name)
                if not any(
                    r["flags"] == "slave" and r["master-link-status"] == "ok"
                    for r in map(_pairs, replicas)
                ):
                    return False
            return True

        wait_until(ready, timeout, "the sentinels to see a master and a healthy replica")

    def demote(self, port: int, master_port: int, timeout: float = 20.0) -> None:
        """Make the data server on ``port`` a replica of ``master_port`` with
        ``REPLICAOF`` (what Sentinel sends a master it has replaced, but without
        the ``CLIENT KILL`` it adds), and wait until it has synced."""
        reply = redis_call(port, "REPLICAOF", "127.0.0.1", master_port)
        assert str(reply).startswith("OK"), reply  # or "OK Already connected ..."
        self.wait_for_link(port, timeout)

    def switch_over(self, timeout: float = 30.0) -> None:
        """Ask the first sentinel for a failover now (``SENTINEL FAILOVER``),
        retrying while it has no replica it considers fit yet."""

        def accepted() -> bool:
            reply = redis_call(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.master_name)
            return reply == "OK"

        wait_until(accepted, timeout, "Sentinel to accept SENTINEL FAILOVER")

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.data.values():
            server.close()

    def __enter__(self) -> SentinelSetup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
