"""``channels-runtime serve`` prints each log line once, with or without the project's ``LOGGING``.

The server runs tests/serve_app.py under settings written to ``tmp_path``: the
e2e settings plus a ``LOGGING`` setting (or none). The lines counted come from
the three loggers ``serve`` has to reconcile with the project's configuration:
``channels_runtime.*`` (the startup line, a routing warning, "Shutting down"),
``hypercorn.error`` ("Error in ASGI Framework") and ``hypercorn.access``.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest
from e2e_app.harness import REPO, Server, base_env, cli_command
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

#: Where the project's handler sends its lines, and how it formats them.
PROJECT_FORMAT = "PROJECT %(levelname)s %(name)s: %(message)s"

#: Hypercorn's (and serve's own) format: "[2026-01-01 12:00:00 +0000] [123] [INFO] ...".
SERVE_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")

LOGGING_SETTINGS = {
    "none": "",
    # The usual Django setup: one console handler on the root logger.
    "root": f"""
LOGGING = {{
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {{"project": {{"format": {PROJECT_FORMAT!r}}}}},
    "handlers": {{"console": {{"class": "logging.StreamHandler", "formatter": "project"}}}},
    "root": {{"handlers": ["console"], "level": "INFO"}},
}}
""",
    # Handlers on the very loggers serve prints, and none on the root; Django's
    # default disable_existing_loggers=True on top.
    "named": f"""
LOGGING = {{
    "version": 1,
    "formatters": {{"project": {{"format": {PROJECT_FORMAT!r}}}}},
    "handlers": {{"console": {{"class": "logging.StreamHandler", "formatter": "project"}}}},
    "loggers": {{
        "channels_runtime": {{"handlers": ["console"], "level": "INFO"}},
        "hypercorn.error": {{"handlers": ["console"], "level": "INFO"}},
    }},
}}
""",
}

#: The ways serve runs the application: in its own process, or in worker processes.
PROCESS_MODELS = {
    "asyncio": ["-k", "asyncio"],
    "uvloop": ["-k", "uvloop"],
    "trio": ["-k", "trio"],
    "trio-2-workers": ["-k", "trio", "-w", "2"],
}


def _serve(tmp_path: Path, logging_setting: str, args: list[str]) -> Server:
    (tmp_path / "logproj_settings.py").write_text(
        f"from tests.e2e_app.settings import *  # noqa: F403\n{LOGGING_SETTINGS[logging_setting]}"
    )
    return Server(
        [*cli_command(), "serve", "tests.serve_app", "-b", "127.0.0.1:0", "--access-log", *args],
        log_path=tmp_path / "server.log",
        env=base_env(
            DJANGO_SETTINGS_MODULE="logproj_settings",
            PYTHONPATH=f"{REPO}:{tmp_path}",
        ),
    )


def _lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


@pytest.mark.parametrize("logging_setting", list(LOGGING_SETTINGS))
@pytest.mark.parametrize("process_model", list(PROCESS_MODELS))
def test_each_line_is_printed_once(
    process_model: str, logging_setting: str, tmp_path: Path
) -> None:
    server = _serve(tmp_path, logging_setting, PROCESS_MODELS[process_model])
    try:
        server.start()
        assert httpx.get(server.url + "/boom/", timeout=5).status_code == 500
        with pytest.raises(InvalidStatus):
            connect(server.ws_url + "/ws/no-such-route/", open_timeout=5)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        log = server.log()
    finally:
        server.close()

    once = {
        "channels_runtime.server": "channels-runtime serving tests.serve_app:application on",
        "channels_runtime.routing": "No route found for path '/ws/no-such-route/'",
        "channels_runtime.server (parent)": "Shutting down (SIGTERM)",
        "hypercorn.error": "Error in ASGI Framework",
        "hypercorn.error (traceback)": "RuntimeError: serve_app: boom on purpose",
        "hypercorn.access": '"GET /boom/ 1.1" 500',
    }
    for source, text in once.items():
        assert len(_lines(log, text)) == 1, f"{source}: {text!r} not printed once:\n{log}"
    assert "Running on http" not in log, log  # Hypercorn's banner stays hidden

    formatted = [
        _lines(log, once[source])[0]
        for source in ("channels_runtime.server", "channels_runtime.routing", "hypercorn.error")
    ]
    if logging_setting == "none":
        for line in formatted:
            assert SERVE_LINE.match(line), f"not in serve's format: {line!r}\n{log}"
    else:
        # The project configured these loggers: its handler prints them, in its format.
        for line in formatted:
            assert line.startswith("PROJECT "), f"not in the project's format: {line!r}\n{log}"
    # The access log keeps Hypercorn's own handler and format either way.
    assert SERVE_LINE.match(_lines(log, '"GET /boom/ 1.1" 500')[0]), log
