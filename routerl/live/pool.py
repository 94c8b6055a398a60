"""Providers for descriptors, built on first use and cached.

A server's registry changes while it runs (models are registered, re-priced, removed), so the
executor asks the pool for a descriptor's provider at call time. The pool keeps one
``ChatProvider`` per (id, endpoint, prices) -- a changed descriptor gets a fresh one -- and a
descriptor whose provider cannot be built (no endpoint, its key variable unset) gets ``None`` or
a provider whose calls fail with that reason, so the executor falls back and says why.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

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
        key = self._key(desc)
        with self._lock:
            provider = self._cache.get(key)
            if provider is None:
                stale = [k for k in self._cache if k[0] == desc.id]
                for k in stale:  # the descriptor changed: drop its old provider
                    self._cache.pop(k).close()
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
