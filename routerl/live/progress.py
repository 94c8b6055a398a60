"""A progress display for long runs: a tqdm bar when tqdm is installed, else a counter on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(n)`` after each finished item; ``close()`` at the end. Disabled: does nothing."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, initial: int = 0, stream=None):
        self.total = total
        self.desc = desc
        self.count = initial
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self._bar = None
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._print(force=True)
        else:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="probe", file=self._stream)

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._print(force=self.count >= self.total)

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= 1.0:
            self._last = now
            print(f"\r{self.desc}: {self.count}/{self.total}", end="", file=self._stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            print(file=self._stream, flush=True)
