"""An unmodified Channels project, served by real processes.

``tests/unmodified_project`` is written the way Django Channels' documentation
writes a project (``asgi.py`` imports ``channels.routing`` first and maps
``django.core.asgi.get_asgi_application()``, the settings list ``"daphne"``
and ``"channels"`` and use ``channels_redis.core.RedisChannelLayer``), plus
``"channels_runtime"`` in ``INSTALLED_APPS``. Here it is served by
``channels-runtime serve`` on asyncio, uvloop and trio, with a Django page and a
WebSocket chat through a real Redis; migrated with ``manage.py``; served by plain
``hypercorn`` with the one documented line; and refused, with exit status 2 and
the fix, where something cannot run on trio.

Django Channels, Daphne and channels_redis are installed in the test
environment (the reference implementation), so every run here also checks the
rule for that case: the alias takes over, and says so once.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from e2e_app.harness import (
    REPO,
    Server,
    base_env,
    cli_command,
    hypercorn_command,
    wait_until,
)
from redis_server import RedisServer, redis_call
from websockets.sync.client import ClientConnection, connect

PROJECT = REPO / "tests" / "unmodified_project"
WORKER_CLASSES = ["asyncio", "uvloop", "trio"]
TIMEOUT = 10
INDEX_TEXT = "Chat rooms: type a room name to join"

#: The line docs/running-unmodified-channels-projects.md tells plain-hypercorn users to add.
ENABLE_LINE = "import channels_runtime.alias.enable  # noqa: F401"

ALIAS_LINE = "channels_runtime stands in for channels, channels_redis and daphne"
SUBSTITUTION_LINE = "Django's ASGIHandler (django.core.asgi.get_asgi_application()) is served"


@pytest.fixture(scope="module")
def redis() -> object:
    with RedisServer() as server:
        yield server


def project_env(**extra: str) -> dict[str, str]:
    """The subprocess environment: the repository importable, no alias switch inherited."""
    env = base_env(**extra)
    if "CHANNELS_RUNTIME_ALIAS" not in extra:
        env.pop("CHANNELS_RUNTIME_ALIAS", None)
    return env


def copy_project(tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(PROJECT, target, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    return target


def serve(tmp_path: Path, worker_class: str, env: dict[str, str], cwd: Path = PROJECT) -> Server:
    return Server(
        [*cli_command(), "serve", "mysite.asgi", "-b", "127.0.0.1:0", "-k", worker_class],
        log_path=tmp_path / f"serve-{worker_class}.log",
        env=env,
        cwd=cwd,
    )


def join(server: Server, room: str, stack: ExitStack) -> ClientConnection:
    # AllowedHostsOriginValidator wants an Origin from ALLOWED_HOSTS.
    return stack.enter_context(
        connect(
            f"{server.ws_url}/ws/chat/{room}/",
            origin=server.url,
            open_timeout=TIMEOUT,
            close_timeout=5,
        )
    )


def chat_round_trip(server: Server, room: str, redis: RedisServer, prefix: str) -> None:
    """Two members of a room; what one says reaches both, through the Redis group."""
    with ExitStack() as stack:
        alice, bob = join(server, room, stack), join(server, room, stack)
        # The group lives in Redis: the layer is the Redis one, not a local stand-in.
        assert f"{prefix}:gr:chat_{room}" in redis_call(redis.port, "KEYS", f"{prefix}:*")
        alice.send(json.dumps({"message": f"hello from {room}"}))
        for member in (alice, bob):
            assert json.loads(member.recv(timeout=TIMEOUT)) == {"message": f"hello from {room}"}


def shadowed() -> list[str]:
    """What the alias's warning names: the reference packages installed here."""
    found = []
    for distribution in ("channels", "channels-redis", "daphne"):
        try:
            found.append(f"{distribution} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def check_alias_line(log: str, route: str) -> None:
    lines = [line for line in log.splitlines() if ALIAS_LINE in line]
    if not shadowed():
        assert lines == [], log
        return
    assert len(lines) == 1, log
    assert f"alias installed by {route}" in lines[0]
    for name in shadowed():
        assert name in lines[0], lines[0]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_serve_runs_the_unmodified_project(
    worker_class: str, tmp_path: Path, redis: RedisServer
) -> None:
    prefix = f"unmodified-{worker_class}"
    server = serve(
        tmp_path,
        worker_class,
        project_env(CHAT_REDIS_URL=redis.url, CHAT_LAYER_PREFIX=prefix),
    )
    try:
        server.start(health_path="/chat/")
        response = httpx.get(server.url + "/chat/", timeout=TIMEOUT)
        assert (response.status_code, response.text) == (200, INDEX_TEXT)
        chat_round_trip(server, "lobby", redis, prefix)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        log = server.log()
        check_alias_line(log, "channels-runtime serve")
        assert SUBSTITUTION_LINE in log
        assert (
            "channel layer channels_redis.core.RedisChannelLayer (channels_runtime's "
            "channels_runtime.layers.redis.core.RedisChannelLayer)"
        ) in log
        assert "Traceback" not in log
    finally:
        server.close()


def run_manage(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=project_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_py_migrate_and_check(tmp_path: Path) -> None:
    database = str(tmp_path / "db.sqlite3")
    done = run_manage(PROJECT, "migrate", CHAT_DATABASE=database)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Applying sessions.0001_initial... OK" in done.stdout
    check_alias_line(done.stderr, "'channels_runtime' in INSTALLED_APPS")
    done = run_manage(PROJECT, "check", CHAT_DATABASE=database)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    # "daphne" and "channels" are apps labelled as in Channels, serving channels_runtime's
    # commands: the runserver Django picks is channels_runtime's.
    done = run_manage(PROJECT, "help", "runserver", CHAT_DATABASE=database)
    assert "--worker-class" in done.stdout, done.stdout + done.stderr


def test_runserver_serves_the_unmodified_project_on_trio(
    tmp_path: Path, redis: RedisServer
) -> None:
    """``"daphne"`` in INSTALLED_APPS: Django runs channels_runtime's runserver."""
    prefix = "runserver-trio"
    server = Server(
        [sys.executable, "manage.py", "runserver", "--noreload", "-k", "trio", "127.0.0.1:0"],
        log_path=tmp_path / "runserver.log",
        env=project_env(
            CHAT_REDIS_URL=redis.url,
            CHAT_LAYER_PREFIX=prefix,
            CHAT_DATABASE=str(tmp_path / "db.sqlite3"),
        ),
        cwd=PROJECT,
    )
    try:
        server.start(health_path="/chat/")
        assert "Starting ASGI/Hypercorn development server (trio)" in server.log()
        assert httpx.get(server.url + "/chat/", timeout=TIMEOUT).text == INDEX_TEXT
        chat_round_trip(server, "dev", redis, prefix)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        check_alias_line(server.log(), "'channels_runtime' in INSTALLED_APPS")
        assert SUBSTITUTION_LINE in server.log()
    finally:
        server.close()


WORKER_SETTINGS = """import os
SECRET_KEY = "worker"
INSTALLED_APPS = ["channels"]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["CHAT_REDIS_URL"]], "prefix": "worker"},
    }
}
"""

WORKER_APP = """import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasks.settings")
from pathlib import Path

from channels.consumer import SyncConsumer
from channels.routing import ChannelNameRouter, ProtocolTypeRouter


class Thumbnails(SyncConsumer):
    def make_thumbnail(self, message):
        Path(os.environ["WORKER_OUT"]).write_text(message["image"])


application = ProtocolTypeRouter({"channel": ChannelNameRouter({"thumbs": Thumbnails.as_asgi()})})
"""


def test_channels_runtime_worker_runs_a_channels_style_consumer_on_trio(
    tmp_path: Path, redis: RedisServer
) -> None:
    import anyio

    from channels_runtime.layers.redis import RedisChannelLayer

    package = tmp_path / "tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(WORKER_SETTINGS)
    (package / "asgi.py").write_text(WORKER_APP)
    out = tmp_path / "thumbnail.txt"
    worker = Server(
        [
            *cli_command(),
            "worker",
            "thumbs",
            "--application",
            "tasks.asgi.application",
            "-k",
            "trio",
        ],
        log_path=tmp_path / "worker.log",
        env=project_env(CHAT_REDIS_URL=redis.url, WORKER_OUT=str(out)),
        cwd=tmp_path,
    )
    try:
        worker.wait_for_log("Worker running for channel thumbs")
        assert "channels_runtime.layers.redis.core.RedisChannelLayer" in worker.log()

        async def send() -> None:
            layer = RedisChannelLayer(hosts=[redis.url], prefix="worker")
            await layer.send("thumbs", {"type": "make.thumbnail", "image": "cat.png"})
            await layer.close()

        anyio.run(send)
        wait_until(out.exists, message=f"no thumbnail made:\n{worker.log()}")
        assert out.read_text() == "cat.png"
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.log()
        check_alias_line(worker.log(), "channels-runtime")
    finally:
        worker.close()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_plain_hypercorn_with_the_documented_line(
    worker_class: str, tmp_path: Path, redis: RedisServer
) -> None:
    page = (REPO / "docs" / "running-unmodified-channels-projects.md").read_text()
    assert ENABLE_LINE in page
    project = copy_project(tmp_path)
    asgi = project / "mysite" / "asgi.py"
    source = asgi.read_text()
    asgi.write_text(source.replace("import os\n", f"{ENABLE_LINE}\nimport os\n", 1))
    prefix = f"hypercorn-{worker_class}"
    server = Server(
        [
            *hypercorn_command(),
            "--config",
            str(REPO / "hypercorn.toml"),
            "mysite.asgi:application",
            "-b",
            "127.0.0.1:0",
            "-k",
            worker_class,
        ],
        log_path=tmp_path / "hypercorn.log",
        env=project_env(CHAT_REDIS_URL=redis.url, CHAT_LAYER_PREFIX=prefix),
        cwd=project,
    )
    try:
        server.start(health_path="/chat/")
        assert httpx.get(server.url + "/chat/", timeout=TIMEOUT).text == INDEX_TEXT
        chat_round_trip(server, "hall", redis, prefix)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        check_alias_line(server.log(), "import channels_runtime.alias.enable")
        assert "Traceback" not in server.log()
    finally:
        server.close()


def test_without_the_line_plain_hypercorn_says_what_to_do(tmp_path: Path) -> None:
    """The tutorial's asgi.py imports channels before Django (and channels_runtime) is set up."""
    if not shadowed():
        pytest.skip("needs Django Channels installed: the import of channels succeeds first")
    done = subprocess.run(
        [sys.executable, "-c", "import mysite.asgi"],
        cwd=PROJECT,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "'channels_runtime' in INSTALLED_APPS cannot make channels_runtime stand in" in (
        done.stderr
    )
    assert "import channels_runtime.alias.enable' the first import of asgi.py" in done.stderr


# -- the off switch ------------------------------------------------------------------


def test_alias_off_serves_the_installed_channels_on_asyncio(
    tmp_path: Path, redis: RedisServer
) -> None:
    if not shadowed():
        pytest.skip("needs Django Channels and channels_redis installed")
    prefix = "alias-off"
    server = serve(
        tmp_path,
        "asyncio",
        project_env(CHAT_REDIS_URL=redis.url, CHAT_LAYER_PREFIX=prefix, CHANNELS_RUNTIME_ALIAS="0"),
    )
    try:
        server.start(health_path="/chat/")
        assert httpx.get(server.url + "/chat/", timeout=TIMEOUT).text == INDEX_TEXT
        with ExitStack() as stack:
            alice, bob = join(server, "off", stack), join(server, "off", stack)
            # channels_redis's own key layout, not channels_runtime's.
            keys = redis_call(redis.port, "KEYS", f"{prefix}:*")
            assert f"{prefix}:group:chat_off" in keys, keys
            alice.send(json.dumps({"message": "from Channels"}))
            assert json.loads(bob.recv(timeout=TIMEOUT)) == {"message": "from Channels"}
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        log = server.log()
        assert ALIAS_LINE not in log
        assert SUBSTITUTION_LINE not in log  # Channels' own router keeps Django's handler
    finally:
        server.close()


@pytest.mark.parametrize("switch", ["environment", "settings"])
def test_alias_off_on_trio_is_refused_with_the_fix(switch: str, tmp_path: Path) -> None:
    if not shadowed():
        pytest.skip("needs channels_redis installed")
    env = project_env(CHANNELS_RUNTIME_ALIAS="0") if switch == "environment" else project_env()
    project = PROJECT
    if switch == "settings":
        project = copy_project(tmp_path)
        settings = project / "mysite" / "settings.py"
        settings.write_text(settings.read_text() + "\nCHANNELS_RUNTIME_ALIAS = False\n")
    server = serve(tmp_path, "trio", env, cwd=project)
    try:
        assert server.wait(30) == 2, server.log()
        log = server.log()
        assert (
            "CHANNEL_LAYERS['default']['BACKEND'] = 'channels_redis.core.RedisChannelLayer' is "
            "channels_redis.core.RedisChannelLayer, a channel layer that runs on asyncio only, "
            "so it cannot run on worker class 'trio'"
        ) in log
        assert "turn the channels_runtime alias back on" in log
        assert "set BACKEND to channels_runtime.layers.redis.RedisChannelLayer" in log
        assert "--worker-class asyncio" in log
        assert "serving" not in log
        assert "Traceback" not in log
    finally:
        server.close()


def test_runserver_on_trio_refuses_an_asyncio_only_layer(tmp_path: Path) -> None:
    if not shadowed():
        pytest.skip("needs channels_redis installed")
    done = run_manage(
        PROJECT,
        "runserver",
        "--noreload",
        "-k",
        "trio",
        "127.0.0.1:0",
        CHANNELS_RUNTIME_ALIAS="0",
        CHAT_DATABASE=str(tmp_path / "db.sqlite3"),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CommandError: CHANNEL_LAYERS['default']['BACKEND']" in done.stderr
    assert "cannot run on worker class 'trio'" in done.stderr


# -- fail fast: what cannot run on trio ------------------------------------------------

SETTINGS = """\
SECRET_KEY = "fail-fast"
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["channels_runtime", "django.contrib.auth", "django.contrib.contenttypes"]
ROOT_URLCONF = "failfast.urls"
ASGI_APPLICATION = "failfast.asgi.application"
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}}
CHANNEL_LAYERS = {{"default": {{"BACKEND": {backend!r}}}}}
USE_TZ = True
STATIC_URL = "static/"
"""

URLS = """\
from django.http import HttpResponse
from django.urls import path

urlpatterns = [path("health/", lambda request: HttpResponse("ok"))]
"""

ASGI_HEAD = """\
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "failfast.settings")
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()
"""

OURS = "channels_runtime.layers.InMemoryChannelLayer"

#: name -> (asgi.py body after ASGI_HEAD, layer BACKEND, alias switch, expected message)
REFUSED = {
    "channels-inmemory-layer": (
        "from channels_runtime.routing import ProtocolTypeRouter\n"
        "application = ProtocolTypeRouter({'http': django_asgi_app})\n",
        "channels.layers.InMemoryChannelLayer",
        "0",
        "CHANNEL_LAYERS['default']['BACKEND'] = 'channels.layers.InMemoryChannelLayer' is "
        "channels.layers.InMemoryChannelLayer, a channel layer that runs on asyncio only",
    ),
    "channels-redis-pubsub-layer": (
        "application = django_asgi_app\n",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
        "0",
        "is channels_redis.pubsub.RedisPubSubChannelLayer, a channel layer that runs on "
        "asyncio only",
    ),
    "asgi-handler-subclass": (
        "from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler\n"
        "application = ASGIStaticFilesHandler(django_asgi_app)\n",
        OURS,
        "",
        "The application failfast.asgi:application is "
        "django.contrib.staticfiles.handlers.ASGIStaticFilesHandler (an ASGIHandler "
        "subclass), which runs on asyncio only",
    ),
    "asgi-handler-in-middleware": (
        "from channels_runtime.middleware import BaseMiddleware\n"
        "from channels_runtime.routing import ProtocolTypeRouter\n"
        "application = ProtocolTypeRouter({'http': BaseMiddleware(django_asgi_app)})\n",
        OURS,
        "",
        "The application failfast.asgi:application -> 'http' -> inner is Django's "
        "ASGIHandler, which runs on asyncio only",
    ),
    "channels-router": (
        "from channels.routing import ProtocolTypeRouter\n"
        "application = ProtocolTypeRouter({'http': django_asgi_app})\n",
        OURS,
        "0",
        "The application failfast.asgi:application is built on Django Channels' "
        "channels.routing.ProtocolTypeRouter, which runs on asyncio only",
    ),
    "channels-consumer": (
        "from channels.generic.websocket import AsyncWebsocketConsumer\n"
        "from django.urls import path\n"
        "from channels_runtime.routing import ProtocolTypeRouter, URLRouter\n"
        "class Echo(AsyncWebsocketConsumer):\n"
        "    pass\n"
        "application = ProtocolTypeRouter({'websocket': URLRouter("
        "[path('ws/', Echo.as_asgi())])})\n",
        OURS,
        "0",
        "The application failfast.asgi:application -> 'websocket' -> route 'ws/' -> "
        "consumer Echo is built on Django Channels' channels.generic.websocket."
        "AsyncWebsocketConsumer, which runs on asyncio only",
    ),
}


def fail_fast_project(tmp_path: Path, asgi_body: str, backend: str) -> Path:
    package = tmp_path / "failfast"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(SETTINGS.format(backend=backend))
    (package / "urls.py").write_text(URLS)
    (package / "asgi.py").write_text(ASGI_HEAD + asgi_body)
    return tmp_path


@pytest.mark.parametrize("case", list(REFUSED))
def test_serve_on_trio_refuses_what_runs_on_asyncio_only(case: str, tmp_path: Path) -> None:
    asgi_body, backend, switch, expected = REFUSED[case]
    if switch == "0" and not shadowed():
        pytest.skip("needs Django Channels and channels_redis installed")
    project = fail_fast_project(tmp_path, asgi_body, backend)
    env = project_env(CHANNELS_RUNTIME_ALIAS=switch) if switch else project_env()
    server = Server(
        [*cli_command(), "serve", "failfast.asgi", "-b", "127.0.0.1:0", "-k", "trio"],
        log_path=tmp_path / "serve.log",
        env=env,
        cwd=project,
    )
    try:
        assert server.wait(30) == 2, server.log()
        log = server.log()
        assert expected in log, log
        assert "cannot run on worker class 'trio'" in log
        assert "--worker-class asyncio" in log
        assert "serving" not in log
        assert "Traceback" not in log
    finally:
        server.close()


@pytest.mark.parametrize("case", ["asgi-handler-in-middleware", "channels-router"])
def test_the_same_projects_start_on_asyncio(case: str, tmp_path: Path) -> None:
    asgi_body, backend, switch, _ = REFUSED[case]
    if switch == "0" and not shadowed():
        pytest.skip("needs Django Channels installed")
    project = fail_fast_project(tmp_path, asgi_body, backend)
    env = project_env(CHANNELS_RUNTIME_ALIAS=switch) if switch else project_env()
    server = Server(
        [*cli_command(), "serve", "failfast.asgi", "-b", "127.0.0.1:0", "-k", "asyncio"],
        log_path=tmp_path / "serve.log",
        env=env,
        cwd=project,
    )
    try:
        server.start()
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
    finally:
        server.close()


def test_a_bare_django_handler_is_served_on_trio_and_said_so(tmp_path: Path) -> None:
    project = fail_fast_project(tmp_path, "application = django_asgi_app\n", OURS)
    server = Server(
        [*cli_command(), "serve", "failfast.asgi", "-b", "127.0.0.1:0", "-k", "trio"],
        log_path=tmp_path / "serve.log",
        env=project_env(),
        cwd=project,
    )
    try:
        server.start()
        assert httpx.get(server.url + "/health/", timeout=TIMEOUT).text == "ok"
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        assert SUBSTITUTION_LINE in server.log()
        assert "Lifespan error" not in server.log()  # channels_runtime.http answers lifespan
    finally:
        server.close()


def test_a_backend_that_does_not_import_is_refused_on_every_worker_class(tmp_path: Path) -> None:
    project = fail_fast_project(
        tmp_path, "application = django_asgi_app\n", "chanels_redis.core.RedisChannelLayer"
    )
    server = Server(
        [*cli_command(), "serve", "failfast.asgi", "-b", "127.0.0.1:0", "-k", "asyncio"],
        log_path=tmp_path / "serve.log",
        env=project_env(),
        cwd=project,
    )
    try:
        assert server.wait(30) == 2, server.log()
        assert (
            "CHANNEL_LAYERS['default']['BACKEND'] = 'chanels_redis.core.RedisChannelLayer': "
            "Cannot import BACKEND"
        ) in server.log()
    finally:
        server.close()


def test_runserver_on_trio_refuses_an_asyncio_only_application(tmp_path: Path) -> None:
    asgi_body, backend, _, expected = REFUSED["asgi-handler-subclass"]
    project = fail_fast_project(tmp_path, asgi_body, backend)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "runserver",
            "--noreload",
            "-k",
            "trio",
            "127.0.0.1:0",
        ],
        cwd=project,
        env=project_env(DJANGO_SETTINGS_MODULE="failfast.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    message = expected.replace(
        "failfast.asgi:application", "ASGI_APPLICATION 'failfast.asgi.application'"
    )
    assert f"Error: {message}" in done.stderr, done.stderr
