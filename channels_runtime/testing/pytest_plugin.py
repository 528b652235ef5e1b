"""pytest fixtures for testing a channels_runtime project against a real server.

``channels_live_server``
    A :class:`~channels_runtime.testing.live.LiveServer`: the project's ASGI
    application under Hypercorn in a subprocess, started for the test and
    stopped after it. Use ``channels_live_server.url`` (``http://...``) and
    ``channels_live_server.ws_url`` (``ws://...``).
``channels_live_server_worker_class``
    The event loop it runs on, ``"asyncio"`` by default. Override the fixture,
    or parametrize it directly to run a test on several::

        @pytest.mark.parametrize("channels_live_server_worker_class", ["asyncio", "trio"])
        def test_chat(channels_live_server): ...

``channels_live_server_application``
    Dotted path of the application to serve; ``None`` (the default) means
    ``settings.ASGI_APPLICATION``.

This module is loaded by every pytest run in an environment where
channels-runtime is installed (a ``pytest11`` entry point), so it imports
little until a fixture is actually used: the ``channels_runtime`` package
(whose import puts the trio bridge hooks on asgiref, see
:mod:`channels_runtime.compat.bridge_hooks`) and the alias below.

It also installs the ``channels`` alias (:mod:`channels_runtime.alias`)
before any ``conftest.py`` is imported, so a test suite written for Django
Channels (a library's own) runs against channels_runtime unchanged:

* by default only where Django Channels is not installed (``import channels``
  would fail otherwise), so a suite that has Channels installed on purpose
  keeps it;
* with ``--channels-alias`` (or ``channels_alias = true`` in the ini file, or
  ``CHANNELS_RUNTIME_ALIAS=1``) also where it is, shadowing it;
* never with ``CHANNELS_RUNTIME_ALIAS=0`` (or ``CHANNELS_RUNTIME_ALIAS = False``
  in the settings, once they are loaded).

The server is a separate process, so it only sees committed data in a
database it can open: a SQLite file or a database server, as explained in
:mod:`channels_runtime.testing.live`. With pytest-django installed, the fixture
requests ``transactional_db`` for you.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .live import LiveServer

__all__ = [
    "channels_live_server",
    "channels_live_server_application",
    "channels_live_server_worker_class",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    help_text = (
        "make 'channels', 'channels_redis' and 'daphne' resolve to channels_runtime even "
        "where Django Channels is installed (by default only where it is not)"
    )
    parser.getgroup("channels_runtime").addoption(
        "--channels-alias", action="store_true", default=False, help=help_text
    )
    parser.addini("channels_alias", help_text, type="bool", default=False)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Install the alias before the first ``conftest.py`` can ``import channels``."""
    from .. import alias

    take_over = bool(
        getattr(early_config.known_args_namespace, "channels_alias", False)
        or early_config.getini("channels_alias")
    )
    try:
        alias.install(
            route="pytest --channels-alias" if take_over else "the channels_runtime pytest plugin",
            take_over=take_over,
            too_late_hint="Another pytest plugin imported it first.",
        )
    except alias.AliasError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def channels_live_server_worker_class() -> str:
    """The worker class of ``channels_live_server``: asyncio, uvloop or trio."""
    return "asyncio"


@pytest.fixture
def channels_live_server_application() -> str | None:
    """Dotted path of the application ``channels_live_server`` serves (None: ASGI_APPLICATION)."""
    return None


@pytest.fixture
def channels_live_server(
    request: pytest.FixtureRequest,
    channels_live_server_worker_class: str,
    channels_live_server_application: str | None,
) -> Iterator[LiveServer]:
    """The project served by Hypercorn on a free port for the duration of one test."""
    if request.config.pluginmanager.hasplugin("django"):
        # pytest-django: a database the test commits to, emptied afterwards.
        request.getfixturevalue("transactional_db")

    from django.test.utils import modify_settings

    from ..db import keep_connections_open
    from .live import LiveServer

    server = LiveServer(
        worker_class=channels_live_server_worker_class,
        application=channels_live_server_application,
    )
    with (
        keep_connections_open(),
        modify_settings(ALLOWED_HOSTS={"append": server.host}),
        server,
    ):
        yield server
