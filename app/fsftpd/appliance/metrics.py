"""Prometheus metrics of one fsftpd server, fed by its events (``server.events``).

The engine never imports prometheus-client: :class:`MetricsObserver` subscribes to the
server's event bus and turns each event into counter increments and histogram
observations. Gauges that the engine can answer at any moment (connections, passive
ports) are sampled once a second by :meth:`MetricsObserver.sample` instead, so they cost
nothing per connection.

Invariants:
- every metric lives in the observer's own :class:`CollectorRegistry` (single process) or,
  with several workers, in prometheus-client's multiprocess files (see
  :func:`enable_multiprocess`); nothing is registered in the global default registry;
- the ``user`` label only ever takes a configured login's name (``anonymous`` for the
  anonymous user) or :data:`UNKNOWN_USER`, never a name a client typed; with
  ``per_user=False`` the label does not exist;
- the ``command`` label is a verb the server knows or ``other``;
- handling an event never raises into the engine (the event bus also guards this).

docs/metrics.md lists every metric; a test checks that list against a real scrape.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.core import InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

import fsftpd
from fsftpd import events as ev

#: the ``user`` label of failed logins with a name no configured user has
UNKNOWN_USER = "(unknown)"

#: seconds; small uploads/downloads on loopback end in milliseconds, large ones in minutes
TRANSFER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: seconds; local disk answers in microseconds, S3 in tens of milliseconds
STORAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1, 2.5, 5, 10)

_MULTIPROCESS_DIR: str | None = None


def enable_multiprocess(directory: str) -> None:
    """Keep every metric made after this call in prometheus-client's per-process files
    under ``directory`` (a tmpfs directory shared by the workers of one server), so that
    one scrape of any worker sums them all (:func:`scrape_registry`).

    prometheus-client picks its value class when it is first imported, from the
    ``PROMETHEUS_MULTIPROC_DIR`` environment variable; the appliance imports it before it
    knows the number of workers, so the class is switched here. Call it in each worker
    before :class:`MetricsObserver` is made."""
    global _MULTIPROCESS_DIR
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _MULTIPROCESS_DIR = directory


def multiprocess_dir() -> str | None:
    return _MULTIPROCESS_DIR


def forget_dead_workers(directory: str) -> None:
    """Remove the gauge files of workers that are gone, so a scrape's gauges are the sum
    of the live workers only (prometheus-client's ``mark_process_dead``, done by whichever
    worker is scraped: the supervisor never imports prometheus-client). Counter and
    histogram files stay: a dead worker's counts remain part of the server's totals."""
    from .health import worker_alive

    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        try:
            pid = int(os.path.basename(path).rsplit("_", 1)[1][:-3])
        except ValueError:
            continue
        if not worker_alive(pid):
            with contextlib.suppress(OSError):
                os.remove(path)


class InfoCollector:
    """``fsftpd_server_info``: the version and the event loop (a constant, so it is made at
    scrape time; prometheus-client's Info metric does not work in multiprocess mode)."""

    def __init__(self, event_loop: str) -> None:
        self.labels = {
            "version": fsftpd.__version__,
            "event_loop": event_loop,
            "python": platform.python_version(),
        }

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("fsftpd_server", "The fsftpd version, its event loop and Python")
        info.add_metric([], self.labels)
        yield info


def event_loop_name(loop: object) -> str:
    """"uvloop" or "asyncio" (with the version of uvloop)."""
    module = type(loop).__module__
    if module.startswith("uvloop"):
        version = getattr(sys.modules.get("uvloop"), "__version__", "")
        return f"uvloop {version}".strip()
    return "asyncio"


class MetricsObserver:
    """The metrics of ``server``. Subscribe it, and set it as the storage timer::

        observer = MetricsObserver(server, per_user=True)
        server.events.subscribe(observer.observe)
        server.events.storage_timer = observer.time_storage

    ``registry``: where the metrics are registered (single process); None with
    multiprocess mode enabled (the files are the registry then)."""

    def __init__(self, server: fsftpd.Server, *, per_user: bool = True,
                 registry: CollectorRegistry | None = None) -> None:
        self.server = server
        self.per_user = per_user
        # The *_created series would double every counter's series for nothing.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        multiprocess = _MULTIPROCESS_DIR is not None
        reg = None if multiprocess else registry
        user = ["user"] if per_user else []

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, list(labels), registry=reg)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            # livesum: summed over the live workers (a dead worker's share is dropped)
            return Gauge(name, doc, list(labels), registry=reg, multiprocess_mode="livesum")

        # per user
        self.active_sessions = gauge("fsftpd_active_sessions", "Logged-in FTP sessions now", user)
        self.sessions = counter("fsftpd_sessions", "Logged-in FTP sessions started", user)
        self.logins = counter("fsftpd_logins", "Login attempts by result (success, failure)",
                              [*user, "result"])
        self.received = counter("fsftpd_received_bytes", "File data received (uploads), bytes", user)
        self.sent = counter("fsftpd_sent_bytes", "File data sent (downloads), bytes", user)
        self.transfers = counter("fsftpd_transfers", "Transfers ended, by direction and result",
                                 [*user, "direction", "result"])
        self.transfer_seconds = Histogram(
            "fsftpd_transfer_duration_seconds", "Transfer duration, from 150 to the final reply",
            [*user, "direction"], buckets=TRANSFER_BUCKETS, registry=reg)
        self.throttle_seconds = counter("fsftpd_throttle_wait_seconds",
                                        "Time transfers slept to keep to speed limits, seconds",
                                        [*user, "direction"])
        # per server
        self.connections = gauge("fsftpd_active_connections", "Open control connections")
        self.refused = counter("fsftpd_connections_refused", "Connections refused, by reason", ["reason"])
        self.commands = counter("fsftpd_commands", "Commands answered, by verb and reply class",
                                ["command", "reply_class"])
        self.storage_seconds = Histogram(
            "fsftpd_storage_operation_duration_seconds", "Storage (path-IO) call duration",
            ["backend", "operation"], buckets=STORAGE_BUCKETS, registry=reg)
        self.storage_errors = counter("fsftpd_storage_errors", "Storage calls that failed "
                                      "(not counting missing files, existing names, permissions)",
                                      ["backend", "operation"])
        self.passive_in_use = gauge("fsftpd_passive_ports_in_use", "Passive listeners waiting for a client")
        self.passive_available = gauge("fsftpd_passive_ports_available", "Passive ports free to offer")

        # session id -> the user label its logged-in session counts under
        self._sessions: dict[int, str] = {}
        # label tuples -> children, so the hot path does no label validation
        self._children: dict[tuple[Any, ...], Any] = {}
        # What the frequent events (commands, transfers, progress, storage calls) add is
        # kept here and handed to prometheus-client by flush(), twice a second: an event
        # then costs a dict update instead of locked (or, with workers, memory-mapped)
        # prometheus updates. child -> amount; histogram child -> [sum, count per bucket].
        self._pending: dict[Any, float] = {}
        self._observed: dict[Any, list[float]] = {}
        self._commands: dict[tuple[str, int], Any] = {}
        self._moved: dict[tuple[str | None, str], Any] = {}
        self._transfers: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._storage: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.SessionEnded: self._session_ended,
            ev.LoginAttempt: self._login,
            ev.ConnectionRefused: self._refused,
            ev.CommandDone: self._command,
            ev.TransferProgress: self._progress,
            ev.TransferFinished: self._transfer,
            ev.ThrottleWait: self._throttled,
        }
        self._verbs = fsftpd.COMMAND_VERBS

        def observe(event: ev.Event, find: Any = self._handlers.get, kind: Any = type) -> None:
            handler = find(kind(event))
            if handler is not None:
                handler(event)

        #: what to subscribe: a plain function, a little cheaper per event than the
        #: instance itself (``__call__``), which does the same
        self.observe: Callable[[ev.Event], None] = observe

    # -- the event bus calls this ------------------------------------------------------
    def __call__(self, event: ev.Event) -> None:
        self.observe(event)

    def sample(self) -> None:
        """Hand the pending amounts to prometheus-client and set the gauges the engine can
        answer at any time (the heartbeat calls it, on the server's loop)."""
        self.flush()
        self.connections.set(self.server.connection_count)
        in_use, available = self.server.passive_ports()
        self.passive_in_use.set(in_use)
        self.passive_available.set(available)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for child, amount in pending.items():
            child.inc(amount)
        for child, acc in self._observed.items():
            if acc[0] or any(acc[1:]):
                _add_observations(child, acc)
                for i in range(len(acc)):
                    acc[i] = 0.0

    # -- helpers -----------------------------------------------------------------------
    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    def _user(self, metric: Any, user: str, *labels: str) -> Any:
        if self.per_user:
            return self._child(metric, user, *labels)
        return self._child(metric, *labels)

    def user_label(self, typed: str | None) -> str:
        """The label for a name a client typed: its configured user's name, or
        :data:`UNKNOWN_USER`."""
        if typed is None:
            return UNKNOWN_USER
        found = self.server.users.find(typed)
        return found.name if found is not None else UNKNOWN_USER

    # -- events ------------------------------------------------------------------------
    def _login(self, event: ev.LoginAttempt) -> None:
        user = self.user_label(event.user)
        if not event.success:
            self._user(self.logins, user, "failure").inc()
            return
        self._user(self.logins, user, "success").inc()
        self._user(self.sessions, user).inc()
        self._user(self.active_sessions, user).inc()
        previous = self._sessions.get(event.session_id)
        if previous is not None:  # REIN, then a new login on the same connection
            self._user(self.active_sessions, previous).dec()
        self._sessions[event.session_id] = user

    def _session_ended(self, event: ev.SessionEnded) -> None:
        user = self._sessions.pop(event.session_id, None)
        if user is not None:
            self._user(self.active_sessions, user).dec()

    def _refused(self, event: ev.ConnectionRefused) -> None:
        self._child(self.refused, event.reason).inc()

    # The handlers below run for every command, transfer and storage call: each caches
    # the children it updates under a key of the event's raw values and only adds to
    # dicts (see flush). Every key is bounded: unknown verbs are never cached under the
    # verb typed, users are configured ones, codes and operations are the engine's.
    def _new_command(self, verb: str, code: int) -> Any:
        known = verb in self._verbs
        child = self._child(self.commands, verb if known else "other", f"{code // 100}xx")
        if known:
            self._commands[(verb, code)] = child
        return child

    def _command(self, event: ev.CommandDone) -> None:
        child = self._commands.get((event.verb, event.code))
        if child is None:
            child = self._new_command(event.verb, event.code)
        pending = self._pending
        pending[child] = pending.get(child, 0) + 1

    def _progress(self, event: ev.TransferProgress) -> None:
        child = self._moved.get((event.user, event.direction))
        if child is None:
            if event.direction not in ("download", "upload"):
                return  # a listing's bytes are not file data
            metric = self.sent if event.direction == "download" else self.received
            child = self._user(metric, event.user or UNKNOWN_USER)
            self._moved[(event.user, event.direction)] = child
        pending = self._pending
        pending[child] = pending.get(child, 0) + event.bytes

    def _transfer(self, event: ev.TransferFinished) -> None:
        key = (event.verb, event.code, event.user, event.direction, event.ok)
        children = self._transfers.get(key)
        if children is None:
            user = event.user or UNKNOWN_USER
            result = "ok" if event.ok else ("aborted" if event.code == 426 else "failed")
            seconds = self._user(self.transfer_seconds, user, event.direction)
            children = self._transfers[key] = (
                # A transfer's command (RETR, STOR, LIST...) is answered by the transfer itself.
                self._new_command(event.verb, event.code),
                self._user(self.transfers, user, event.direction, result),
                seconds, seconds._upper_bounds, self._accumulator(seconds),
            )
        command, transfers, _, bounds, acc = children
        pending = self._pending
        pending[command] = pending.get(command, 0) + 1
        pending[transfers] = pending.get(transfers, 0) + 1
        acc[0] += event.duration
        acc[bisect.bisect_left(bounds, event.duration) + 1] += 1

    def _throttled(self, event: ev.ThrottleWait) -> None:
        child = self._user(self.throttle_seconds, event.user or UNKNOWN_USER, event.direction)
        pending = self._pending
        pending[child] = pending.get(child, 0) + event.seconds

    def _accumulator(self, histogram: Any) -> list[float]:
        acc = self._observed.get(histogram)
        if acc is None:
            acc = self._observed[histogram] = [0.0] * (len(histogram._upper_bounds) + 1)
        return acc

    def time_storage(self, backend: str, operation: str, seconds: float, error: str | None) -> None:
        """The server's storage timer (``server.events.storage_timer``)."""
        children = self._storage.get((backend, operation))
        if children is None:
            histogram = self._child(self.storage_seconds, backend, operation)
            children = self._storage[(backend, operation)] = (
                histogram._upper_bounds, self._accumulator(histogram),
                self._child(self.storage_errors, backend, operation),
            )
        bounds, acc, errors = children
        acc[0] += seconds
        acc[bisect.bisect_left(bounds, seconds) + 1] += 1
        if error is not None:
            pending = self._pending
            pending[errors] = pending.get(errors, 0) + 1


def _add_observations(child: Any, acc: list[float]) -> None:
    """Add ``acc`` ([sum, count per bucket]) to a histogram child at once. prometheus-client
    has no public call for this: it uses the child's ``_sum`` and ``_buckets`` values (the
    ones ``Histogram.observe`` updates), checked by the tests' histogram counts."""
    child._sum.inc(acc[0])
    for bucket, count in zip(child._buckets, acc[1:], strict=True):
        if count:
            bucket.inc(count)


def scrape_registry(observer_registry: CollectorRegistry | None, event_loop: str) -> CollectorRegistry:
    """The registry a scrape reads: the observer's own (single process), or every
    worker's files summed (multiprocess), plus ``fsftpd_server_info``."""
    registry = CollectorRegistry(auto_describe=False)
    if _MULTIPROCESS_DIR is not None:
        MultiProcessCollector(registry, path=_MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    elif observer_registry is not None:
        registry.register(_Forward(observer_registry))
    registry.register(InfoCollector(event_loop))
    return registry


class _Forward:
    """Collects another registry's metrics (so the info metric can sit beside them)."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        yield from self.inner.collect()
