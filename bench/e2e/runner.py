"""Processes for the benchmarks that run servers: servers on CPU 0, the load generator on CPU 1.

Every server is a subprocess started from this folder (so the app modules import
as top-level modules), pinned with ``taskset -c 0``; every load generator run is
a Node.js subprocess pinned with ``taskset -c 1``. Both are always killed on the
way out, and every wait is bounded. ``bench_e2e.py`` and ``bench_scale_out.py``
start their servers through :func:`spawn`; ``bench_scale_out.py`` and
``bench_redis_concurrency.py`` get a private Redis from :func:`redis_server`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Variant:
    """One server setup: which program serves which app module on which loop."""

    key: str
    label: str
    server: str  # "hypercorn", "serve" (channels-runtime serve) or "daphne"
    module: str  # raw_app, runtime_app or channels_app
    worker_class: str = "asyncio"
    #: ``channels-runtime serve`` only: the whole hypercorn.toml ("" for serve's defaults).
    config: str = ""
    #: Extra environment variables for the server process.
    env: tuple[tuple[str, str], ...] = ()

    def command(self, port: int) -> list[str]:
        if self.server == "hypercorn":
            return [
                str(BIN / "hypercorn"),
                "--workers",
                "0",  # serve in this process, no supervisor parent
                "--worker-class",
                self.worker_class,
                "--bind",
                f"{HOST}:{port}",
                f"{self.module}:application",
            ]
        if self.server == "serve":
            return [
                str(BIN / "channels-runtime"),
                "serve",
                f"{self.module}:application",
                "--worker-class",
                self.worker_class,
                "--bind",
                f"{HOST}:{port}",
                "--log-level",
                "warning",
                *(["--config", str(self.config_path())] if self.config else []),
            ]
        if self.server == "daphne":
            return [
                str(BIN / "daphne"),
                "-b",
                HOST,
                "-p",
                str(port),
                "-v",
                "0",
                f"{self.module}:application",
            ]
        raise ValueError(f"unknown server {self.server!r}")

    def config_path(self) -> Path:
        """Where this variant's hypercorn.toml is written (next to the server log)."""
        return Path(tempfile.gettempdir()) / f"bench_e2e_{self.key}.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


class Server:
    """A running server subprocess and what can be read about it."""

    def __init__(self, variant: Variant, proc: subprocess.Popen[bytes], port: int) -> None:
        self.variant = variant
        self.proc = proc
        self.port = port
        import psutil  # imported here: bench_redis_concurrency.py runs without it

        self.ps = psutil.Process(proc.pid)

    def url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}/{path}"

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)


@contextlib.contextmanager
def spawn(
    name: str,
    command: list[str],
    port: int,
    log: Path,
    env: Iterable[tuple[str, str]] = (),
    cpus: str = SERVER_CPU,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` from this folder pinned to ``cpus``, its output appended to
    ``log``; wait until it accepts on ``port``, and stop it (SIGTERM, then
    SIGKILL) on the way out."""
    environ = dict(os.environ)
    environ.pop("DJANGO_SETTINGS_MODULE", None)  # each app module is its own settings
    environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), str(REPO), environ.get("PYTHONPATH")])
    )
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(env)
    with open(log, "ab") as out:
        out.write(f"\n=== {name} on port {port}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            ["taskset", "-c", cpus, *command],
            cwd=HERE,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, name, log, startup_timeout)
        yield proc
    finally:
        stop(proc)


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes],
    name: str,
    log: Path | str,
    timeout: float = STARTUP_TIMEOUT,
) -> None:
    """Wait until something accepts on ``port``; fail if ``proc`` exits first or
    nothing listens within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen within {timeout}s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if that has not ended it within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running(variant: Variant, log: Path) -> Iterator[Server]:
    """Start ``variant`` on a free port (CPU 0), wait until it accepts, stop it on exit."""
    port = free_port()
    if variant.config:
        variant.config_path().write_text(variant.config)
    with spawn(variant.key, variant.command(port), port, log, variant.env) as proc:
        yield Server(variant, proc, port)


@contextlib.contextmanager
def redis_server(cpus: str | None = LOADGEN_CPU) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private ``redis-server`` on a free port (no persistence, its own
    directory), pinned to ``cpus`` (None: not pinned); yields its URL and process.

    The benchmarks that compare layers on one Redis use their own server so that
    nothing else talks to it while they measure, and so that its CPU time and
    ``INFO commandstats`` belong to the run alone.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "redis-server is not installed (apt-get install redis-server), or pass --redis"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    command = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    command += ["--dir", workdir]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, "redis-server", "(its output is discarded)")
        yield f"redis://{HOST}:{port}/0", proc
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def ensure_node_deps() -> None:
    """``npm install`` the load generator's one dependency (ws) into this folder if missing."""
    if shutil.which("node") is None:
        raise SystemExit("bench_e2e needs Node.js (node) for the load generator")
    if (HERE / "node_modules" / "ws" / "package.json").exists():
        return
    print("installing the load generator's dependency (npm install ws)...", file=sys.stderr)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=300)


def _pinned(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus is not None else []


# -- talking to Redis without a client library ------------------------------------


def resp(*args: Any) -> bytes:
    """One command in RESP, the Redis wire format."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        data += chunk
    return data


def redis_info(address: tuple[str, int], section: str) -> dict[str, str]:
    """One ``INFO`` section as a dict (a short blocking connection of its own)."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(resp("INFO", section))
        header = recv_line(sock)
        text = recv_exactly(sock, int(header[1:]) + 2).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class CpuClock(Protocol):
    """Anything whose CPU time can be read: a :class:`Server`, or several processes."""

    def cpu_seconds(self) -> float: ...


def loadgen(
    mode: str,
    options: dict[str, Any],
    server: CpuClock | None = None,
    timeout: float = 120.0,
    clocks: Mapping[str, CpuClock] | None = None,
    cpus: str | None = LOADGEN_CPU,
) -> dict[str, Any]:
    """Run the Node.js load generator on CPU 1 and return its JSON result.

    With ``server``, the result also gets ``server_cpu_s``: the server's CPU time
    between the load generator's "mark begin" and "mark end" lines; every clock in
    ``clocks`` adds ``<name>_cpu_s`` the same way. Marks with a tag ("mark begin
    step3") give ``result["cpu"]["step3"][name]`` instead, one per measured step.
    ``cpus`` is its ``taskset`` CPU list (None: not pinned).
    """
    import json

    every = dict(clocks or {})
    if server is not None:
        every["server"] = server
    command = [*_pinned(cpus), "node", str(HERE / "loadgen.mjs"), mode]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    command += ["--timeout", str(timeout)]
    proc = subprocess.Popen(
        command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(timeout + 15, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        begun: dict[str, dict[str, float]] = {}
        spent: dict[str, dict[str, float]] = {}
        last = ""
        for line in proc.stdout:
            line = line.strip()
            words = line.split()
            if len(words) in (2, 3) and words[0] == "mark" and words[1] in ("begin", "end"):
                tag = words[2] if len(words) == 3 else ""
                now = {name: clock.cpu_seconds() for name, clock in every.items()}
                if words[1] == "begin":
                    begun[tag] = now
                elif tag in begun:
                    spent[tag] = {name: now[name] - begun[tag][name] for name in now}
            elif line:
                last = line
        proc.wait(timeout=15)
        if proc.returncode != 0:
            assert proc.stderr is not None
            raise RuntimeError(f"load generator ({mode}) failed: {proc.stderr.read().strip()}")
        result: dict[str, Any] = json.loads(last)
        for name, seconds in spent.pop("", {}).items():
            result[f"{name}_cpu_s"] = seconds
        if spent:
            result["cpu"] = spent
        return result
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def idle_clients(
    url: str, conns: int, timeout: float = 120.0, cpus: str | None = LOADGEN_CPU
) -> Iterator[int]:
    """Hold ``conns`` open WebSocket connections to ``url`` (from CPU 1) while inside."""
    command = [*_pinned(cpus), "node", str(HERE / "loadgen.mjs"), "idle"]
    command += ["--url", url, "--conns", str(conns), "--timeout", str(timeout)]
    proc = subprocess.Popen(
        command,
        cwd=HERE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(timeout + 15, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "ready":
            assert proc.stderr is not None
            proc.kill()
            raise RuntimeError(f"idle clients failed: {proc.stderr.read().strip()}")
        yield int(line[1])
        proc.stdin.write("close\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def machine() -> str:
    """One line describing the machine and the software versions."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import psutil

    memory = psutil.virtual_memory().total / 2**30
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("Django", "anyio", "Hypercorn", "trio", "uvloop", "channels", "daphne")
    )
    return (
        f"{os.cpu_count()} CPUs ({model}), {memory:.0f} GiB, Linux {platform.release()}, "
        f"CPython {platform.python_version()}, {versions}, Node.js {node} with ws"
    )
