"""asyncio's exception classes, for the asgiref-shaped objects of the test communicators.

asgiref's ``ApplicationCommunicator`` exposes asyncio objects: ``future`` is an
``asyncio.Task`` and ``input_queue``/``output_queue`` are ``asyncio.Queue``\\ s.
Libraries built on Channels reach for them in their own test helpers
(djangochannelsrestframework's test communicator reads ``future.done()``,
``future.result()`` and ``await output_queue.get()``). The communicators of
:mod:`channels_runtime.testing` give them objects of the same shape that work on
asyncio and trio alike; where asyncio's objects raise one of asyncio's exceptions,
those raise the same class, so ``except asyncio.QueueEmpty`` in such a helper keeps
working (on trio too: the classes are plain exceptions, usable without a loop).

This module only names the classes, so that the testing package itself stays free
of ``asyncio``.
"""

from __future__ import annotations

import asyncio

__all__ = ["InvalidStateError", "QueueEmpty"]

#: What ``asyncio.Future.result()`` raises before the result is set.
InvalidStateError = asyncio.InvalidStateError
#: What ``asyncio.Queue.get_nowait()`` raises when the queue is empty.
QueueEmpty = asyncio.QueueEmpty
