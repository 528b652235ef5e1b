"""A room's messages: ``send`` broadcasts to the room, ``on_message`` subscribers receive."""

from typing import Any

import channels_graphql_ws
import graphene


class OnMessage(channels_graphql_ws.Subscription):
    """Notified of every message sent to ``room``."""

    text = graphene.String()

    class Arguments:
        room = graphene.String(required=True)

    @staticmethod
    def subscribe(root: Any, info: Any, room: str) -> list[str]:
        return [room]

    @staticmethod
    def publish(payload: dict[str, str], info: Any, room: str) -> "OnMessage":
        return OnMessage(text=payload["text"])


class Send(graphene.Mutation):
    class Arguments:
        room = graphene.String(required=True)
        text = graphene.String(required=True)

    ok = graphene.Boolean()

    @staticmethod
    async def mutate(root: Any, info: Any, room: str, text: str) -> "Send":
        await OnMessage.broadcast_async(group=room, payload={"text": text})
        return Send(ok=True)


class Query(graphene.ObjectType):
    hello = graphene.String()

    @staticmethod
    def resolve_hello(root: Any, info: Any) -> str:
        return "hello"


class Mutation(graphene.ObjectType):
    send = Send.Field()


class Subscription(graphene.ObjectType):
    on_message = OnMessage.Field()


schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)
