"""The local-disk worker-thread pool: outcomes, cancellation, the thread limit."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from fsftpd.storage.threads import DiskThreads


def test_results_and_exceptions_reach_the_awaiting_task() -> None:
    pool = DiskThreads(2)

    async def main() -> None:
        assert await pool.run(lambda: 6 * 7) == 42
        with pytest.raises(FileNotFoundError):
            await pool.run(lambda: os.stat("/nonexistent/fsftpd"))
        with pytest.raises(RuntimeError, match="StopIteration"):
            await pool.run(lambda: next(iter([])))
        # the call really ran in another thread
        assert await pool.run(threading.get_ident) != threading.get_ident()

    asyncio.run(main())


def test_a_cancelled_call_still_runs_to_the_end() -> None:
    pool = DiskThreads(1)
    release = threading.Event()
    finished = threading.Event()

    def slow() -> str:
        release.wait(5)
        finished.set()
        return "done"

    async def main() -> None:
        future = pool.run(slow)
        await asyncio.sleep(0.05)
        future.cancel()
        release.set()
        # the only thread is busy until slow() ends; the next call waits for it
        assert await asyncio.wait_for(pool.run(lambda: finished.is_set()), 5) is True

    asyncio.run(main())


def test_a_call_cancelled_before_any_thread_took_it_is_not_run() -> None:
    pool = DiskThreads(1)
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        busy = pool.run(lambda: release.wait(5))  # holds the only thread
        queued = pool.run(lambda: ran.append("queued"))
        queued.cancel()
        release.set()
        assert await busy is True
        assert await pool.run(lambda: "after") == "after"

    asyncio.run(main())
    assert ran == []


def test_more_calls_than_threads_all_complete_within_the_limit() -> None:
    pool = DiskThreads(3)
    gate = threading.Barrier(3, timeout=5)
    seen: set[int] = set()
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            seen.add(threading.get_ident())
        if i < 3:
            gate.wait()  # the first three calls need three threads at once
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*(pool.run(lambda i=i: call(i)) for i in range(50)))

    assert asyncio.run(main()) == list(range(50))
    assert len(seen) == 3
