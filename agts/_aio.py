"""One mechanism for asyncio callers: ``engine.aio`` and ``store.aio`` await any public method.

:class:`AsyncView` wraps an object: each public method becomes a coroutine function that runs the
same blocking call in a worker thread (``asyncio.to_thread``), so the event loop never waits on
the database, with at most ``limit`` calls in flight per event loop (the engine's pool size: more
would only queue for a connection inside the threads). A method that returns an iterator
(``iter_batches=True``) gives an async iterator whose items are fetched in worker threads too.
Attributes that are not methods are returned as they are. No method is written twice: the sync
object is the only implementation.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["AsyncView"]

T = TypeVar("T")
_DONE = object()


class AsyncView(Generic[T]):
    """Awaitable twins of ``target``'s methods, made on access (see the module docstring).

    Parameters
    ----------
    target
        The object whose methods are wrapped (a :class:`agts.StorageEngine`, an
        :class:`agts.ExecutionStore`).
    limit
        Calls in flight at most, per event loop.
    share
        Another view whose bound this one shares (a store and its engine use one pool).

    Examples
    --------
    >>> frame = await engine.aio.query_metrics("latency_ms", start, end)   # doctest: +SKIP
    >>> async for part in await engine.aio.query_metrics(..., iter_batches=True):  # doctest: +SKIP
    ...     handle(part)
    """

    def __init__(self, target: T, *, limit: int = 1, share: AsyncView[Any] | None = None) -> None:
        if share is None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit!r}")
        self._target = target
        self._limit: int = share._limit if share is not None else limit
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            share._gates if share is not None else weakref.WeakKeyDictionary())

    def __repr__(self) -> str:
        return f"AsyncView({self._target!r}, limit={self._limit})"

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self._limit)
        return gate

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        return self._wrap(attr)

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            async with self._gate():
                result = await asyncio.to_thread(method, *args, **kwargs)
            if isinstance(result, Iterator) and not isinstance(result, str | bytes):
                return self._iterate(result)
            return result

        return call

    async def _iterate(self, items: Iterator[Any]) -> AsyncIterator[Any]:
        try:
            while True:
                async with self._gate():
                    item = await asyncio.to_thread(next, items, _DONE)
                if item is _DONE:
                    return
                yield item
        finally:
            close = getattr(items, "close", None)
            if inspect.isgenerator(items) and close is not None:
                await asyncio.to_thread(close)
