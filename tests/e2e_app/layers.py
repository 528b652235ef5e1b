"""An in-memory layer that records being closed, to observe lifespan shutdown from outside."""

from channels_runtime.layers import InMemoryChannelLayer

from .events import record


class RecordingInMemoryChannelLayer(InMemoryChannelLayer):
    async def close(self) -> None:
        await super().close()
        await record("layer closed")
