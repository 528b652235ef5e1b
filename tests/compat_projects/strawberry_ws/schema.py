"""The GraphQL schema: a greeting, and a subscription that counts."""

from collections.abc import AsyncGenerator

import strawberry


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str = "world") -> str:
        return f"Hello {name}"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, upto: int) -> AsyncGenerator[int, None]:
        for number in range(upto):
            yield number


schema = strawberry.Schema(query=Query, subscription=Subscription)
