"""Name the asyncio call that stopped a consumer on trio, and say what to do.

Libraries built on Channels were written for asyncio, and some call it
directly: djangochannelsrestframework's ``@action(detached=True)`` runs
``asyncio.create_task``, strawberry's WebSocket handlers ``asyncio.create_task``
and ``asyncio.wait_for``, django-channels-graphql-ws uses asyncio throughout.
Under a trio worker there is no asyncio event loop, and each of those fails with
an error that names neither the call nor the cause:
``RuntimeError: no running event loop``, trio's ``unrecognized yield message``
for an awaited asyncio future, or an ``AttributeError`` from deep inside an
``asyncio.Queue`` that found no loop.

:func:`raise_if_asyncio_on_trio` recognises those failures (only while running
on trio, and only when asyncio's own code or asyncio's loop lookup raised them),
finds the frame that called into asyncio, and raises
:class:`AsyncioCallOnTrio` from the original error, which stays attached as its
cause::

    asyncio.create_task() cannot run on trio: it is called by
    djangochannelsrestframework.consumers.AsyncAPIConsumer.handle_action, line 127
    (.../djangochannelsrestframework/consumers.py), and needs a running asyncio
    event loop, which a trio worker does not have. Serve this application with an
    asyncio worker class instead: channels-runtime serve -k asyncio (or -k uvloop).

The consumer calls it when a consumer instance fails (see
:class:`channels_runtime.consumer.AsyncConsumer`), so the server's log shows this
message under the original traceback. Nothing here runs unless something has
already failed.
"""

from __future__ import annotations

import asyncio
import linecache
import os
from types import CodeType, FrameType, TracebackType

from .backend import running_on_trio

__all__ = ["ASYNCIO_PACKAGE", "AsyncioCallOnTrio", "find_asyncio_call", "raise_if_asyncio_on_trio"]

#: The directory of the standard library's asyncio package: a frame whose code
#: lives here is asyncio's own.
ASYNCIO_PACKAGE = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep

#: What to do instead, appended to every message.
ADVICE = (
    "Serve this application with an asyncio worker class instead: "
    "channels-runtime serve -k asyncio (or -k uvloop)."
)

#: What asyncio's loop lookups raise without a loop: get_running_loop() (and the
#: functions that call it), and get_event_loop() outside the main thread.
_NO_LOOP = "no running event loop"
_NO_CURRENT_LOOP = "There is no current event loop in thread"
_FOREIGN_YIELD = "trio.run received unrecognized yield message"


class AsyncioCallOnTrio(RuntimeError):
    """Code running on trio called an asyncio API that needs asyncio's event loop.

    ``api`` is the asyncio function or method (``"asyncio.create_task()"``),
    ``caller`` the fully qualified function that called it, ``filename`` and
    ``lineno`` where. The original error is the ``__cause__``.
    """

    def __init__(self, api: str, caller: str, filename: str, lineno: int) -> None:
        self.api = api
        self.caller = caller
        self.filename = filename
        self.lineno = lineno
        super().__init__(
            f"{api} cannot run on trio: it is called by {caller}, line {lineno} ({filename}), "
            "and needs a running asyncio event loop, which a trio worker does not have. " + ADVICE
        )


def _is_asyncio(code: CodeType) -> bool:
    return os.path.abspath(code.co_filename).startswith(ASYNCIO_PACKAGE)


def _qualified(frame: FrameType) -> str:
    module = frame.f_globals.get("__name__", "?")
    return f"{module}.{frame.f_code.co_qualname}"


def _frames(tb: TracebackType | None) -> list[tuple[FrameType, int]]:
    found = []
    while tb is not None:
        found.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return found


def _looks_like_asyncio_without_loop(exc: BaseException, innermost_is_asyncio: bool) -> bool:
    message = str(exc)
    if isinstance(exc, RuntimeError):
        return message == _NO_LOOP or message.startswith(_NO_CURRENT_LOOP)
    if isinstance(exc, TypeError):
        return message.startswith(_FOREIGN_YIELD)
    if isinstance(exc, AttributeError):
        # asyncio's loop-bound objects (Queue, Event, Lock...) take the running loop
        # lazily; with none they go on with None and fail on its first method.
        return innermost_is_asyncio and message.startswith("'NoneType' object has no attribute")
    return False


def find_asyncio_call(exc: BaseException) -> AsyncioCallOnTrio | None:
    """The :class:`AsyncioCallOnTrio` that explains ``exc``, or None if it is something else.

    Does not check which loop is running: :func:`raise_if_asyncio_on_trio` does.
    """
    frames = _frames(exc.__traceback__)
    if not frames:
        return None
    innermost_is_asyncio = _is_asyncio(frames[-1][0].f_code)
    if not _looks_like_asyncio_without_loop(exc, innermost_is_asyncio):
        return None
    first_asyncio = next((i for i, (f, _) in enumerate(frames) if _is_asyncio(f.f_code)), None)
    if first_asyncio is None:
        # Raised by asyncio's C functions (get_running_loop, current_task...) or by
        # trio on an awaited C-implemented future: the innermost frame made the call.
        if isinstance(exc, AttributeError):
            return None
        caller, lineno = frames[-1]
        line = linecache.getline(caller.f_code.co_filename, lineno).strip()
        api = f"the asyncio call in `{line}`" if "asyncio" in line else f"`{line}` (asyncio)"
    elif first_asyncio == 0:
        return None  # asyncio's own code with no caller in view: nothing to name
    else:
        caller, lineno = frames[first_asyncio - 1]
        api = f"asyncio.{frames[first_asyncio][0].f_code.co_qualname}()"
    return AsyncioCallOnTrio(api, _qualified(caller), caller.f_code.co_filename, lineno)


def raise_if_asyncio_on_trio(exc: BaseException) -> None:
    """If ``exc`` is asyncio failing for want of its loop on trio, raise the explanation.

    Returns (doing nothing) otherwise, so the caller re-raises ``exc`` itself.
    """
    if not running_on_trio():
        return
    explained = find_asyncio_call(exc)
    if explained is not None:
        raise explained from exc
