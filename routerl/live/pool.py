"""Providers for descriptors, built on first use and cached.

A server's registry changes while it runs (models are registered, re-priced, removed), so the
executor asks the pool for a descriptor's provider at call time. The pool keeps one
``ChatProvider`` per (id, endpoint, prices) -- a changed descriptor gets a fresh one -- and a
descriptor whose provider cannot be built (no endpoint, its key variable unset) gets ``None`` or
a provider whose calls fail with that reason, so the executor falls back and says why.

A replaced provider is not closed under a call that is using it: it is retired
(``ChatProvider.close_when_idle``) and closes its connections when its last call ends. The
executor takes its provider with ``lease(desc)``, which counts the use from the moment the
provider is looked up (under the pool's lock), so a model re-priced between the look-up and the
call cannot close the client it is about to use.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from routerl.descriptors.model import ModelDescriptor
from routerl.live.errors import ProviderError
from routerl.live.provider import ChatProvider, ProviderAnswer

log = logging.getLogger(__name__)


class UnusableProvider:
    """Stands in for a provider that could not be built: every call raises the error that
    stopped it (e.g. "environment variable X ... is not set")."""

    timeout_s = 1.0

    def __init__(self, error: ProviderError):
        self.error = error

    def complete(self, messages, *, timeout_s: float | None = None) -> ProviderAnswer:
        raise self.error

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass

    def close_when_idle(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProviderPool:
    """``get(desc)`` -> the descriptor's provider (None without an endpoint). Thread-safe.

    ``provider_options`` go to every ``ChatProvider`` (``timeout_s``, ``retry``, ``max_tokens``...).
    """

    def __init__(self, **provider_options: Any):
        self.options = provider_options
        self._cache: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(desc: ModelDescriptor) -> tuple:
        return (desc.id, desc.endpoint, desc.input_price_per_mtok, desc.output_price_per_mtok)

    def get(self, desc: ModelDescriptor):
        if desc.endpoint is None:
            return None
        with self._lock:
            return self._get_locked(desc)

    @contextmanager
    def lease(self, desc: ModelDescriptor) -> Iterator[Any]:
        """``get(desc)`` for the length of a ``with`` block: the provider (None without an
        endpoint) is held from the look-up on, so replacing the descriptor meanwhile does not
        close it under the caller."""
        if desc.endpoint is None:
            yield None
            return
        with self._lock:
            provider = self._get_locked(desc)
            provider.hold()
        try:
            yield provider
        finally:
            provider.release()

    def _get_locked(self, desc: ModelDescriptor):
        key = self._key(desc)
        provider = self._cache.get(key)
        if provider is None:
            stale = [k for k in self._cache if k[0] == desc.id]
            for k in stale:  # the descriptor changed: retire its old provider (closed once no call uses it)
                self._cache.pop(k).close_when_idle()
            try:
                provider = ChatProvider.from_descriptor(desc, **self.options)
            except ProviderError as exc:
                log.warning("%s", exc)
                provider = UnusableProvider(exc)
            except ValueError as exc:  # a malformed endpoint (e.g. a base_url that is not http(s))
                log.warning("%s: %s", desc.id, exc)
                provider = UnusableProvider(ProviderError(desc.id, f"unusable endpoint: {exc}"))
            self._cache[key] = provider
        return provider

    def close(self) -> None:
        with self._lock:
            for provider in self._cache.values():
                provider.close()
            self._cache.clear()
