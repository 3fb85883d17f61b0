"""One profiled call for the benchmarks: where the time of a stage goes. Prints figures.

:func:`labelled_phases` runs some of an object's methods inside a labelling context for one
block (a profiler range here, an operation counter in ``count_ops.py``); :func:`profile_phases` runs a call once under ``torch.profiler`` with some of an object's methods
labelled as phases, and prints the host (and, on a GPU, device) time of each phase, the
host-device copies and synchronisations, and the operations with the most self time.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Sequence

import torch
from torch.profiler import ProfilerActivity, profile, record_function

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaMemcpy")


@contextmanager
def labelled_phases(owner: object, phases: Sequence[str], label: Callable[[str], ContextManager]) -> Iterator[None]:
    """Within the block, each method of ``owner`` named in ``phases`` runs inside
    ``label("Class.method")`` (a profiler range, a counter's phase, ...); afterwards the class's
    methods show again."""
    prefix = type(owner).__name__
    for name in phases:
        def labelled(*args, _method=getattr(owner, name), _name=f"{prefix}.{name}", **kwargs):
            with label(_name):
                return _method(*args, **kwargs)
        setattr(owner, name, labelled)
    try:
        yield
    finally:
        for name in phases:
            delattr(owner, name)  # the instance attribute


def profile_phases(call: Callable[[], object], owner: object, phases: Sequence[str], rows: int,
                   label: str, cuda: bool) -> None:
    """Profile ``call()`` once, each method of ``owner`` named in ``phases`` recorded as a phase
    (``Class.method``), and print the phases, the copies and synchronisations, and the ``rows``
    operations with the most self time (device time when ``cuda``)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with labelled_phases(owner, phases, record_function), profile(activities=activities) as prof:
        call()
        if cuda:
            torch.cuda.synchronize()
    prefix = f"{type(owner).__name__}."
    events = prof.key_averages()
    print(f"profile of one call, {label}:")
    for event in events:
        if event.key.startswith(prefix) or event.key in SYNC_CALLS:
            print(f"  {event.key}: {event.count} calls, host {event.cpu_time_total / 1e3:.1f} ms"
                  + (f", device {event.device_time_total / 1e3:.1f} ms" if cuda else ""))
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort_by, row_limit=rows, max_name_column_width=60))
