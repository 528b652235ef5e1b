"""Type aliases for the ASGI 3 interface, shared by every module that speaks it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def describe_client(address: object) -> str:
    """``"203.0.113.7:51234"`` for a scope's ``client`` (or a socket's peer name), for logs.

    Anything that is not a host and port (a missing client, a Unix socket's
    name) reads ``"unknown client"``.
    """
    if isinstance(address, list | tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "unknown client"


__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "describe_client"]
