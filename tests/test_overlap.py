"""Read-ahead keeps order and surfaces errors in place; the background writer runs every job."""
import threading
import time

import pytest

from tagclip_cls.overlap import BackgroundWriter, default_read_threads, read_ahead


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
        if i == 0:
            time.sleep(0.2)
            assert len(started) == min(10, threads + 1 + (threads > 0))  # items in flight while item 0 is used
    assert seen == [i * i for i in range(10)]
    assert sorted(started) == list(range(10))


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
    done = []

    def job(i):
        if i == 1:
            raise OSError("disk full")
        done.append(i)

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(backlog=8) as writer:
            for i in range(4):
                writer.submit(job, i)
    assert done == [0, 2, 3]


def test_inline_writer_runs_each_job_at_once_on_the_calling_thread():
    seen = []
    with BackgroundWriter(inline=True) as writer:
        writer.submit(lambda: seen.append(threading.get_ident()))
        assert seen == [threading.get_ident()]


def test_reader_threads_only_next_to_a_gpu():
    assert default_read_threads("cpu") == 0
    assert default_read_threads("cuda") == 2
