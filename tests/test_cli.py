"""``channels-runtime``: flags, config files and their checks, project loading.

Configuration errors are checked in this process through ``cli.main`` (they are
reported before anything is imported or bound); everything that starts a
server runs the real command in a subprocess.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from e2e_app.harness import REPO, Process, Server, base_env, cli_command
from hypercorn.config import Config
from websockets.sync.client import connect

from channels_runtime import cli
from channels_runtime.server.config import SETTINGS, ConfigError, check_setting, load_toml

SERVE_FLAGS = [
    "MODULE[:ATTR]",
    "-b ADDRESS, --bind ADDRESS",
    "-k CLASS, --worker-class CLASS",
    "-w N, --workers N",
    "-c PATH, --config PATH",
    "--reload",
    "--access-log",
    "--access-logfile PATH",
    "--root-path PATH",
    "--graceful-timeout SECONDS",
    "--log-level LEVEL",
]


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 20, **env: str) -> tuple[int, str]:
    done = subprocess.run(
        [*cli_command(), *args],
        cwd=cwd,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr


def test_help_documents_every_flag() -> None:
    status, output = run_cli("serve", "--help")
    assert status == 0
    for flag in SERVE_FLAGS:
        assert flag in output, flag
    assert "asyncio, uvloop, trio" in output
    assert "unix:PATH or fd://N" in output
    status, output = run_cli("worker", "--help")
    assert status == 0
    for flag in ("CHANNEL", "--application PATH", "--layer ALIAS", "-k CLASS", "--log-level"):
        assert flag in output, flag


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("workerz = 4", "unknown setting 'workerz' (did you mean 'workers'?)"),
        ('workers = "two"', "invalid value 'two' for 'workers': expected an integer"),
        ("workers = -1", "invalid value -1 for 'workers': must be >= 0"),
        ('worker_class = "bogus"', "invalid value 'bogus' for 'worker_class'"),
        ("graceful_timeout = -2", "invalid value -2 for 'graceful_timeout': must be >= 0"),
        ('bind = ["127.0.0.1:99999"]', "port must be between 0 and 65535"),
        ('bind = ["unix:"]', "unix: needs a socket path"),
        ("keep_alive_timeout = true", "expected a number of seconds, got bool"),
        ('loglevel = "loud"', "invalid value 'loud' for 'loglevel'"),
        ("workers = [", "not valid TOML"),
    ],
)
def test_bad_config_file_is_a_usage_error(
    toml: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(toml + "\n")
    assert cli.main(["serve", "anything.asgi", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"channels-runtime serve: error: {config}: ")
    assert expected in err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["-k", "bogus"], "--worker-class: invalid value 'bogus' for 'worker_class'"),
        (["-w", "-1"], "--workers: invalid value -1 for 'workers': must be >= 0"),
        (["--graceful-timeout", "-1"], "--graceful-timeout: invalid value -1.0"),
        (["--log-level", "loud"], "--log-level: invalid value 'loud'"),
        (["-b", "fd://x"], "--bind: invalid value ['fd://x'] for 'bind'"),
        (["-c", "/nonexistent/hypercorn.toml"], "configuration file not found"),
    ],
)
def test_bad_flag_is_a_usage_error(
    flags: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "anything.asgi", *flags]) == 2
    assert expected in capsys.readouterr().err


def test_argparse_type_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "x.asgi", "-w", "two"])
    assert info.value.code == 2


def test_missing_application_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["serve"]) == 2
    assert "no application given" in capsys.readouterr().err


def test_flags_override_the_default_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hypercorn.toml").write_text(
        'workers = 3\nworker_class = "trio"\nbind = ["0.0.0.0:9000"]\ngraceful_timeout = 7\n'
    )
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["serve", "x.asgi", "-w", "1", "-b", "127.0.0.1:1", "-b", "unix:/tmp/x.sock"]
    )
    settings, sources = cli.serve_settings(args)
    assert sources == ["hypercorn.toml"]
    assert settings["workers"] == 1
    assert settings["bind"] == ["127.0.0.1:1", "unix:/tmp/x.sock"]
    assert settings["worker_class"] == "trio"
    assert settings["graceful_timeout"] == 7.0

    args = cli.build_parser().parse_args(
        ["serve", "x.asgi", "--access-log", "--root-path", "/app/", "--log-level", "DEBUG"]
    )
    settings, _ = cli.serve_settings(args)
    assert settings["accesslog"] == "-"
    assert settings["root_path"] == "/app/"
    assert settings["loglevel"] == "DEBUG"


def test_repository_hypercorn_toml_is_valid_for_both_readers() -> None:
    ours = load_toml(REPO / "hypercorn.toml")
    theirs = Config.from_toml(REPO / "hypercorn.toml")
    assert ours, "the example should set something"
    for key, value in ours.items():
        expected = getattr(theirs, key)
        if key == "loglevel":
            assert value == expected.upper()
        else:
            assert value == expected, key


def test_settings_table_covers_every_hypercorn_setting() -> None:
    """A Hypercorn upgrade that adds a setting must not make valid files fail."""
    names = {
        name
        for name in [*dir(Config), *Config.__annotations__]
        if not name.startswith("_") and not callable(getattr(Config, name, None))
    }
    assert names - {"log", "ssl_enabled"} <= set(SETTINGS)
    with pytest.raises(ConfigError) as info:
        check_setting("worker_klass", "trio", source="test")
    assert info.value.key == "worker_klass"


# -- starting real processes -------------------------------------------------------


def _write_project(root: Path, *, settings: bool = True) -> None:
    package = root / "freshproj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    if settings:
        # No CHANNEL_LAYERS on purpose: `serve` must supply the in-memory layer.
        # A LOGGING that disables existing loggers must not hide the server's lines.
        (package / "settings.py").write_text(
            'SECRET_KEY = "fresh"\nINSTALLED_APPS = ["channels_runtime"]\nUSE_TZ = True\n'
            'LOGGING = {"version": 1, "disable_existing_loggers": True}\n'
        )
    (package / "asgi.py").write_text(
        "from django.urls import path\n"
        "from channels_runtime.generic.websocket import AsyncWebsocketConsumer\n"
        "from channels_runtime.routing import ProtocolTypeRouter, URLRouter\n"
        "\n"
        "class Room(AsyncWebsocketConsumer):\n"
        "    groups = ['lobby']\n"
        "    async def receive(self, text_data=None, bytes_data=None):\n"
        "        await self.channel_layer.group_send('lobby', {'type': 'say', 't': text_data})\n"
        "    async def say(self, event):\n"
        "        await self.send(text_data=event['t'])\n"
        "\n"
        "async def ok(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n"
        "\n"
        "application = ProtocolTypeRouter({\n"
        "    'http': ok,\n"
        "    'websocket': URLRouter([path('ws/', Room.as_asgi())]),\n"
        "})\n"
    )


def test_fresh_project_settings_inferred_and_in_memory_layer_by_default(tmp_path: Path) -> None:
    """No DJANGO_SETTINGS_MODULE, no CHANNEL_LAYERS, run from the project directory."""
    _write_project(tmp_path)
    server = Server(
        [*cli_command(), "serve", "freshproj.asgi", "-b", "127.0.0.1:0", "-k", "trio"],
        log_path=tmp_path / "server.log",
        env=base_env(),
        cwd=tmp_path,
    )
    try:
        server.start(health_path="/")
        log = server.log()
        assert "serving freshproj.asgi:application on http://127.0.0.1:" in log
        assert (
            "channel layer channels_runtime.layers.InMemoryChannelLayer "
            "(built-in default: the settings define no CHANNEL_LAYERS)" in log
        )
        with ExitStack() as stack:
            one = stack.enter_context(connect(server.ws_url + "/ws/", open_timeout=10))
            two = stack.enter_context(connect(server.ws_url + "/ws/", open_timeout=10))
            one.send("to the lobby")
            assert two.recv(timeout=5) == "to the lobby"
            assert one.recv(timeout=5) == "to the lobby"
        server.signal(signal.SIGINT)
        assert server.wait(15) == 0, server.log()
    finally:
        server.close()


def test_project_without_settings_is_a_clear_usage_error(tmp_path: Path) -> None:
    _write_project(tmp_path, settings=False)
    status, output = run_cli("serve", "freshproj.asgi", cwd=tmp_path)
    assert status == 2, output
    assert "Cannot find the Django settings: DJANGO_SETTINGS_MODULE is not set" in output
    assert "'freshproj.settings' is not importable" in output


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("nosuchmodule.asgi", "Cannot import 'nosuchmodule.asgi': no module named 'nosuchmodule'"),
        ("tests.e2e_app.asgi:nothing", "has no attribute 'nothing'"),
    ],
)
def test_unloadable_application_is_a_usage_error(target: str, expected: str) -> None:
    status, output = run_cli("serve", target, "-b", "127.0.0.1:0")
    assert status == 2, output
    assert expected in output


def test_busy_port_fails_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = Process(
            [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", f"127.0.0.1:{port}"],
            log_path=tmp_path / "server.log",
            env=base_env(),
        )
        try:
            assert process.wait(20) == 1
            assert f"Cannot listen on 127.0.0.1:{port}" in process.log()
        finally:
            process.close()
