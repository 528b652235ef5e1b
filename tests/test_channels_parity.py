"""A Channels 4.2 project ports by renaming ``channels`` to ``channels_runtime``.

For every public module of Channels 4.2 that channels-runtime mirrors, each public
name must exist at the same path, each public method of each class must exist,
and every parameter Channels accepts must be accepted here too.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

channels = pytest.importorskip("channels", reason="Django Channels is the reference for parity")

MODULES = {
    "channels": ["DEFAULT_CHANNEL_LAYER"],
    "channels.apps": [],
    "channels.auth": [
        "get_user",
        "login",
        "logout",
        "UserLazyObject",
        "AuthMiddleware",
        "AuthMiddlewareStack",
    ],
    "channels.consumer": ["get_handler_name", "AsyncConsumer", "SyncConsumer"],
    "channels.db": ["DatabaseSyncToAsync", "database_sync_to_async", "aclose_old_connections"],
    "channels.exceptions": [
        "RequestAborted",
        "RequestTimeout",
        "InvalidChannelLayerError",
        "AcceptConnection",
        "DenyConnection",
        "ChannelFull",
        "MessageTooLarge",
        "StopConsumer",
    ],
    "channels.layers": [
        "ChannelLayerManager",
        "BaseChannelLayer",
        "InMemoryChannelLayer",
        "get_channel_layer",
        "channel_layers",
    ],
    "channels.middleware": ["BaseMiddleware"],
    "channels.routing": [
        "get_default_application",
        "ProtocolTypeRouter",
        "URLRouter",
        "ChannelNameRouter",
    ],
    "channels.sessions": [
        "CookieMiddleware",
        "InstanceSessionWrapper",
        "SessionMiddleware",
        "SessionMiddlewareStack",
    ],
    "channels.security.websocket": [
        "OriginValidator",
        "AllowedHostsOriginValidator",
        "WebsocketDenier",
    ],
    "channels.generic.http": ["AsyncHttpConsumer"],
    "channels.generic.websocket": [
        "WebsocketConsumer",
        "JsonWebsocketConsumer",
        "AsyncWebsocketConsumer",
        "AsyncJsonWebsocketConsumer",
    ],
    "channels.testing": [
        "ApplicationCommunicator",
        "ChannelsLiveServerTestCase",
        "HttpCommunicator",
        "WebsocketCommunicator",
    ],
}


#: Names that exist in Channels only as a detail of its Daphne dependency.
NOT_PORTED = {
    # Daphne's server-process class; the live server here runs Hypercorn.
    ("ChannelsLiveServerTestCase", "ProtocolServerProcess"),
}


def ported(module_name: str) -> str:
    return "channels_runtime" + module_name.removeprefix("channels")


CASES = [(module, name) for module, names in MODULES.items() for name in names]


@pytest.mark.parametrize("module_name", list(MODULES))
def test_module_exists(module_name: str) -> None:
    importlib.import_module(ported(module_name))


def _accepts(ours: Any, theirs: Any) -> list[str]:
    """Parameters of ``theirs`` that ``ours`` would refuse."""
    try:
        our_sig = inspect.signature(ours)
        their_sig = inspect.signature(theirs)
    except (TypeError, ValueError):
        return []
    our_params = our_sig.parameters
    keyword_ok = any(p.kind is p.VAR_KEYWORD for p in our_params.values())
    missing = []
    for name, param in their_sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name not in our_params and not keyword_ok:
            missing.append(name)
    return missing


@pytest.mark.parametrize(("module_name", "name"), CASES)
def test_public_name_ports(module_name: str, name: str) -> None:
    theirs = getattr(importlib.import_module(module_name), name)
    module = importlib.import_module(ported(module_name))
    assert hasattr(module, name), f"{ported(module_name)} has no {name!r}"
    ours = getattr(module, name)
    if inspect.isclass(theirs):
        assert inspect.isclass(ours), f"{name} is a class in Channels"
        for attr, value in vars(theirs).items():
            if attr.startswith("_") and attr not in ("__init__", "__call__"):
                continue
            if (name, attr) in NOT_PORTED:
                continue
            try:
                our_value = inspect.getattr_static(ours, attr)
            except AttributeError:
                pytest.fail(f"{ported(module_name)}.{name} lacks {attr!r}")
            if callable(value) and attr != "__init__":
                missing = _accepts(getattr(ours, attr, our_value), value)
                assert not missing, f"{name}.{attr} does not accept {missing}"
        missing = _accepts(ours.__init__, theirs.__init__)
        assert not missing, f"{name}() does not accept {missing}"
    elif callable(theirs):
        missing = _accepts(ours, theirs)
        assert not missing, f"{ported(module_name)}.{name} does not accept {missing}"
    elif isinstance(theirs, str | int):
        assert ours == theirs
    else:
        assert type(ours).__name__ == type(theirs).__name__


def test_installed_apps_entry() -> None:
    from django.apps import apps

    assert apps.get_app_config("channels_runtime").name == "channels_runtime"
