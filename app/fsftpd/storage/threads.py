"""Worker threads for blocking local-disk calls, with a cheap hand-off.

``loop.run_in_executor`` pairs a ``concurrent.futures.Future`` (a condition variable and
its callbacks) with an asyncio future that it wraps: measured on one core, a round trip
costs about twice what this pool's does (bench notes in docs/benchmarks.md). Here a job is
``(loop, future, call)`` on a ``SimpleQueue``; the thread hands the outcome back with one
``call_soon_threadsafe``. A job whose awaiting task was cancelled still runs to the end in
its thread (callers that own a descriptor rely on that; see LocalReadStream), and its
outcome is dropped; a job cancelled before any thread took it is not run at all (as with
``run_in_executor``: an upload whose commit was cancelled before it started is not
renamed into place, and a cancelled open leaves no descriptor behind).

Threads start on demand up to ``limit`` and then stay; they are daemon threads, so a call
stuck on a dead disk never holds up the process's exit.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _deliver(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, StopIteration):  # an asyncio future refuses to carry it
        future.set_exception(RuntimeError(f"StopIteration raised in a worker thread: {value!r}"))
    else:
        future.set_exception(value)


class DiskThreads:
    """A thread pool for short blocking calls; ``run(call)`` is awaited from a loop."""

    def __init__(self, limit: int, name: str = "fsftpd-disk") -> None:
        self.limit = limit
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job that no submitter has claimed
        self._backlog = 0  # jobs queued with no thread claimed for them

    def run(self, call: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1
                spawn = False
            elif self._threads < self.limit:
                self._threads += 1
                spawn = True
            else:
                self._backlog += 1
                spawn = False
        self._jobs.put((loop, future, call))
        if spawn:
            threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
        return future

    def _work(self) -> None:
        get = self._jobs.get
        while True:
            loop, future, call = get()
            outcome: tuple[asyncio.Future[Any], bool, Any] | None
            if future.cancelled():  # a plain read of the state; the loop only ever sets it
                outcome = None
            else:
                try:
                    outcome = (future, True, call())
                except BaseException as exc:  # handed to the awaiting task, whatever it is
                    outcome = (future, False, exc)
            if outcome is not None:
                try:
                    loop.call_soon_threadsafe(_deliver, *outcome)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    pass
            del loop, future, call, outcome
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # take a queued job without going idle
                else:
                    self._idle += 1

    def _forget_threads(self) -> None:
        """After fork the child has none of the parent's threads: start afresh."""
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = self._backlog = 0


_pools: list[DiskThreads] = []


def _after_fork() -> None:
    for pool in _pools:
        pool._forget_threads()


os.register_at_fork(after_in_child=_after_fork)


def pool(limit: int, name: str = "fsftpd-disk") -> DiskThreads:
    created = DiskThreads(limit, name)
    _pools.append(created)
    return created
