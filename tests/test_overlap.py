"""Read-ahead keeps order and surfaces errors in place; the background writer runs every job."""
import os
import threading
import time

import pytest

from tagclip_cls.runtime.overlap import BackgroundWriter, read_ahead, read_batches_ahead, read_threads


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_read_ahead_keeps_order_and_runs_ahead(threads):
    started = []

    def load(i):
        started.append(i)
        time.sleep(0.01 * (i % 3))  # out-of-order completion
        return i * i

    seen = []
    for i, value in enumerate(read_ahead(load, list(range(10)), threads)):
        seen.append(value)
        if i == 0:  # while item 0 is in use, the next ones are being read (none when inline)
            expected = threads + 2 if threads else 1
            deadline = time.monotonic() + 10
            while len(started) < expected and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(started) == expected
    assert seen == [i * i for i in range(10)]
    assert sorted(started) == list(range(10))


def test_read_ahead_stops_reading_when_closed_early():
    started = []

    def load(i):
        started.append(i)
        time.sleep(0 if i == 0 else 0.3)  # items 1 and 2 keep both threads busy past the close
        return i

    reader = read_ahead(load, list(range(50)), 2)
    assert next(reader) == 0  # items 0..3 have been submitted by now, item 3 still queued
    reader.close()
    assert 0 in started and max(started) <= 2  # item 3 (and 2, if still queued) dropped, not run


def test_read_ahead_raises_at_the_failing_item():
    def load(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for value in read_ahead(load, list(range(6)), 2):
            got.append(value)
    assert got == [0, 1, 2]


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_read_batches_ahead_keeps_batches_and_order(threads):
    batches = [[1, 2, 3], [], [4], [5, 6]]
    got = list(read_batches_ahead(lambda i: i * 10, batches, threads))
    assert got == [[10, 20, 30], [], [40], [50, 60]]


def test_read_batches_ahead_shares_a_batch_among_threads_and_reads_the_next_one():
    """The two images of the first batch wait for each other: they load only side by side. While
    the first batch is in use, the second is read."""
    meet = threading.Barrier(2, timeout=5)
    started = []

    def load(i):
        started.append(i)
        if i < 2:
            meet.wait()
        return i

    reader = read_batches_ahead(load, [[0, 1], [2, 3], [4, 5]], threads=2)
    assert next(reader) == [0, 1]
    deadline = time.monotonic() + 10
    while not {2, 3} <= set(started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {2, 3} <= set(started)
    assert list(reader) == [[2, 3], [4, 5]]


def test_background_writer_runs_jobs_in_order_off_the_calling_thread():
    done, threads = [], set()

    def job(i):
        time.sleep(0.005)
        threads.add(threading.get_ident())
        done.append(i)

    with BackgroundWriter(backlog=2) as writer:
        for i in range(8):
            writer.submit(job, i)
            assert len(done) >= i - 1  # at most 2 jobs waiting or running after a submit
    assert done == list(range(8))
    assert threading.get_ident() not in threads


def test_background_writer_reports_a_failed_job_and_still_finishes_the_others():
    done, submitted = [], threading.Event()

    def job(i):
        if i == 1:
            submitted.wait(10)  # fail only once everything is queued
            raise OSError("disk full")
        done.append(i)

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(backlog=8) as writer:
            for i in range(4):
                writer.submit(job, i)
            submitted.set()
    assert done == [0, 2, 3]


def test_background_writer_logs_write_errors_behind_another_error(caplog):
    submitted = threading.Event()

    def job():
        submitted.wait(10)
        raise OSError("disk full")

    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter() as writer:
            writer.submit(job)
            submitted.set()
            raise KeyboardInterrupt
    assert "write failed: disk full" in caplog.text


def test_inline_writer_runs_each_job_at_once_on_the_calling_thread():
    seen = []
    with BackgroundWriter(inline=True) as writer:
        writer.submit(lambda: seen.append(threading.get_ident()))
        assert seen == [threading.get_ident()]


def test_reader_threads_only_next_to_a_gpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert read_threads(None, "cpu") == 0
    assert read_threads(None, "cuda") == 8  # half of 16 cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert read_threads(None, "cuda") == 2  # half of this rank's 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert read_threads(None, "cuda") == 2  # at least 2
    assert read_threads(3, "cpu") == 3 and read_threads(-1, "cuda") == 0


def test_background_writer_threads_run_jobs_side_by_side():
    """Two jobs that each wait for the other finish only when two threads run them at once."""
    meet = threading.Barrier(2, timeout=5)
    with BackgroundWriter(threads=2) as writer:
        writer.submit(meet.wait)
        writer.submit(meet.wait)
