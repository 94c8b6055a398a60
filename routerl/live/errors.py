"""Typed errors of live model calls.

``ProviderError`` is the base: a call that did not produce an answer. ``ProviderTimeout``: the
provider did not answer within the timeout. ``ProviderUnavailable``: rate limited (429), a server
error (5xx) or no connection, still so after the configured retries. Any other failure (a 4xx
such as a bad key or an unknown model name, a malformed response, a missing key variable) is a
plain ``ProviderError`` and is not retried. Messages never contain an API key.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A model call that produced no answer.

    Attributes:
        model_id: the descriptor id (or provider model name) of the model called.
        reason: a short, loggable reason (no secrets), e.g. ``"HTTP 500 after 3 tries"``.
        status: the HTTP status when there was one, else None.
    """

    kind = "error"

    def __init__(self, model_id: str, reason: str, status: int | None = None):
        super().__init__(f"{model_id}: {reason}")
        self.model_id = model_id
        self.reason = reason
        self.status = status


class ProviderTimeout(ProviderError):
    """The provider did not answer within the timeout."""

    kind = "timeout"


class ProviderUnavailable(ProviderError):
    """Rate limited, a server error or unreachable, after every retry. ``retry_after_s``: the
    wait the server asked for (``Retry-After``), when it sent one."""

    kind = "unavailable"
    retry_after_s: float | None = None
