"""Keep the model busy: read the next images in threads and write results in the background.

Reading an image (decode, resize, normalise: 7-14 ms on one core of the 2-core Xeon) and writing
stage 2's outputs (6-8 ms) each take longer than a GPU's share of the image; they release the
GIL in PIL, numpy and zlib, so threads are enough (``benchmarks/bench_host.py`` times both). On a CPU
the model already uses every core and extra threads slow its parallel regions down (measured on
2 cores: stage 1 took 2.33-2.52 s per image with 2 reader threads against 1.94-2.23 s without),
so there everything stays on the calling thread by default.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def cores_per_rank() -> int:
    """This process's share of the CPUs it may run on among the ``torchrun`` ranks of this node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def read_threads(requested: int | None, device_type: str) -> int:
    """Reader threads for a model on ``device_type``: ``requested`` (negative counts as 0) or, for
    ``None``, half of this rank's cores on a GPU (at least 2; 8 on a 16-core machine) and 0 on a
    CPU. An image takes 7-14 ms to read on one core of the 2-core Xeon (``bench_host.py``), so
    500 images/s need 4 to 7 readers."""
    if requested is not None:
        return max(0, requested)
    return 0 if device_type == "cpu" else max(2, cores_per_rank() // 2)


def read_ahead(load: Callable[[T], R], items: Sequence[T], threads: int, ahead: int | None = None) -> Iterator[R]:
    """``load(item)`` for every item, in order, running up to ``ahead`` (default ``threads + 1``)
    items ahead in ``threads`` threads (``0``: inline). An exception surfaces when its item is
    reached; closing the generator early drops the loads not yet started."""
    if threads <= 0:
        yield from map(load, items)
        return
    depth = threads + 1 if ahead is None else max(1, ahead)
    pool = ThreadPoolExecutor(threads)
    try:
        queued: deque[Future] = deque(pool.submit(load, item) for item in items[:depth])
        for nxt in range(depth, len(items) + depth):
            result = queued.popleft().result()
            if nxt < len(items):
                queued.append(pool.submit(load, items[nxt]))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_batches_ahead(load: Callable[[T], R], batches: Sequence[Sequence[T]], threads: int) -> Iterator[list[R]]:
    """:func:`read_ahead` by batch: ``[load(item) for item in batch]`` for every batch, in order,
    each item a task of its own, so that the threads share a batch (its first images are not
    waited for one after the other) and the next two batches are read while this one is in use."""
    sizes = [len(batch) for batch in batches]
    loaded = read_ahead(load, [item for batch in batches for item in batch], threads,
                        ahead=threads + 2 * max(sizes, default=0))
    try:
        for size in sizes:
            yield [next(loaded) for _ in range(size)]
    finally:
        loaded.close()


class BackgroundWriter:
    """Run write jobs in ``threads`` threads, started in submission order, with at most
    ``backlog`` (default: 4 per thread) waiting or running (``inline``: run each job inside
    :meth:`submit` instead, as on a CPU). With one thread the jobs also finish in that order;
    give several only to jobs that don't depend on one another.

    Leaving the ``with`` block waits for every submitted job (finished images stay written). A
    failed job's exception is raised by a later :meth:`submit` once the jobs before it are done,
    or on leaving the block; write errors behind another exception are logged, not lost.
    """

    def __init__(self, backlog: int | None = None, inline: bool = False, threads: int = 1):
        self.backlog = backlog if backlog is not None else 4 * threads
        self._pool = None if inline else ThreadPoolExecutor(threads)
        self._pending: deque[Future] = deque()

    def submit(self, job: Callable[..., object], *args: object) -> None:
        if self._pool is None:
            job(*args)
            return
        self._pending.append(self._pool.submit(job, *args))
        while self._pending and (self._pending[0].done() or len(self._pending) > self.backlog):
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        errors = [e for e in (f.exception() for f in self._pending) if e is not None]
        self._pending.clear()
        leading = exc if exc_type is not None else errors[0] if errors else None
        for error in errors[1:] if exc_type is None else errors:
            # the same refusal again (a full disk fails every writer): one line says it
            log.log(logging.DEBUG if _same_fault(error, leading) else logging.ERROR, "write failed: %s", error)
        if errors and exc_type is None:
            raise errors[0]


def _same_fault(error: BaseException, leading: BaseException | None) -> bool:
    """Whether ``error`` repeats ``leading``: the same storage refusal (errno) or the same exception."""
    if error is leading:
        return True
    return (isinstance(error, OSError) and isinstance(leading, OSError) and error.errno is not None
            and error.errno == leading.errno)
