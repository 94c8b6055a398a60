"""Load limits: bounded concurrency and a bounded, time-limited admission queue.

A ``Lane`` lets at most ``concurrency`` calls run at once; up to ``queue`` more wait for a slot,
each for at most ``timeout_s`` seconds (and never past its own deadline). A call that finds the
queue full, or waits too long, is refused with ``RESOURCE_EXHAUSTED`` at once instead of adding
unbounded latency; a call whose deadline passes while it waits gets ``DEADLINE_EXCEEDED``; a call
cancelled by its client while waiting leaves the queue.

The server keeps two lanes (``routerl.server.handlers``): one for ``Route`` and one for the
registry calls, so a flood of routing requests never starves a registration.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import grpc

_POLL_S = 0.05  # how often a waiting call checks whether its client went away


class Overloaded(Exception):
    """A call refused by a lane: ``code`` is RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Lane:
    """At most ``concurrency`` calls at once, ``queue`` waiting, each for at most ``timeout_s``."""

    def __init__(self, name: str, concurrency: int, queue: int, timeout_s: float):
        if concurrency < 1 or queue < 0 or timeout_s < 0:
            raise ValueError(f"lane {name}: concurrency >= 1, queue >= 0 and timeout >= 0 required")
        self.name = name
        self.concurrency = concurrency
        self.queue = queue
        self.timeout_s = timeout_s
        self.running = 0
        self.waiting = 0
        self._cond = threading.Condition()

    @contextmanager
    def admit(self, context=None) -> Iterator[None]:
        """Hold a slot for the body of the ``with``; ``Overloaded`` when none can be had in time."""
        self._acquire(context)
        try:
            yield
        finally:
            with self._cond:
                self.running -= 1
                self._cond.notify()

    def _acquire(self, context) -> None:
        with self._cond:
            if self.running < self.concurrency and self.waiting == 0:
                self.running += 1
                return
            if self.waiting >= self.queue:
                raise Overloaded(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server overloaded: {self.running} {self.name} calls running and {self.waiting} waiting "
                    f"(limits {self.concurrency} and {self.queue}); retry later",
                )
            self.waiting += 1
            start = time.monotonic()
            limit = start + self.timeout_s
            remaining = context.time_remaining() if context is not None else None
            deadline = start + remaining if remaining is not None else None
            try:
                while self.running >= self.concurrency:
                    now = time.monotonic()
                    if deadline is not None and now >= deadline and deadline <= limit:
                        raise Overloaded(grpc.StatusCode.DEADLINE_EXCEEDED,
                                         f"deadline exceeded after {now - start:.3f}s waiting for a {self.name} slot")
                    if now >= limit:
                        raise Overloaded(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"server overloaded: no {self.name} slot free within {self.timeout_s:g}s; retry later",
                        )
                    if context is not None and not context.is_active():
                        raise Overloaded(grpc.StatusCode.CANCELLED, "the call was cancelled while it waited")
                    wake = min(limit, deadline) if deadline is not None else limit
                    self._cond.wait(min(wake - now, _POLL_S))
            finally:
                self.waiting -= 1
            self.running += 1

    def snapshot(self) -> tuple[int, int]:
        """(running, waiting) right now."""
        with self._cond:
            return self.running, self.waiting
