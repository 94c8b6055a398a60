"""Micro-batching of concurrent ``Route`` requests for routers with ``decide_batch``.

A router that defines ``decide_batch(calls: list[RouteCall]) -> list[Decision]`` (e.g. the policy
LM scoring many prompts in one forward pass) gets a ``MicroBatcher``: one worker thread collects
the requests submitted by the RPC threads and hands them to ``decide_batch`` together.

A router may define ``start_worker()``: the worker thread calls it once before its first batch
(the policy sets its compute threads there: ``PolicyRouter.start_worker``).

When to call: as soon as ``max_batch`` requests wait, or ``max_wait_s`` after the first one came,
or at once when no other ``Route`` call is on its way (``expect()`` counts the calls admitted but
not yet submitted), so a lone request never waits for company that is not coming. While a batch
runs, new requests queue up and form the next one.

Failures stay per request: when ``decide_batch`` raises or returns the wrong number of decisions,
each request of that batch is decided alone with ``decide`` and only a request that fails there
gets the error. A request whose deadline passes while it waits is dropped from the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

from routerl.routers.base import Decision, RouteCall, Router

log = logging.getLogger(__name__)


class BatchTimeout(TimeoutError):
    """The request's deadline passed before its batch was decided."""


def has_batch_api(router: Router) -> bool:
    return callable(getattr(router, "decide_batch", None))


class _Item:
    __slots__ = ("call", "done", "decision", "error", "cancelled")

    def __init__(self, call: RouteCall):
        self.call = call
        self.done = threading.Event()
        self.decision: Decision | None = None
        self.error: BaseException | None = None
        self.cancelled = False


class _Slot:
    """A route call announced with ``MicroBatcher.expect()``."""

    __slots__ = ("batcher", "submitted")

    def __init__(self, batcher: "MicroBatcher"):
        self.batcher = batcher
        self.submitted = False

    def submit(self, call: RouteCall, timeout: float | None = None) -> Decision:
        return self.batcher.submit(call, timeout, _slot=self)


class MicroBatcher:
    """Collects concurrent route calls and decides them with ``router.decide_batch``."""

    def __init__(self, router: Router, *, max_batch: int = 16, max_wait_s: float = 0.002, lock=None,
                 on_batch: Callable[[int], None] | None = None):
        if not has_batch_api(router):
            raise TypeError(f"router {router.name!r} has no decide_batch()")
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch >= 1 and max_wait_s >= 0 required")
        self.router = router
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._lock = lock if lock is not None else nullcontext()
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._pending: deque[_Item] = deque()
        self._first_at = 0.0
        self._arriving = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="routerl-batcher", daemon=True)
        self._thread.start()

    # -- RPC threads -----------------------------------------------------------------------------
    @contextmanager
    def expect(self) -> Iterator["_Slot"]:
        """Count a route call as on its way to the batcher until it submits (or the ``with`` ends)."""
        slot = _Slot(self)
        with self._cond:
            self._arriving += 1
        try:
            yield slot
        finally:
            if not slot.submitted:
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify_all()

    def submit(self, call: RouteCall, timeout: float | None = None, *, _slot: "_Slot | None" = None) -> Decision:
        """Decide ``call`` in the next batch; ``BatchTimeout`` after ``timeout`` seconds (None, or
        a value beyond what a wait accepts, e.g. gRPC's ``time_remaining()`` for a call with no
        deadline: wait as long as it takes)."""
        if timeout is not None and not timeout < threading.TIMEOUT_MAX:
            timeout = None
        item = _Item(call)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if not self._pending:
                self._first_at = time.monotonic()
            self._pending.append(item)
            if _slot is not None and not _slot.submitted:
                _slot.submitted = True
                self._arriving -= 1
            self._cond.notify_all()
        try:
            done = item.done.wait(timeout)
        except BaseException:
            item.cancelled = True  # the caller is gone: the worker skips it
            raise
        if not done:
            item.cancelled = True
            if not item.done.is_set():
                raise BatchTimeout("deadline exceeded while waiting for the batch")
        if item.error is not None:
            raise item.error
        return item.decision

    # -- worker ----------------------------------------------------------------------------------
    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            while len(self._pending) < self.max_batch and self._arriving > 0 and not self._closed:
                left = self._first_at + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(self.max_batch, len(self._pending))
            batch = [self._pending.popleft() for _ in range(n)]
            if self._pending:
                self._first_at = time.monotonic()
        return [it for it in batch if not it.cancelled]

    def _run(self) -> None:
        start = getattr(self.router, "start_worker", None)  # e.g. the policy sets its compute threads here
        if callable(start):
            try:
                start()
            except Exception:  # noqa: BLE001 - a failed tuning step must not stop the worker
                log.exception("router %s: start_worker failed", self.router.name)
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._decide(batch)

    def _decide(self, batch: list[_Item]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            with self._lock:
                decisions = list(self.router.decide_batch([it.call for it in batch]))
            if len(decisions) != len(batch):
                raise RuntimeError(f"decide_batch returned {len(decisions)} decisions for {len(batch)} calls")
        except Exception:
            log.exception("router %s: decide_batch failed on %d calls; deciding them one by one", self.router.name, len(batch))
            for it in batch:
                try:
                    with self._lock:
                        it.decision = self.router.decide(it.call.query, it.call.candidates, it.call.knob, it.call.attempts)
                except Exception as exc:  # noqa: BLE001 - handed to the request's thread
                    it.error = exc
                it.done.set()
            return
        for it, decision in zip(batch, decisions):
            it.decision = decision
            it.done.set()

    def close(self, timeout: float = 5.0) -> None:
        """Decide what is pending, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
