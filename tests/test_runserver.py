"""``manage.py runserver`` (Hypercorn, autoreload, static files) and the system check.

The server tests run a small project, written to a temporary directory, with
``manage.py runserver`` in a real subprocess and talk to it over real sockets.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from django.core.management import CommandError, call_command, get_commands
from django.test import override_settings
from websockets.sync.client import connect

from channels_runtime.checks import E001, check_installed_before_staticfiles

TIMEOUT = 15.0
URL_LINE = re.compile(r"development server \((\w+)\) at (http://[^/\s]+)/")


class ServerProcess:
    """A server subprocess whose combined output is collected line by line.

    It runs in its own session so that stopping it reaches every process it
    started (the autoreloader runs the server in a child process).
    """

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(
        self, pattern: re.Pattern[str] | str, *, count: int = 1, timeout: float = TIMEOUT
    ) -> re.Match[str]:
        """The ``count``-th output line matching ``pattern``; fails after ``timeout`` s."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"{regex.pattern!r} (x{count}) not seen in the output of "
                        f"{' '.join(self.args)} (exit code {self.process.poll()}):\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 0.2))

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return code

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """Make sure nothing is left running (always called in ``finally``).

        The whole session is killed even if its leader has exited: the
        autoreloader's server process may have outlived it.
        """
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def running(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(args, cwd=cwd, env=env)
    try:
        yield server
    finally:
        server.kill()


# -- a small project ---------------------------------------------------------------

SETTINGS = """
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "runserver-tests"
DEBUG = os.environ.get("MINI_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels_runtime", "django.contrib.staticfiles", "miniproj"]
ASGI_APPLICATION = "miniproj.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"}}
if os.environ.get("MINI_REDIS_URL"):
    CHANNEL_LAYERS["default"] = {
        "BACKEND": "channels_runtime.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["MINI_REDIS_URL"]], "prefix": "mini"},
    }
STATIC_URL = "static/"
USE_TZ = True
"""

ASGI = """
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miniproj.settings")

import django

django.setup()

from django.urls import path

from channels_runtime.compat.backend import current_backend
from channels_runtime.consumer import AsyncConsumer
from channels_runtime.generic.http import AsyncHttpConsumer
from channels_runtime.generic.websocket import AsyncWebsocketConsumer
from channels_runtime.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter

VERSION = "{version}"


class Hello(AsyncHttpConsumer):
    async def handle(self, body):
        text = f"hello {{VERSION}} from {{current_backend()}}"
        await self.send_response(200, text.encode(), headers=[(b"content-type", b"text/plain")])


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data="echo:" + text_data)


class Tasks(AsyncConsumer):
    async def task_write(self, message):
        # Written under a temporary name and renamed, so a reader never sees half.
        target = message["path"]
        with open(target + ".part", "w") as file:
            file.write(message["text"] + " on " + current_backend())
        os.replace(target + ".part", target)


application = ProtocolTypeRouter(
    {{
        "http": URLRouter([path("hello/", Hello.as_asgi())]),
        "websocket": URLRouter([path("ws/", Echo.as_asgi())]),
        "channel": ChannelNameRouter({{"tasks": Tasks.as_asgi()}}),
    }}
)
"""

MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miniproj.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    package = tmp_path / "miniproj"
    (package / "static" / "miniproj").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(SETTINGS)
    (package / "asgi.py").write_text(ASGI.format(version="1"))
    (package / "static" / "miniproj" / "hello.txt").write_text("static hello\n")
    (tmp_path / "manage.py").write_text(MANAGE)
    return tmp_path


def runserver(*args: str) -> list[str]:
    return [sys.executable, "manage.py", "runserver", *args]


def base_url(server: ServerProcess, *, count: int = 1) -> str:
    return server.wait_for(URL_LINE, count=count).group(2)


def echo(url: str) -> str:
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send("hi")
        reply = ws.recv(timeout=TIMEOUT)
    assert isinstance(reply, str)
    return reply


# -- serving -------------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", ["asyncio", "uvloop", "trio"])
def test_serves_http_websockets_and_static_files(project: Path, worker_class: str) -> None:
    with running(
        runserver("127.0.0.1:0", "--noreload", "--worker-class", worker_class), cwd=project
    ) as server:
        url = base_url(server)
        assert server.wait_for(URL_LINE).group(1) == worker_class
        output = server.output
        assert "Performing system checks..." in output
        assert "System check identified no issues" in output
        assert "Django version " in output
        assert "using settings 'miniproj.settings'" in output
        assert "Quit the server with CONTROL-C." in output

        backend = "trio" if worker_class == "trio" else "asyncio"
        response = httpx.get(f"{url}/hello/", timeout=TIMEOUT)
        assert response.text == f"hello 1 from {backend}"

        static = httpx.get(f"{url}/static/miniproj/hello.txt", timeout=TIMEOUT)
        assert static.status_code == 200
        assert static.text == "static hello\n"
        assert static.headers["content-type"].startswith("text/plain")
        head = httpx.head(f"{url}/static/miniproj/hello.txt", timeout=TIMEOUT)
        assert head.status_code == 200
        assert head.content == b""
        missing = httpx.get(f"{url}/static/miniproj/nope.txt", timeout=TIMEOUT)
        assert missing.status_code == 404

        ws_url = url.replace("http://", "ws://")
        assert echo(f"{ws_url}/ws/") == "echo:hi"

        # Ctrl-C stops it cleanly.
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 0


@pytest.mark.parametrize(
    ("debug", "flags", "status"),
    [
        ("1", [], 200),
        ("1", ["--nostatic"], 404),
        ("0", [], 404),
        ("0", ["--insecure"], 200),
    ],
    ids=["debug", "debug-nostatic", "no-debug", "no-debug-insecure"],
)
def test_static_files_follow_djangos_rules(
    project: Path, debug: str, flags: list[str], status: int
) -> None:
    with running(
        runserver("127.0.0.1:0", "--noreload", "-k", "trio", *flags),
        cwd=project,
        env={"MINI_DEBUG": debug},
    ) as server:
        url = base_url(server)
        response = httpx.get(f"{url}/static/miniproj/hello.txt", timeout=TIMEOUT)
        assert response.status_code == status


def test_autoreload_restarts_the_server_when_code_changes(project: Path) -> None:
    with running(runserver("127.0.0.1:0", "-k", "trio"), cwd=project) as server:
        server.wait_for("Watching for file changes")
        first = base_url(server)
        assert httpx.get(f"{first}/hello/", timeout=TIMEOUT).text == "hello 1 from trio"

        asgi = project / "miniproj" / "asgi.py"
        asgi.write_text(ASGI.format(version="2"))
        # Django's StatReloader takes its first snapshot of modification times
        # some time after starting (longer on a loaded machine); a change made
        # before that snapshot is its baseline, not a change. So the file's
        # time is moved on until the reloader reacts.
        mtime = asgi.stat().st_mtime
        for _attempt in range(int(TIMEOUT / 2)):
            mtime += 2
            os.utime(asgi, (mtime, mtime))
            try:
                server.wait_for(r"asgi\.py changed, reloading", timeout=2.0)
                break
            except AssertionError:
                continue
        server.wait_for(r"asgi\.py changed, reloading")
        second = base_url(server, count=2)
        assert httpx.get(f"{second}/hello/", timeout=TIMEOUT).text == "hello 2 from trio"


def test_port_in_use_is_reported(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with running(runserver(f"127.0.0.1:{port}", "--noreload"), cwd=project) as server:
            assert server.wait_exit() == 1
            assert "Error: That port is already in use." in server.output


def test_missing_asgi_application_is_a_command_error() -> None:
    # The suite's settings list channels_runtime, so its runserver is the one found.
    assert get_commands()["runserver"] == "channels_runtime"
    with (
        override_settings(ASGI_APPLICATION=None),
        pytest.raises(CommandError, match="ASGI_APPLICATION"),
    ):
        call_command("runserver", "--noreload")


# -- runworker -------------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", ["asyncio", "trio"])
def test_runworker_runs_channel_consumers(project: Path, worker_class: str) -> None:
    from redis_server import RedisServer

    from channels_runtime.layers.redis import RedisChannelLayer

    with (
        RedisServer() as redis,
        running(
            [sys.executable, "manage.py", "runworker", "tasks", "-k", worker_class],
            cwd=project,
            env={"MINI_REDIS_URL": redis.url},
        ) as worker,
    ):
        worker.wait_for(r"Running worker for channel\(s\) tasks")
        target = project / "done.txt"

        async def send() -> None:
            layer = RedisChannelLayer(hosts=[redis.url], prefix="mini")
            try:
                await layer.send(
                    "tasks", {"type": "task.write", "path": str(target), "text": "written"}
                )
            finally:
                await layer.close()

        anyio.run(send)
        deadline = time.monotonic() + TIMEOUT
        while not target.exists():
            assert worker.process.poll() is None, worker.output
            assert time.monotonic() < deadline, f"no task result; worker said:\n{worker.output}"
            time.sleep(0.05)
        backend = "trio" if worker_class == "trio" else "asyncio"
        assert target.read_text() == f"written on {backend}"

        worker.signal(signal.SIGINT)
        assert worker.wait_exit() == 0, worker.output
        assert "Worker stopped." in worker.output


def test_runworker_needs_a_configured_layer() -> None:
    with (
        override_settings(ASGI_APPLICATION="channels_runtime.routing.ChannelNameRouter"),
        pytest.raises(CommandError, match="No channel layer 'missing'"),
    ):
        call_command("runworker", "tasks", "--layer", "missing")


def test_runworker_needs_an_application() -> None:
    with (
        override_settings(ASGI_APPLICATION=None),
        pytest.raises(CommandError, match="ASGI_APPLICATION"),
    ):
        call_command("runworker", "tasks")


# -- the system check ------------------------------------------------------------------

BASE_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]


def test_check_passes_when_channels_runtime_comes_first() -> None:
    apps = ["channels_runtime", *BASE_APPS, "django.contrib.staticfiles"]
    with override_settings(INSTALLED_APPS=apps):
        assert check_installed_before_staticfiles() == []
        assert get_commands()["runserver"] == "channels_runtime"


def test_check_passes_without_staticfiles() -> None:
    with override_settings(INSTALLED_APPS=[*BASE_APPS, "channels_runtime"]):
        assert check_installed_before_staticfiles() == []


def test_check_fails_when_staticfiles_comes_first() -> None:
    from django.core.checks import Error, run_checks

    apps = [*BASE_APPS, "django.contrib.staticfiles", "channels_runtime"]
    with override_settings(INSTALLED_APPS=apps):
        # Without the check, this is what `manage.py runserver` would silently run.
        assert get_commands()["runserver"] == "django.contrib.staticfiles"
        [error] = check_installed_before_staticfiles()
        assert isinstance(error, Error)
        assert error.id == E001 == "channels_runtime.E001"
        assert "above 'django.contrib.staticfiles'" in (error.hint or "")
        # Registered with Django's check framework, under the staticfiles tag.
        assert E001 in [message.id for message in run_checks(tags=["staticfiles"])]


def test_manage_py_check_reports_the_order(project: Path) -> None:
    settings_file = project / "miniproj" / "settings.py"
    settings_file.write_text(
        SETTINGS.replace(
            '["channels_runtime", "django.contrib.staticfiles", "miniproj"]',
            '["django.contrib.staticfiles", "channels_runtime", "miniproj"]',
        )
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert "channels_runtime.E001" in result.stderr
