"""The Django-version seam (``channels_runtime/compat/django_versions.py``) on the installed Django.

CI runs this file, like the rest of the suite, on Django 5.2 and on Django 4.2, so
each branch of the seam runs against the Django it was written for. Also here:
the table of tests that need a newer Django (``tests/older_django.py``) names
only tests that exist, and matches the way it says.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Any

import django
import pytest
from django.contrib import auth
from django.contrib.auth.models import UserManager
from django.contrib.sessions.backends.base import SessionBase
from django.core.handlers import asgi as django_asgi
from django.dispatch import Signal
from django.test import override_settings
from older_django import NEEDS, skip_reason

from channels_runtime.compat import django_versions
from channels_runtime.compat.django_versions import get_script_prefix, send_signal

TESTS = Path(__file__).resolve().parent
DOCS = TESTS.parent / "docs"


def test_flags_say_what_the_installed_django_has() -> None:
    flags = {
        "version": django_versions.DJANGO_VERSION,
        "asend": django_versions.ASYNC_SIGNALS,
        "asend_robust": django_versions.ASYNC_SIGNALS,
        "aauthenticate": django_versions.ASYNC_AUTH_API,
        "alogin": django_versions.ASYNC_AUTH_API,
        "acreate_user": django_versions.ASYNC_AUTH_API,
        "session aset": django_versions.ASYNC_SESSION_API,
        "session asave": django_versions.ASYNC_SESSION_API,
    }
    found = {
        "version": tuple(django.VERSION[:2]),
        "asend": hasattr(Signal, "asend"),
        "asend_robust": hasattr(Signal, "asend_robust"),
        "aauthenticate": hasattr(auth, "aauthenticate"),
        "alogin": hasattr(auth, "alogin"),
        "acreate_user": hasattr(UserManager, "acreate_user"),
        "session aset": hasattr(SessionBase, "aset"),
        "session asave": hasattr(SessionBase, "asave"),
    }
    assert flags == found


def djangos_script_prefix(scope: dict[str, Any]) -> str:
    """What this Django itself computes: its function (5.0+) or ASGIHandler's method (4.2)."""
    function = getattr(django_asgi, "get_script_prefix", None)
    if function is not None:
        return str(function(scope))
    return str(django_asgi.ASGIHandler.get_script_prefix(None, scope))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("force_script_name", "scope", "expected"),
    [
        (None, {"root_path": "/chat"}, "/chat"),
        (None, {"root_path": ""}, ""),
        (None, {}, ""),
        ("/forced", {"root_path": "/chat"}, "/forced"),
    ],
)
def test_script_prefix_follows_djangos_rule(
    force_script_name: str | None, scope: dict[str, Any], expected: str
) -> None:
    with override_settings(FORCE_SCRIPT_NAME=force_script_name):
        assert get_script_prefix(scope) == expected
        assert djangos_script_prefix(scope) == expected


@pytest.mark.anyio
async def test_send_signal_runs_sync_receivers_off_the_loop_thread() -> None:
    signal = Signal()
    calls: list[tuple[Any, dict[str, Any], int]] = []

    def receiver(sender: Any, **named: Any) -> str:
        calls.append((sender, named, threading.get_ident()))
        return "answer"

    signal.connect(receiver, weak=False)
    try:
        responses = await send_signal(signal, sender="me", colour="blue")
    finally:
        signal.disconnect(receiver)
    assert responses == [(receiver, "answer")]
    [(sender, named, thread)] = calls
    assert (sender, named) == ("me", {"signal": signal, "colour": "blue"})
    # Sync receivers run where Django's handler sends them from: a worker thread,
    # never the event loop's.
    assert thread != threading.get_ident()


@pytest.mark.anyio
async def test_send_signal_raises_a_receivers_error() -> None:
    signal = Signal()

    def receiver(sender: Any, **named: Any) -> None:
        raise LookupError("from the receiver")

    signal.connect(receiver, weak=False)
    try:
        with pytest.raises(LookupError, match="from the receiver"):
            await send_signal(signal, sender=None)
    finally:
        signal.disconnect(receiver)


@pytest.mark.anyio
@pytest.mark.skipif(
    not django_versions.ASYNC_SIGNALS,
    reason="async signal receivers are Django 5.0+; this is Django "
    + ".".join(map(str, django.VERSION[:2])),
)
async def test_send_signal_awaits_async_receivers() -> None:
    signal = Signal()
    seen: list[str] = []

    async def receiver(sender: Any, **named: Any) -> str:
        seen.append(named["word"])
        return "async answer"

    signal.connect(receiver, weak=False)
    try:
        assert await send_signal(signal, sender=None, word="hi") == [(receiver, "async answer")]
    finally:
        signal.disconnect(receiver)
    assert seen == ["hi"]


# -- the table of tests that need a newer Django ---------------------------------------


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_entry_names_an_existing_test() -> None:
    entries = [entry for groups in NEEDS.values() for _, names in groups for entry in names]
    assert entries
    for entry in entries:
        file_name, _, rest = entry.partition("::")
        function, _, parameter = rest.partition("[")
        assert function in _test_names(TESTS / file_name), f"{entry}: no such test"
        if parameter.startswith("docs/"):  # a documentation page, by its path
            page = parameter.split(":")[0].removesuffix("-")
            assert (DOCS.parent / page).exists(), f"{entry}: no page {page}"


def test_skip_reason_names_the_api_and_the_version() -> None:
    node = "test_sessions.py::test_save_every_request[trio]"
    reason = skip_reason(node, (4, 2))
    assert reason is not None
    assert "Django 5.1+" in reason
    assert "SessionBase" in reason
    assert reason.endswith("this is Django 4.2")
    assert skip_reason(node, (5, 1)) is None
    assert skip_reason(node, (5, 2)) is None
    # A 5.0 API is there on 5.0, not on 4.2.
    signal_test = "test_bridge_hooks.py::test_signal_asend_first_call"
    assert skip_reason(signal_test, (5, 0)) is None
    assert "Django 5.0+" in (skip_reason(signal_test, (4, 2)) or "")


def test_skip_reason_matches_whole_names_only() -> None:
    assert skip_reason("test_django_on_trio.py::test_sessions", (4, 2)) is not None
    assert skip_reason("test_django_on_trio.py::test_sessions[asyncio]", (4, 2)) is not None
    assert skip_reason("test_django_on_trio.py::test_sessions_elsewhere", (4, 2)) is None
    assert skip_reason("test_other.py::test_sessions", (4, 2)) is None
    assert skip_reason("test_docs.py::test_page_runs[docs/sessions-and-auth.md-trio]", (4, 2))
    assert skip_reason("test_docs.py::test_page_runs[docs/consumers.md-trio]", (4, 2)) is None
