"""``channels``, ``channels_redis`` and ``daphne`` resolved to channels_runtime.

The alias is :mod:`channels_runtime.alias`.

Every test that installs the alias runs in a fresh interpreter: this test
session keeps Django Channels as the reference the parity tests compare with
(``CHANNELS_RUNTIME_ALIAS=False`` in ``conftest.py``). Django Channels, Daphne
and channels_redis are installed here, so the rule for that case is tested
directly; the case where they are not is a real environment too, made by
running Python with only the other packages of this one on its path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from e2e_app.harness import REPO, base_env

from channels_runtime.alias import DISTRIBUTIONS, MODULES
from channels_runtime.http import HttpApplication
from channels_runtime.middleware import BaseMiddleware
from channels_runtime.routing import ProtocolTypeRouter
from channels_runtime.server.preflight import Refused, prepare_application

INSTALLED = {
    root: importlib.metadata.version(distribution)
    for root, distribution in DISTRIBUTIONS.items()
    if importlib.util.find_spec(root) is not None
}
needs_reference = pytest.mark.skipif(
    len(INSTALLED) < len(DISTRIBUTIONS),
    reason="needs Django Channels, Daphne and channels_redis installed (the tests extra)",
)


def python(
    code: str, *, args: list[str] | None = None, cwd: Path = REPO, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; no alias switch is inherited."""
    environment = base_env(**env)
    if "CHANNELS_RUNTIME_ALIAS" not in env:
        environment.pop("CHANNELS_RUNTIME_ALIAS", None)
    return subprocess.run(
        [sys.executable, *(args or []), "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# -- the same objects ---------------------------------------------------------------


def test_every_channels_name_is_the_runtime_module_itself() -> None:
    out = ok(
        python(
            """
            import importlib, sys
            from channels_runtime import alias
            assert alias.install(route="test")
            for name, target in alias.MODULES.items():
                module = importlib.import_module(name)
                assert sys.modules[name] is module is importlib.import_module(target), name
                # The module keeps its own spec: reload and tools see the runtime's name.
                assert module.__spec__.name == target, (name, module.__spec__.name)
            # Modules do not become packages by being aliased.
            import channels.routing, channels_runtime.routing
            assert not hasattr(channels_runtime.routing, "__path__")
            print(len(alias.MODULES), "names")
            """
        )
    )
    assert f"{len(MODULES)} names" in out


def test_classes_are_shared_both_ways() -> None:
    ok(
        python(
            """
            from channels_runtime import alias
            alias.install(route="test")

            import channels
            from channels.generic.websocket import AsyncWebsocketConsumer
            from channels.layers import InMemoryChannelLayer
            from channels.routing import ProtocolTypeRouter
            from channels_redis.core import RedisChannelLayer
            from channels_redis.pubsub import RedisPubSubChannelLayer
            import channels_runtime.generic.websocket as runtime_websocket
            import channels_runtime.layers as runtime_layers
            import channels_runtime.layers.redis as runtime_redis
            import channels_runtime.routing as runtime_routing

            # A library's subclass of the Channels name is a runtime consumer...
            class LibraryConsumer(AsyncWebsocketConsumer):
                pass
            assert issubclass(LibraryConsumer, runtime_websocket.AsyncWebsocketConsumer)
            assert isinstance(LibraryConsumer(), runtime_websocket.AsyncWebsocketConsumer)
            # ...and the project's subclass of the runtime name is a Channels consumer.
            class ProjectConsumer(runtime_websocket.AsyncWebsocketConsumer):
                pass
            assert issubclass(ProjectConsumer, AsyncWebsocketConsumer)
            assert isinstance(runtime_layers.InMemoryChannelLayer(), InMemoryChannelLayer)
            assert isinstance(InMemoryChannelLayer(), runtime_layers.InMemoryChannelLayer)
            assert ProtocolTypeRouter is runtime_routing.ProtocolTypeRouter
            assert RedisChannelLayer is runtime_redis.RedisChannelLayer
            assert RedisPubSubChannelLayer is runtime_redis.RedisPubSubChannelLayer
            assert channels.DEFAULT_CHANNEL_LAYER == "default"
            assert channels.__version__ == alias.CHANNELS_API_VERSION
            """
        )
    )


def test_submodule_attributes_appear_as_in_a_package() -> None:
    ok(
        python(
            """
            from channels_runtime import alias
            alias.install(route="test")
            import channels
            try:
                channels.layers
            except AttributeError as exc:
                assert "has no attribute 'layers'" in str(exc)
            else:
                raise AssertionError("channels.layers before anything imported it")
            # Channels' testing imports channels.routing; code relies on it afterwards.
            import channels.testing
            import channels_runtime.routing
            assert channels.routing is channels_runtime.routing
            import daphne
            assert not hasattr(daphne, "server")
            """
        )
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("channels.http", "Channels 3's AsgiHandler, removed in Channels 4"),
        ("channels.utils", "channels_runtime has no such module"),
        ("channels.no_such_module", "not a module of Django Channels 4.2/4.3"),
        ("channels.layers.inmemory", "not a module of Django Channels 4.2/4.3"),
        ("channels_redis.serializers", "stands in for channels_redis.core.RedisChannelLayer"),
        ("daphne.server", "Daphne's own server, which channels_runtime replaces"),
    ],
)
def test_names_the_alias_does_not_provide_say_so(name: str, says: str) -> None:
    out = ok(
        python(
            f"""
            from channels_runtime import alias
            alias.install(route="test")
            try:
                __import__({name!r})
            except ModuleNotFoundError as exc:
                assert exc.name == {name!r}, exc.name
                print(exc)
            """
        )
    )
    assert f"No module named {name!r}" in out
    assert "is channels_runtime here, through its alias" in out
    assert says in out
    assert "CHANNELS_RUNTIME_ALIAS=0" in out


# -- when Django Channels is installed too -----------------------------------------------


@needs_reference
def test_taking_over_logs_one_line_naming_the_shadowed_versions() -> None:
    done = python(
        """
        import logging
        logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
        from channels_runtime import alias
        alias.install(route="a test")
        import channels.routing, channels_redis.core, daphne, channels.layers
        import channels_runtime
        assert channels.routing.__name__ == "channels_runtime.routing"
        """
    )
    ok(done)
    lines = [line for line in done.stderr.splitlines() if "stands in for" in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("WARNING channels_runtime.alias channels_runtime stands in for")
    assert "(alias installed by a test)" in lines[0]
    for root, version in INSTALLED.items():
        assert f"{DISTRIBUTIONS[root]} {version}" in lines[0]
    assert "set CHANNELS_RUNTIME_ALIAS=0 to use them instead" in lines[0]


@needs_reference
def test_falling_back_leaves_an_installed_channels_alone() -> None:
    done = python(
        """
        from channels_runtime import alias
        assert alias.install(route="test", take_over=False)
        import channels, channels.routing, daphne
        print(channels.__file__, daphne.__file__)
        assert channels.routing.__name__ == "channels.routing"
        """
    )
    out = ok(done)
    assert "site-packages/channels/__init__.py" in out
    assert "site-packages/daphne/__init__.py" in out
    assert "stands in for" not in done.stderr


@needs_reference
@pytest.mark.parametrize("take_over_later", [True, False])
def test_taking_over_after_the_real_import_is_an_error(take_over_later: bool) -> None:
    """Two copies of Channels in one process would not match: refuse, loudly."""
    done = python(
        f"""
        from channels_runtime import alias
        if {take_over_later}:
            alias.install(route="test", take_over=False)  # the real one is found...
        import channels.layers  # ...and imported
        try:
            alias.install(route="channels-runtime serve", too_late_hint="Do it earlier.")
        except alias.AliasError as exc:
            print(exc)
        import channels
        assert channels.__name__ == "channels"  # nothing half-aliased
        """
    )
    out = ok(done)
    assert "channels-runtime serve cannot make channels_runtime stand in for channels " in out
    assert f"channels {INSTALLED['channels']} (from " in out
    assert "already imported, so this process would hold two copies whose classes differ" in out
    assert "Do it earlier." in out
    assert "CHANNELS_RUNTIME_ALIAS=0" in out


@needs_reference
def test_installed_apps_in_the_wrong_order_is_an_error() -> None:
    done = python(
        """
        import django
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["daphne", "channels_runtime"])
        django.setup()
        """
    )
    assert done.returncode == 1
    assert (
        "'channels_runtime' in INSTALLED_APPS cannot make channels_runtime stand in for daphne"
    ) in done.stderr
    assert "Move 'channels_runtime' above 'daphne' and 'channels' in INSTALLED_APPS" in (
        done.stderr
    )


# -- the switch -----------------------------------------------------------------------


SETTINGS_THEN_IMPORT = """
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["channels_runtime", "channels"], **{extra})
django.setup()
import channels.routing
print("routing is", channels.routing.__name__)
"""


@needs_reference
@pytest.mark.parametrize(
    ("env", "setting", "expected"),
    [
        ("", None, "channels_runtime.routing"),
        ("0", None, "channels.routing"),
        ("off", None, "channels.routing"),
        ("", False, "channels.routing"),
        ("1", False, "channels_runtime.routing"),  # the environment wins
        ("0", True, "channels.routing"),
    ],
)
def test_the_switch(env: str, setting: bool | None, expected: str) -> None:
    extra = {} if setting is None else {"CHANNELS_RUNTIME_ALIAS": setting}
    out = ok(python(SETTINGS_THEN_IMPORT.format(extra=extra), CHANNELS_RUNTIME_ALIAS=env))
    assert f"routing is {expected}" in out


def test_a_bad_switch_is_an_error() -> None:
    done = python(SETTINGS_THEN_IMPORT.format(extra={}), CHANNELS_RUNTIME_ALIAS="maybe")
    assert done.returncode == 1
    assert "The environment variable CHANNELS_RUNTIME_ALIAS must be on or off" in done.stderr
    done = python(SETTINGS_THEN_IMPORT.format(extra={"CHANNELS_RUNTIME_ALIAS": "yes please"}))
    assert done.returncode == 1
    assert "settings.CHANNELS_RUNTIME_ALIAS must be on or off" in done.stderr


@needs_reference
def test_the_environment_turns_every_route_on() -> None:
    out = ok(
        python(
            """
            from channels_runtime import alias
            assert alias.install(route="pytest plugin", take_over=False)
            import channels.routing
            print("routing is", channels.routing.__name__)
            """,
            CHANNELS_RUNTIME_ALIAS="1",
        )
    )
    assert "routing is channels_runtime.routing" in out


# -- INSTALLED_APPS and the runserver check ---------------------------------------------

CHECK = """
import django
from channels_runtime import alias
alias.install(route="test")
from django.conf import settings
settings.configure(INSTALLED_APPS={apps!r}, **{extra})
django.setup()
from django.core.checks import run_checks
from django.core.management import get_commands, load_command_class
winner = get_commands()["runserver"]
print("runserver from", winner, type(load_command_class(winner, "runserver")).__module__)
print("errors", sorted(m.id for m in run_checks(tags=["staticfiles"])))
from django.apps import apps
print("labels", [c.label for c in apps.get_app_configs()])
"""

STATIC = "django.contrib.staticfiles"
OUR_RUNSERVER = "channels_runtime.management.commands.runserver"


@pytest.mark.parametrize(
    ("apps", "extra", "expected"),
    [
        (["daphne", STATIC, "channels_runtime"], {}, f"runserver from daphne {OUR_RUNSERVER}"),
        (["channels", STATIC, "channels_runtime"], {}, f"runserver from channels {OUR_RUNSERVER}"),
        (
            ["channels_runtime", "daphne", STATIC, "channels"],
            {},
            f"runserver from channels_runtime {OUR_RUNSERVER}",
        ),
        (
            [STATIC, "channels", "channels_runtime"],
            {},
            "runserver from django.contrib.staticfiles",
        ),
        pytest.param(
            ["daphne", STATIC, "channels_runtime"],
            {"CHANNELS_RUNTIME_ALIAS": False},
            "runserver from daphne daphne.management.commands.runserver",
            marks=needs_reference,
        ),
    ],
)
def test_runserver_check_accepts_any_asgi_runserver_first(
    apps: list[str], extra: dict[str, Any], expected: str
) -> None:
    out = ok(python(CHECK.format(apps=apps, extra=extra)))
    assert expected in out, out
    errors = "errors ['channels_runtime.E001']" if expected.split()[-1] == STATIC else "errors []"
    assert errors in out, out


def test_channels_and_daphne_are_apps_of_their_own_labels() -> None:
    out = ok(
        python(
            CHECK.format(
                apps=["channels_runtime", "daphne", "django.contrib.contenttypes", "channels"],
                extra={},
            )
        )
    )
    assert "labels ['channels_runtime', 'daphne', 'contenttypes', 'channels']" in out


# -- the pytest plugin ----------------------------------------------------------------------

PLUGIN_TEST = """
import channels.routing

def test_which_channels():
    print("routing is", channels.routing.__name__)
"""


def run_pytest(tmp_path: Path, *options: str, ini: str = "") -> str:
    (tmp_path / "test_library.py").write_text(PLUGIN_TEST)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *options],
        cwd=tmp_path,
        env={k: v for k, v in base_env().items() if k != "CHANNELS_RUNTIME_ALIAS"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_reference
def test_pytest_plugin_keeps_an_installed_channels_by_default(tmp_path: Path) -> None:
    assert "routing is channels.routing" in run_pytest(tmp_path)


@needs_reference
@pytest.mark.parametrize("how", ["option", "ini"])
def test_pytest_plugin_takes_over_when_asked(how: str, tmp_path: Path) -> None:
    if how == "option":
        out = run_pytest(tmp_path, "--channels-alias")
    else:
        out = run_pytest(tmp_path, ini="channels_alias = true")
    assert "routing is channels_runtime.routing" in out


def environment_without_channels(tmp_path: Path) -> Path:
    """A ``sys.path`` entry holding this environment's packages except Channels' three.

    Python started with ``-S`` (no site-packages) and this on ``PYTHONPATH`` is an
    environment where Django Channels, Daphne and channels_redis are not installed.
    """
    site_packages = Path(importlib.util.find_spec("django").origin).parents[1]  # type: ignore[arg-type]
    farm = tmp_path / "site-packages"
    farm.mkdir(parents=True)
    left_out = tuple(DISTRIBUTIONS) + tuple(d.replace("-", "_") for d in DISTRIBUTIONS.values())
    for entry in site_packages.iterdir():
        name = entry.name
        base = name.split("-", 1)[0] if name.endswith((".dist-info", ".egg-info")) else name
        if base in left_out or name.endswith(".pth") or name.startswith("__editable__"):
            continue
        (farm / name).symlink_to(entry)
    return farm


def test_pytest_plugin_stands_in_where_channels_is_not_installed(tmp_path: Path) -> None:
    farm = environment_without_channels(tmp_path / "env")
    env = base_env(PYTHONPATH=os.pathsep.join([str(farm), str(REPO)]))
    env.pop("CHANNELS_RUNTIME_ALIAS", None)
    # Really not installed: a bare interpreter cannot import it.
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import channels"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ModuleNotFoundError: No module named 'channels'" in done.stderr
    # A test suite written for Channels runs as it is, against channels_runtime, with its
    # own settings naming the "channels" app.
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "conftest.py").write_text(
        "import django\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['channels', 'django.contrib.auth',"
        " 'django.contrib.contenttypes'])\n"
        "django.setup()\n"
    )
    (tests / "test_library.py").write_text(
        PLUGIN_TEST + "\ndef test_app_registry():\n"
        "    from django.apps import apps\n"
        "    assert apps.get_app_config('channels').name == 'channels'\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"],
        cwd=tests,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "routing is channels_runtime.routing" in done.stdout
    assert "2 passed" in done.stdout
    assert "stands in for" not in done.stdout + done.stderr  # nothing shadowed, nothing said


# -- channels_redis settings ---------------------------------------------------------------


@needs_reference
def test_every_channels_redis_config_key_is_accepted() -> None:
    """Channels_redis's CONFIG, with its own defaults, builds our layers as it is."""
    import channels_redis.core
    import channels_redis.pubsub

    from channels_runtime.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

    hosts = ["redis://127.0.0.1:6379/0"]
    core = inspect.signature(channels_redis.core.RedisChannelLayer).parameters
    config = {name: p.default for name, p in core.items() if name != "hosts"}
    assert set(config) >= {"prefix", "expiry", "group_expiry", "capacity", "channel_capacity"}
    layer = RedisChannelLayer(hosts=hosts, **config)
    assert (layer.prefix, layer.capacity, layer.expiry) == ("asgi", 100, 60)
    # The pub/sub layer: its explicit options, and those channels_redis documents for both.
    pubsub: dict[str, Any] = {}
    for function in (
        channels_redis.pubsub.RedisPubSubChannelLayer.__init__,
        channels_redis.pubsub.RedisPubSubLoopLayer.__init__,
    ):
        for name, p in inspect.signature(function).parameters.items():
            if p.kind is p.KEYWORD_ONLY or (
                p.kind is p.POSITIONAL_OR_KEYWORD and name not in ("self", "channel_layer")
            ):
                pubsub[name] = p.default
    pubsub.pop("hosts")
    documented = {"expiry": 60, "group_expiry": 86400, "capacity": 100, "channel_capacity": {}}
    layer = RedisPubSubChannelLayer(hosts=hosts, **pubsub, **documented)
    assert set(pubsub) >= {"prefix", "on_disconnect", "on_reconnect", "serializer_format"}


# -- preflight, in this process (no alias involved) ---------------------------------------


def test_a_bare_django_handler_is_replaced_on_every_worker_class() -> None:
    for worker_class in ("asyncio", "uvloop", "trio"):
        app = prepare_application(ASGIHandler(), worker_class, where="x")
        assert isinstance(app, HttpApplication)


def test_wrapped_django_handler_is_refused_on_trio_only() -> None:
    app = ProtocolTypeRouter({"http": BaseMiddleware(ASGIHandler())})
    assert prepare_application(app, "asyncio", where="x") is app
    with pytest.raises(Refused, match=r"The application x -> 'http' -> inner is Django's"):
        prepare_application(app, "trio", where="x")
    # Mapped unwrapped, the router serves it with channels_runtime.http: nothing to refuse.
    app = ProtocolTypeRouter({"http": ASGIHandler()})
    assert prepare_application(app, "trio", where="x") is app
