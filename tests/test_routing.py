"""Tests for channels_runtime.routing: protocol, URL and channel-name routing,
the built-in lifespan answer, and get_default_application.

The routers are driven with raw ASGI calls (anyio memory streams) so each test
sees exactly which messages an application sent; one test per backend runs a
real Hypercorn server.
"""

from __future__ import annotations

import inspect
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import include, path, re_path
from hypercorn_serve import serve_with_hypercorn

from channels_runtime.asgi import Message, Receive, Scope, Send
from channels_runtime.layers import channel_layers, get_channel_layer
from channels_runtime.layers.base import BaseChannelLayer
from channels_runtime.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
    get_default_application,
)

# -- helpers -----------------------------------------------------------------


class ClosingLayer(BaseChannelLayer):
    """A layer that only records whether the server closed it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


class BrokenCloseLayer(BaseChannelLayer):
    """A layer whose close() fails, as a lost Redis connection might."""

    async def close(self) -> None:
        raise ConnectionError("redis went away")


def layers_using(cls: type) -> Any:
    return override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": f"{__name__}.{cls.__qualname__}"}}
    )


class Recorder:
    """An ASGI app that records the scopes it was called with and does nothing else."""

    def __init__(self, name: str = "app") -> None:
        self.name = name
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)

    @property
    def scope(self) -> Scope:
        assert len(self.scopes) == 1, f"{self.name} called {len(self.scopes)} times"
        return self.scopes[0]


class Wrapper:
    """Middleware in Channels' style: keeps the wrapped app in ``.inner``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.inner(dict(scope, wrapped=True), receive, send)


async def run_app(app: Any, scope: Scope, incoming: list[Message] | None = None) -> list[Message]:
    """Call ``app`` with ``incoming`` queued for receive(); return what it sent.

    An app that waits for more than was queued blocks, and the timeout fails the test.
    """
    sent: list[Message] = []
    tx, rx = anyio.create_memory_object_stream[Message](100)
    for message in incoming or []:
        tx.send_nowait(message)

    async def send(message: Message) -> None:
        sent.append(message)

    with tx, rx, anyio.fail_after(5):
        await app(scope, rx.receive, send)
    assert rx.statistics().current_buffer_used == 0, "app left messages unread"
    return sent


def ws_scope(url: str, **extra: Any) -> Scope:
    return {"type": "websocket", "path": url, "headers": [], **extra}


def http_scope(url: str, **extra: Any) -> Scope:
    return {"type": "http", "method": "GET", "path": url, "headers": [], **extra}


def routing_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "channels_runtime.routing"]


def served(router: Any) -> ProtocolTypeRouter:
    """``router`` as a server would call it: below ProtocolTypeRouter, which refuses
    the connections it cannot route (URLRouter itself raises NoRouteFound)."""
    return ProtocolTypeRouter({"websocket": router, "http": router})


# -- ProtocolTypeRouter --------------------------------------------------------


@pytest.mark.anyio
async def test_protocol_type_router_dispatches_on_scope_type() -> None:
    http, ws = Recorder("http"), Recorder("ws")
    router = ProtocolTypeRouter({"http": http, "websocket": ws})
    await run_app(router, http_scope("/a/"))
    await run_app(router, ws_scope("/b/"))
    assert http.scope["path"] == "/a/"
    assert ws.scope["path"] == "/b/"


@pytest.mark.anyio
async def test_protocol_type_router_unknown_type_names_it_and_the_known_types() -> None:
    router = ProtocolTypeRouter({"http": Recorder(), "websocket": Recorder()})
    with pytest.raises(ValueError, match="'mqtt'") as info:
        await run_app(router, {"type": "mqtt"})
    assert "'http'" in str(info.value)
    assert "'websocket'" in str(info.value)


def test_protocol_type_router_is_recognised_as_asgi3_by_hypercorn() -> None:
    from hypercorn.utils import is_asgi

    router = ProtocolTypeRouter({})
    assert inspect.iscoroutinefunction(type(router).__call__)
    assert is_asgi(router)
    assert is_asgi(URLRouter([]))
    assert is_asgi(ChannelNameRouter({}))


@pytest.mark.anyio
async def test_lifespan_is_answered_and_layers_are_closed_at_shutdown() -> None:
    with layers_using(ClosingLayer):
        layer = get_channel_layer()
        assert isinstance(layer, ClosingLayer)
        router = ProtocolTypeRouter({"http": Recorder()})
        sent = await run_app(
            router,
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
        )
        assert sent == [
            {"type": "lifespan.startup.complete"},
            {"type": "lifespan.shutdown.complete"},
        ]
        assert layer.closed == 1
        assert channel_layers.backends == {}


@pytest.mark.anyio
async def test_lifespan_shutdown_without_any_layer_made() -> None:
    with layers_using(ClosingLayer):
        sent = await run_app(
            ProtocolTypeRouter({}),
            {"type": "lifespan"},
            [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
        )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.anyio
async def test_lifespan_shutdown_failure_is_reported_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with layers_using(BrokenCloseLayer):
        get_channel_layer()
        sent = await run_app(
            ProtocolTypeRouter({}),
            {"type": "lifespan"},
            [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
        )
    assert sent[0] == {"type": "lifespan.startup.complete"}
    assert sent[1]["type"] == "lifespan.shutdown.failed"
    assert "redis went away" in sent[1]["message"]
    (record,) = routing_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)


@pytest.mark.anyio
async def test_user_lifespan_app_is_used_instead() -> None:
    lifespan = Recorder("lifespan")
    with layers_using(ClosingLayer):
        layer = get_channel_layer()
        sent = await run_app(ProtocolTypeRouter({"lifespan": lifespan}), {"type": "lifespan"})
    assert sent == []
    assert lifespan.scope["type"] == "lifespan"
    assert layer.closed == 0


# -- URLRouter: matching --------------------------------------------------------


@pytest.mark.anyio
async def test_path_with_converters_fills_url_route_kwargs() -> None:
    room, other = Recorder("room"), Recorder("other")
    router = URLRouter(
        [
            path("rooms/<int:room_id>/<slug:name>/", room),
            path("other/", other),
        ]
    )
    await run_app(router, ws_scope("/rooms/42/the-lobby/"))
    assert room.scope["url_route"] == {"args": (), "kwargs": {"room_id": 42, "name": "the-lobby"}}
    assert room.scope["path_remaining"] == ""
    await run_app(router, ws_scope("/other/"))
    assert other.scope["url_route"] == {"args": (), "kwargs": {}}


@pytest.mark.anyio
async def test_path_is_an_endpoint_and_converter_mismatch_does_not_match(
    caplog: pytest.LogCaptureFixture,
) -> None:
    room = Recorder()
    router = served(URLRouter([path("rooms/<int:room_id>/", room)]))
    assert await run_app(router, ws_scope("/rooms/abc/"), [{"type": "websocket.connect"}]) == [
        {"type": "websocket.close"}
    ]
    assert await run_app(router, ws_scope("/rooms/1/extra/"), [{"type": "websocket.connect"}]) == [
        {"type": "websocket.close"}
    ]
    assert room.scopes == []


@pytest.mark.anyio
async def test_re_path_positional_and_named_groups() -> None:
    positional, named = Recorder("positional"), Recorder("named")
    router = URLRouter(
        [
            re_path(r"^pos/(\d+)/(\w+)/$", positional),
            re_path(r"^named/(?P<year>[0-9]{4})/$", named),
        ]
    )
    await run_app(router, ws_scope("/pos/7/abc/"))
    await run_app(router, ws_scope("/named/2024/"))
    assert positional.scope["url_route"] == {"args": ("7", "abc"), "kwargs": {}}
    assert named.scope["url_route"] == {"args": (), "kwargs": {"year": "2024"}}


@pytest.mark.anyio
async def test_default_kwargs_of_the_route_are_added() -> None:
    app = Recorder()
    router = URLRouter([path("feed/<int:page>/", app, {"format": "json", "page": 1})])
    await run_app(router, http_scope("/feed/5/"))
    # Like Django, the route's extra kwargs win over captured values.
    assert app.scope["url_route"]["kwargs"] == {"format": "json", "page": 1}


@pytest.mark.anyio
async def test_first_matching_route_wins() -> None:
    first, second = Recorder("first"), Recorder("second")
    router = URLRouter([re_path(r"^a/", first), path("a/b/", second)])
    await run_app(router, ws_scope("/a/b/"))
    assert len(first.scopes) == 1
    assert second.scopes == []


@pytest.mark.anyio
async def test_nested_routers_merge_args_and_kwargs() -> None:
    leaf = Recorder("leaf")
    inner = URLRouter([path("chat/<int:room>/", leaf)])
    middle = URLRouter([re_path(r"^(\w+)/", inner)])
    router = URLRouter([path("ws/<str:tenant>/", middle)])
    await run_app(router, ws_scope("/ws/acme/support/chat/3/"))
    scope = leaf.scope
    assert scope["url_route"] == {"args": ("support",), "kwargs": {"tenant": "acme", "room": 3}}
    assert scope["path_remaining"] == ""
    assert scope["path"] == "/ws/acme/support/chat/3/"


@pytest.mark.anyio
async def test_nested_inner_kwargs_override_outer() -> None:
    leaf = Recorder()
    router = URLRouter([path("<str:x>/", URLRouter([path("<str:x>/", leaf)]))])
    await run_app(router, ws_scope("/outer/inner/"))
    assert leaf.scope["url_route"]["kwargs"] == {"x": "inner"}


@pytest.mark.anyio
async def test_nested_router_that_does_not_match_lets_later_routes_be_tried() -> None:
    a, b = Recorder("a"), Recorder("b")
    router = URLRouter(
        [
            path("ws/", URLRouter([path("a/", a)])),
            path("ws/b/", b),
        ]
    )
    await run_app(router, ws_scope("/ws/b/"))
    assert a.scopes == []
    assert b.scope["path_remaining"] == ""


@pytest.mark.anyio
async def test_nested_router_behind_middleware_gets_a_prefix_match() -> None:
    leaf = Recorder()
    router = URLRouter([path("ws/", Wrapper(URLRouter([path("chat/<int:room>/", leaf)])))])
    await run_app(router, ws_scope("/ws/chat/9/"))
    assert leaf.scope["wrapped"] is True
    assert leaf.scope["url_route"]["kwargs"] == {"room": 9}


@pytest.mark.anyio
async def test_user_url_pattern_is_not_modified_and_can_be_shared() -> None:
    leaf = Recorder()
    route = path("ws/", URLRouter([path("x/", leaf)]))
    pattern = route.pattern
    first, second = URLRouter([route]), URLRouter([route])
    assert route.pattern is pattern
    assert route.pattern.match("ws/x/") is None  # still Django's endpoint semantics
    await run_app(first, ws_scope("/ws/x/"))
    await run_app(second, ws_scope("/ws/x/"))
    assert len(leaf.scopes) == 2


def test_re_path_anchored_at_end_cannot_lead_to_a_nested_router() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'\^ws/\$'.*trailing '\$'"):
        URLRouter([re_path(r"^ws/$", URLRouter([]))])
    URLRouter([re_path(r"^price\$/", URLRouter([]))])  # an escaped dollar is fine


def test_include_is_rejected_naming_the_route() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'api/'.*include\(\) is not supported"):
        URLRouter([path("api/", include([path("x/", Recorder())]))])


@pytest.mark.parametrize(
    "entry",
    [pytest.param(Recorder(), id="bare-app"), pytest.param("chat/", id="string")],
)
def test_bad_route_entry_is_rejected_at_construction(entry: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"route #1 .*path\(\) or .*re_path\(\)"):
        URLRouter([path("ok/", Recorder()), entry])


def test_consumer_class_without_as_asgi_is_rejected() -> None:
    from channels_runtime.consumer import AsyncConsumer

    class ChatConsumer(AsyncConsumer):
        pass

    with pytest.raises(ImproperlyConfigured, match=r"ChatConsumer\.as_asgi\(\)"):
        URLRouter([path("chat/", ChatConsumer)])


def test_invalid_regex_fails_at_construction() -> None:
    with pytest.raises(ImproperlyConfigured, match="not a valid regular expression"):
        URLRouter([re_path(r"^(unclosed/", Recorder())])


# -- URLRouter: root_path ------------------------------------------------------------


@pytest.mark.anyio
async def test_root_path_is_stripped_before_matching() -> None:
    app = Recorder()
    router = URLRouter([path("chat/<int:room>/", app)])
    await run_app(router, ws_scope("/mount/chat/1/", root_path="/mount"))
    assert app.scope["url_route"]["kwargs"] == {"room": 1}
    await run_app(router, ws_scope("/mount/chat/2/", root_path="/mount/"))
    assert app.scopes[1]["url_route"]["kwargs"] == {"room": 2}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("/chat/1/", id="outside-root"),
        pytest.param("/mountain/chat/1/", id="not-a-segment-boundary"),
    ],
)
async def test_path_outside_root_path_is_refused(url: str) -> None:
    app = Recorder()
    router = served(URLRouter([path("chat/<int:room>/", app), re_path(r"^.*$", app)]))
    sent = await run_app(router, ws_scope(url, root_path="/mount"), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close"}]
    assert app.scopes == []


@pytest.mark.anyio
async def test_nested_router_uses_path_remaining_not_root_path() -> None:
    leaf = Recorder()
    router = URLRouter([path("ws/", URLRouter([path("x/", leaf)]))])
    await run_app(router, ws_scope("/mount/ws/x/", root_path="/mount"))
    assert leaf.scope["path_remaining"] == ""


# -- URLRouter: unmatched paths ------------------------------------------------------


@pytest.mark.anyio
async def test_unmatched_websocket_is_denied_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    router = ProtocolTypeRouter({"websocket": URLRouter([path("chat/", Recorder())])})
    sent = await run_app(router, ws_scope("/nope/"), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close"}]
    (record,) = routing_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "No route found for path '/nope/' (websocket)"
    assert record.exc_info is None
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [record]


@pytest.mark.anyio
async def test_unmatched_websocket_that_disconnects_first_gets_nothing_sent() -> None:
    router = served(URLRouter([]))
    sent = await run_app(router, ws_scope("/x/"), [{"type": "websocket.disconnect", "code": 1006}])
    assert sent == []


@pytest.mark.anyio
async def test_unmatched_http_reads_the_body_and_answers_404(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = served(URLRouter([path("chat/", Recorder())]))
    body = [
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.request", "body": b"b", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
    ]
    sent = await run_app(router, {**http_scope("/missing/"), "method": "POST"}, body)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 404
    assert sent[1] == {"type": "http.response.body", "body": b"Not Found"}
    assert len(sent) == 2
    (record,) = routing_records(caplog)
    assert record.getMessage() == "No route found for path '/missing/' (http)"


@pytest.mark.anyio
async def test_a_huge_unmatched_path_is_cut_short_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = served(URLRouter([path("chat/", Recorder())]))
    long_path = "/" + "x" * 30000
    sent = await run_app(router, http_scope(long_path), [{"type": "http.request", "body": b""}])
    assert sent[0]["status"] == 404
    (record,) = routing_records(caplog)
    message = record.getMessage()
    assert len(message) < 300
    assert message.startswith("No route found for path '/xxx")
    assert f"({len(repr(long_path)) - 200} more characters) (http)" in message


@pytest.mark.anyio
async def test_unmatched_http_client_gone_gets_no_response() -> None:
    sent = await run_app(
        served(URLRouter([])),
        http_scope("/x/"),
        [{"type": "http.request", "body": b"", "more_body": True}, {"type": "http.disconnect"}],
    )
    assert sent == []


@pytest.mark.anyio
async def test_unmatched_nested_router_behind_opaque_wrapper_is_refused_too() -> None:
    class Opaque:
        """Hides its router (no ``.inner``) but declares path routing."""

        _path_routing = True

        def __init__(self, app: Any) -> None:
            self._app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self._app(scope, receive, send)

    router = served(URLRouter([path("ws/", Opaque(URLRouter([path("a/", Recorder())])))]))
    sent = await run_app(router, ws_scope("/ws/b/"), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close"}]


@pytest.mark.anyio
async def test_unmatched_other_scope_type_raises_naming_the_path() -> None:
    with pytest.raises(ValueError, match=r"No route found for path '/x/'"):
        await run_app(URLRouter([]), {"type": "custom", "path": "/x/"})


@pytest.mark.anyio
async def test_scope_without_path_is_an_error() -> None:
    with pytest.raises(ValueError, match="No 'path' key"):
        await run_app(URLRouter([]), {"type": "websocket"})


# -- ChannelNameRouter ---------------------------------------------------------------


@pytest.mark.anyio
async def test_channel_name_router() -> None:
    thumbs, mail = Recorder("thumbs"), Recorder("mail")
    router = ProtocolTypeRouter(
        {"channel": ChannelNameRouter({"thumbnails": thumbs, "mail": mail})}
    )
    await run_app(router, {"type": "channel", "channel": "mail"})
    assert mail.scope["channel"] == "mail"
    assert thumbs.scopes == []
    with pytest.raises(ValueError, match=r"'video'.*'thumbnails', 'mail'"):
        await run_app(router, {"type": "channel", "channel": "video"})
    with pytest.raises(ValueError, match="without a 'channel' key"):
        await run_app(ChannelNameRouter({}), {"type": "channel"})


# -- get_default_application -------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway importable package ``rt_project_<n>`` (unique per test)."""
    name = f"rt_project_{abs(hash(tmp_path)) % 10**8}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_get_default_application_returns_the_app(project: Path) -> None:
    (project / "asgi.py").write_text("application = object()\n")
    with override_settings(ASGI_APPLICATION=f"{project.name}.asgi.application"):
        app = get_default_application()
    assert app is sys.modules[f"{project.name}.asgi"].application


@pytest.mark.parametrize("value", [None, ""])
def test_get_default_application_unset(value: str | None) -> None:
    with (
        override_settings(ASGI_APPLICATION=value),
        pytest.raises(ImproperlyConfigured, match="Cannot find ASGI_APPLICATION setting"),
    ):
        get_default_application()


def test_get_default_application_not_dotted() -> None:
    with (
        override_settings(ASGI_APPLICATION="application"),
        pytest.raises(ImproperlyConfigured, match="not a dotted path"),
    ):
        get_default_application()


def test_get_default_application_module_missing(project: Path) -> None:
    dotted = f"{project.name}.nowhere.application"
    with (
        override_settings(ASGI_APPLICATION=dotted),
        pytest.raises(ImproperlyConfigured, match="Cannot import ASGI_APPLICATION module") as info,
    ):
        get_default_application()
    assert f"{project.name}.nowhere" in str(info.value)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        pytest.param("import rt_missing_dependency_xyz\n", ModuleNotFoundError, id="missing-dep"),
        pytest.param("from os import rt_no_such_name\n", ImportError, id="bad-name"),
    ],
)
def test_get_default_application_import_error_inside_module_is_not_hidden(
    project: Path, source: str, error: type[Exception]
) -> None:
    (project / "asgi.py").write_text(textwrap.dedent(source))
    with (
        override_settings(ASGI_APPLICATION=f"{project.name}.asgi.application"),
        pytest.raises(ImproperlyConfigured, match="was found but importing it raised") as info,
    ):
        get_default_application()
    assert type(info.value.__cause__) is error
    assert str(info.value.__cause__) in str(info.value)


def test_get_default_application_other_errors_propagate(project: Path) -> None:
    (project / "asgi.py").write_text("raise RuntimeError('boom in asgi.py')\n")
    with (
        override_settings(ASGI_APPLICATION=f"{project.name}.asgi.application"),
        pytest.raises(RuntimeError, match=r"boom in asgi\.py"),
    ):
        get_default_application()


def test_get_default_application_missing_attribute(project: Path) -> None:
    (project / "asgi.py").write_text("app = 1\n")
    with (
        override_settings(ASGI_APPLICATION=f"{project.name}.asgi.application"),
        pytest.raises(ImproperlyConfigured, match=r"Cannot find 'application' in .*asgi'"),
    ):
        get_default_application()


# -- end to end with Hypercorn -------------------------------------------------------


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": b"hello " + str(scope["url_route"]["kwargs"]["name"]).encode(),
        }
    )


@pytest.mark.anyio
async def test_hypercorn_end_to_end(
    anyio_backend: tuple[str, dict[str, object]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = ProtocolTypeRouter({"http": URLRouter([path("hello/<str:name>/", hello)])})
    responses: list[httpx.Response] = []

    async def client(base_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
            responses.append(await http.get("/hello/world/"))
            responses.append(await http.get("/nowhere/"))

    with layers_using(ClosingLayer), anyio.fail_after(15):
        layer = get_channel_layer()
        await serve_with_hypercorn(app, anyio_backend[0], client)

    assert [(r.status_code, r.text) for r in responses] == [
        (200, "hello world"),
        (404, "Not Found"),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Lifespan" in m], messages
    assert layer.closed == 1
    assert [r.getMessage() for r in routing_records(caplog)] == [
        "No route found for path '/nowhere/' (http)"
    ]
    assert any(
        r.name == "hypercorn.error" and "Running on" in r.getMessage() for r in caplog.records
    )


async def test_router_serves_djangos_asgi_handler_on_every_backend(
    anyio_backend_name: str,
) -> None:
    from django.core.asgi import get_asgi_application as django_asgi_application
    from django.core.exceptions import ImproperlyConfigured
    from django.core.handlers.asgi import ASGIHandler

    from channels_runtime.http import HttpApplication
    from channels_runtime.testing import HttpCommunicator

    # Django's own handler, as the Channels tutorial maps it, is served by
    # channels_runtime.http on every backend (Django's cannot run on trio).
    handler = django_asgi_application()
    router = ProtocolTypeRouter({"http": handler})
    assert router.application_mapping["http"] is handler
    assert router._django_http is not None
    assert isinstance(router._django_http[1], HttpApplication)
    with override_settings(ROOT_URLCONF="http_urls"):
        response = await HttpCommunicator(router, "GET", "/hello/").get_response()
        assert (response["status"], response["body"]) == (200, b"hello sync")
        assert (await HttpCommunicator(router, "GET", "/no-such-page/").get_response())[
            "status"
        ] == 404

    # A subclass may handle requests its own way, so it is not replaced: on trio it
    # is refused with the fix.
    class OwnHandler(ASGIHandler):
        pass

    router = ProtocolTypeRouter({"http": OwnHandler()})  # type: ignore[dict-item]
    assert router._django_http is None
    communicator = HttpCommunicator(router, "GET", "/hello/")
    with override_settings(ROOT_URLCONF="http_urls"):
        if anyio_backend_name == "trio":
            with pytest.raises(ImproperlyConfigured, match="get_asgi_application"):
                await communicator.get_response()
        else:
            assert (await communicator.get_response())["status"] == 200


@pytest.mark.anyio
async def test_url_router_serves_djangos_asgi_handler_route_on_every_backend() -> None:
    from django.core.asgi import get_asgi_application as django_asgi_application
    from django.core.handlers.asgi import ASGIHandler

    from channels_runtime.http import HttpApplication
    from channels_runtime.server.preflight import Refused, prepare_application
    from channels_runtime.testing import HttpCommunicator

    # strawberry's guide maps Django's handler as a catch-all URLRouter route next
    # to its own consumers; that route is served by channels_runtime.http too.
    handler = django_asgi_application()
    router = ProtocolTypeRouter(
        {"http": URLRouter([path("other/", Recorder("other")), re_path(r"^", handler)])}
    )
    inner = router.application_mapping["http"]
    assert inner.routes[1].callback is handler  # the user's own object is kept
    assert isinstance(inner._routes[1].callback, HttpApplication)
    with override_settings(ROOT_URLCONF="http_urls"):
        response = await HttpCommunicator(router, "GET", "/hello/").get_response()
        assert (response["status"], response["body"]) == (200, b"hello sync")
    # serve/runserver's preflight accepts it on trio, and still refuses a subclass there.
    assert prepare_application(router, "trio", where="test") is router

    class OwnHandler(ASGIHandler):
        pass

    refused = ProtocolTypeRouter({"http": URLRouter([re_path(r"^", OwnHandler())])})
    with pytest.raises(Refused, match="OwnHandler"):
        prepare_application(refused, "trio", where="test")
