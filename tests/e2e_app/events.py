"""Recording what happened inside a server process, for the test to read afterwards."""

import os

import anyio


async def record(line: str) -> None:
    """Append ``line`` to the file named by ``E2E_EVENTS_FILE``, if the test set one."""
    events_file = os.environ.get("E2E_EVENTS_FILE")
    if events_file:
        async with await anyio.open_file(events_file, "a") as file:
            await file.write(f"{line}\n")
