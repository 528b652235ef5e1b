"""Presence for WebSocket consumers: tracked in ``groups`` from accept to disconnect.

``class Room(PresenceMixin, AsyncJsonWebsocketConsumer)`` (or
``SyncPresenceMixin`` with a ``WebsocketConsumer``) makes the connection
present in every group of :attr:`groups` once it is accepted, the room a
``connect()`` appended included, and leaves them wherever the generic
consumer leaves its groups: on disconnect, and on teardown after an error or
cancellation (``GroupMembership._leave_groups``, which both consumers share).
Joining at accept rather than with the groups means a refused connection is
never announced.

The consumer's own task group, open for the connection's lifetime, is offered
to :class:`~.tracker.Presence` as a host for the lease keeper (see there).
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import anyio.abc

from ..asgi import Receive, Scope, Send
from ..exceptions import InvalidChannelLayerError
from ..sync import async_to_sync
from .tracker import Presence

__all__ = ["PresenceMixin", "SyncPresenceMixin"]


class _PresenceTracking:
    """What both mixins share: the host, joining and leaving, user and meta."""

    #: Groups to be present in; ``None`` means every group in :attr:`groups`
    #: when the connection is accepted.
    presence_groups: ClassVar[list[str] | None] = None
    #: Receive the groups' ``presence.join``/``presence.leave`` (then define
    #: ``presence_join``/``presence_leave`` handlers). ``False`` opts out.
    presence_events: ClassVar[bool] = True

    scope: Scope
    channel_layer: Any
    channel_layer_alias: ClassVar[str | None]
    channel_name: str
    groups: list[str] | None

    def presence_user(self) -> str | None:
        """The key this connection is aggregated under: the scope user's
        primary key as a string, ``None`` for an anonymous visitor."""
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        return str(user.pk)

    def presence_meta(self) -> Any:
        """What the group sees about this connection (JSON-serialisable; runs
        on the event loop, so no database queries). Default: the user name."""
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return {}
        return {"name": user.get_username()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failure: Exception | None = None
        self._presence_joined: list[str] = []
        self._presence_tracker: Presence | None = None
        try:
            async with anyio.create_task_group() as host:
                self._presence_host = host
                try:
                    await super().__call__(scope, receive, send)  # type: ignore[misc]
                except Exception as exc:
                    failure = exc  # re-raised below as itself, not in an ExceptionGroup
                finally:
                    if self._presence_tracker is not None:
                        self._presence_tracker.remove_host(host)
                    host.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            failure = None  # break the frame -> exception reference cycle
            del self._presence_host

    async def _presence_track(self) -> None:
        from . import presence_for

        layer = self.channel_layer
        if layer is None:
            raise InvalidChannelLayerError(
                f"{type(self).__qualname__} tracks presence but no channel layer is "
                f"configured under {self.channel_layer_alias!r} in CHANNEL_LAYERS"
            )
        tracker = self._presence_tracker
        if tracker is None:
            tracker = self._presence_tracker = presence_for(layer)
            tracker.add_host(self._presence_host)
        groups = self.presence_groups if self.presence_groups is not None else self.groups
        user = self.presence_user()
        meta = self.presence_meta()
        for group in groups or ():
            if group not in self._presence_joined:
                await tracker.join(
                    group, self.channel_name, meta, user=user, events=self.presence_events
                )
                self._presence_joined.append(group)

    async def _presence_untrack(self) -> None:
        tracker = self.__dict__.get("_presence_tracker")
        joined = self.__dict__.get("_presence_joined")
        if tracker is None or not joined:
            return
        failure: Exception | None = None
        while joined:
            group = joined.pop()
            try:
                await tracker.leave(group, self.channel_name)
            except Exception as exc:
                if failure is None:
                    failure = exc
        if failure is not None:
            raise failure

    async def _leave_groups(self) -> None:
        """Leave presence first (so nobody is listed who no longer gets the
        group's messages), then the groups."""
        try:
            await self._presence_untrack()
        finally:
            await super()._leave_groups()  # type: ignore[misc]


class PresenceMixin(_PresenceTracking):
    """Presence for :class:`~channels_runtime.generic.websocket.AsyncWebsocketConsumer`
    and its JSON variant; put it first in the bases."""

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)  # type: ignore[misc]
        await self._presence_track()


class SyncPresenceMixin(_PresenceTracking):
    """Presence for the synchronous :class:`~channels_runtime.generic.websocket.WebsocketConsumer`
    and its JSON variant; put it first in the bases."""

    def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        super().accept(subprotocol, headers)  # type: ignore[misc]
        async_to_sync(self._presence_track)()
