"""The suite on an older Django: what it skips there, and set-up that works on every version.

CI runs the whole suite twice: on Django 5.2 and on Django 4.2, the oldest version
``pyproject.toml`` declares (docs/installation.md). channels_runtime itself works
on both (its version branches are in ``channels_runtime/compat/django_versions.py``).
Some tests, though, are about a Django API that 4.2 does not have, or their own
code calls one: :data:`NEEDS` lists them with the API and the version that
added it, and :func:`skip_tests_needing_newer_django` (called by conftest.py)
skips them on older versions with that reason, so ``-ra`` shows each one.
``tests/test_django_versions.py`` checks that every entry still names a test.

Set-up that only needs *some* way to save or read a session or create a user
uses :func:`save_session`, :func:`session_get` and :func:`create_user`, which
work on every version, so the library's own code under test runs its pre-5.0
and pre-5.1 paths on 4.2.
"""

from __future__ import annotations

from typing import Any

import django
import pytest

from channels_runtime.db import database_sync_to_async

#: Django version -> (what it added, tests that need it). A test is named
#: ``file::function`` (every parametrization) or by a node id prefix with ``[``.
NEEDS: dict[tuple[int, int], list[tuple[str, list[str]]]] = {
    (5, 0): [
        (
            "Signal.asend/asend_robust and async signal receivers",
            [
                "test_django_on_trio.py::test_signal_asend_with_sync_and_async_receivers",
                "test_django_on_trio.py::test_signal_asend_robust_collects_errors",
                "test_django_on_trio.py::test_signal_asend_raises_the_first_receiver_error",
                "test_django_on_trio.py::test_signal_send_with_async_receiver_from_a_sync_thread",
                "test_bridge_hooks.py::test_signal_asend_first_call",
            ],
        ),
        (
            "the async auth API (aauthenticate, alogin, alogout, aget_user, acreate_user)",
            [
                "test_django_on_trio.py::test_authenticate",
                "test_django_on_trio.py::test_login_get_user_logout",
                "test_example_chat.py::test_logged_in_user_is_named",
            ],
        ),
    ],
    (5, 1): [
        (
            "the async session API (SessionBase.aget, aset, asave...) in the test's own code",
            [
                "test_django_on_trio.py::test_sessions",
                "test_django_on_trio.py::test_many_concurrent_tasks_with_random_cancellation",
                "test_sessions.py::test_websocket_consumer_reads_session_from_cookie",
                "test_sessions.py::test_vary_is_left_to_the_application",
                "test_sessions.py::test_unmodified_session_not_saved",
                "test_sessions.py::test_session_deleted_concurrently_is_suspicious",
                "test_sessions.py::test_server_error_does_not_save",
                "test_sessions.py::test_save_every_request",
                "test_sessions.py::test_outer_session_middleware_owns_the_session",
                "test_sessions.py::test_modified_session_saved_and_cookie_set",
                "test_sessions.py::test_emptied_session_deletes_cookie",
                "test_sessions.py::test_cookie_attributes_follow_settings",
                "test_channels_suite_parity.py::test_a_session_response_carries_only_set_cookie",
            ],
        ),
        (
            "examples written for current Django: aauthenticate, acreate_user (5.0) and "
            "SessionBase.aget/aset/asave (5.1)",
            [
                "test_docs.py::test_page_runs[docs/sessions-and-auth.md-",
                "test_docs.py::test_script_runs[docs/django-on-trio.md:",
            ],
        ),
    ],
}


def _matches(node_id: str, entry: str) -> bool:
    if "[" in entry:
        return node_id.startswith(entry)
    return node_id == entry or node_id.startswith(entry + "[")


def skip_reason(node_id: str, version: tuple[int, ...] | None = None) -> str | None:
    """Why ``node_id`` (relative to ``tests/``) cannot run on ``version``, or ``None``."""
    running = tuple(django.VERSION[:2]) if version is None else version
    for needed, groups in NEEDS.items():
        if running >= needed:
            continue
        for what, entries in groups:
            if any(_matches(node_id, entry) for entry in entries):
                shown = ".".join(map(str, running[:2]))
                return f"needs Django {needed[0]}.{needed[1]}+ ({what}); this is Django {shown}"
    return None


def skip_tests_needing_newer_django(items: list[pytest.Item]) -> None:
    for item in items:
        node_id = item.nodeid.removeprefix("tests/")
        reason = skip_reason(node_id)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


async def create_user(username: str, password: str, **fields: Any) -> Any:
    """``User.objects.create_user`` in the ORM's worker thread (``acreate_user`` is 5.0+)."""
    from django.contrib.auth.models import User

    return await database_sync_to_async(User.objects.create_user)(
        username=username, password=password, **fields
    )


async def save_session(session: Any, **values: Any) -> None:
    """Set ``values`` on ``session`` and save it (``aset``/``asave`` are 5.1+)."""

    def write() -> None:
        for key, value in values.items():
            session[key] = value
        session.save()

    await database_sync_to_async(write)()


async def session_get(session: Any, key: str) -> Any:
    """``session.get(key)`` in the ORM's worker thread (``aget`` is 5.1+)."""
    return await database_sync_to_async(session.get)(key)
