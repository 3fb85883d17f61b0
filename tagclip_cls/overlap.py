"""Keep the model busy: read the next images in threads and write results in the background.

Decoding and resizing an image (~25 ms) and encoding its outputs (~40 ms) are several times a
GPU forward pass; they release the GIL in PIL, numpy and zlib, so threads are enough. On a CPU
the model already uses every core and extra threads slow its parallel regions down (measured on
2 cores: stage 1 took 2.33-2.52 s per image with 2 reader threads against 1.94-2.23 s without),
so there everything stays on the calling thread by default.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")
GPU_READ_THREADS = 2


def default_read_threads(device_type: str) -> int:
    """Reader threads for a model on ``device_type``: ``GPU_READ_THREADS`` on a GPU, 0 on a CPU."""
    return 0 if device_type == "cpu" else GPU_READ_THREADS


def read_ahead(load: Callable[[T], R], items: Sequence[T], threads: int) -> Iterator[R]:
    """``load(item)`` for every item, in order, running up to ``threads + 1`` items ahead in
    ``threads`` threads (``0``: inline). An exception surfaces when its item is reached."""
    if threads <= 0:
        yield from map(load, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        ahead: deque[Future] = deque(pool.submit(load, item) for item in items[:threads + 1])
        for nxt in range(threads + 1, len(items) + threads + 1):
            result = ahead.popleft().result()
            if nxt < len(items):
                ahead.append(pool.submit(load, items[nxt]))
            yield result


class BackgroundWriter:
    """Run write jobs in one thread, in submission order, with at most ``backlog`` waiting
    (``inline``: run each job in :meth:`submit` instead, as on a CPU).

    A failed job's exception is raised by the next :meth:`submit` or on leaving the ``with``
    block, which always waits for the jobs already submitted (finished images stay written).
    """

    def __init__(self, backlog: int = 4, inline: bool = False):
        self.backlog = backlog
        self.inline = inline
        self._pool = ThreadPoolExecutor(1)
        self._pending: deque[Future] = deque()

    def submit(self, job: Callable[..., object], *args: object) -> None:
        if self.inline:
            job(*args)
            return
        self._pending.append(self._pool.submit(job, *args))
        while self._pending and (self._pending[0].done() or len(self._pending) > self.backlog):
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._pool.shutdown(wait=True)
        while self._pending:
            error = self._pending.popleft().exception()
            if error is not None and exc_type is None:
                raise error
