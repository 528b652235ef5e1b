"""Test configuration shared by the whole suite.

Every ``@pytest.mark.anyio`` test runs once per event-loop backend: asyncio,
asyncio with uvloop, and trio.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

import django
import pytest
from django.conf import settings


def postgres_settings() -> dict[str, object]:
    """The ``pg`` alias: ``DATABASE_URL`` when set, else the machine's server on 127.0.0.1:5432."""
    url = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")) or "test",
        "USER": unquote(url.username or "postgres"),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname or "127.0.0.1",
        "PORT": str(url.port or 5432),
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"application_name": f"channels-runtime-tests-{os.getpid()}"},
    }


if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="channels-runtime-tests",
        ALLOWED_HOSTS=["testserver", "localhost", "127.0.0.1"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "channels_runtime",
        ],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "pg": postgres_settings(),
        },
        CHANNEL_LAYERS={
            "default": {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"},
        },
        ROOT_URLCONF=None,
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        # Django Channels is installed as the reference the parity tests compare
        # with, so "channels" must stay Channels in this process: the alias
        # (channels_runtime.alias) is tested in subprocesses (tests/test_alias*.py).
        CHANNELS_RUNTIME_ALIAS=False,
    )
    django.setup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # On Django 4.2 (CI's second run), skip the tests about Django 5 APIs, with reasons.
    from older_django import skip_tests_needing_newer_django

    skip_tests_needing_newer_django(items)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _fresh_channel_layers() -> object:
    """Each test starts with no cached channel layer, so no state leaks between tests."""
    from channels_runtime.layers import channel_layers

    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
async def _no_forgotten_communicators() -> object:
    from channels_runtime.testing import stop_background_communicators

    yield
    leftovers = await stop_background_communicators()
    assert leftovers == [], f"test left communicator applications running: {leftovers!r}"


@pytest.fixture(autouse=True)
def _communicator_cleanup(request: pytest.FixtureRequest) -> None:
    """Async tests must not leave a communicator's application running."""
    if "anyio_backend" in request.fixturenames:
        request.getfixturevalue("_no_forgotten_communicators")


def _logging_state() -> dict[str, object]:
    import logging

    state: dict[str, object] = {}
    for name in ("", "hypercorn.error", "hypercorn.access", "channels_runtime"):
        logger = logging.getLogger(name)
        state[name or "root"] = (
            logger.level,
            logger.disabled,
            logger.propagate,
            tuple(logger.handlers),
            tuple(logger.filters),
        )
    return state


@pytest.fixture(autouse=True)
def _process_state_unchanged(request: pytest.FixtureRequest) -> object:
    """A test must leave the environment and logging as it found them.

    Later tests start subprocesses with ``os.environ`` and read logs through
    ``caplog``: an in-process ``serve`` that set ``DJANGO_SETTINGS_MODULE`` or
    configured logging made unrelated tests fail far away. The state is put
    back, and the test that changed it fails, naming what it changed; a test
    marked ``configures_logging`` may change the loggers (it runs the command
    line, or Hypercorn with its own ``Config``, whose job that is).
    """
    import logging

    environ = dict(os.environ)
    logs = _logging_state()
    yield
    changed_env = sorted(
        k
        for k in set(environ) | set(os.environ)
        if k != "PYTEST_CURRENT_TEST" and environ.get(k) != os.environ.get(k)
    )
    changed_logs = [k for k, v in _logging_state().items() if logs[k] != v]
    for key in changed_env:
        if key in environ:
            os.environ[key] = environ[key]
        else:
            del os.environ[key]
    for name in changed_logs:
        logger = logging.getLogger("" if name == "root" else name)
        level, disabled, propagate, handlers, filters = logs[name]  # type: ignore[misc]
        logger.setLevel(level)
        logger.disabled = disabled
        logger.propagate = propagate
        logger.handlers[:] = list(handlers)
        logger.filters[:] = list(filters)
    if request.node.get_closest_marker("configures_logging"):
        changed_logs = []
    assert not changed_env, f"the test changed os.environ: {changed_env}"
    assert not changed_logs, f"the test changed the configuration of loggers {changed_logs}"
