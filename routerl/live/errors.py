"""Typed errors of live model calls.

``ProviderError`` is the base: a call that did not produce an answer. ``ProviderTimeout``: the
provider did not answer within the timeout. ``ProviderUnavailable``: rate limited (429), a server
error (5xx) or no connection, still so after the configured retries. Any other failure (a 4xx
such as a bad key or an unknown model name, a malformed response, a missing key variable) is a
plain ``ProviderError`` and is not retried. Messages never contain an API key.

A failed call may still have been billed: a provider that reports token usage on an answer with
no content (a refusal, a tool call, a length cut) charges for it. Such an error carries that
usage and its cost (``prompt_tokens``, ``completion_tokens``, ``cost_usd``); every other error
carries zeros.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A model call that produced no answer.

    Attributes:
        model_id: the descriptor id (or provider model name) of the model called.
        reason: a short, loggable reason (no secrets), e.g. ``"HTTP 500 after 3 tries"``.
        status: the HTTP status when there was one, else None.
        prompt_tokens, completion_tokens, cost_usd: what the provider billed for the failed
            call (its reported usage; 0 when it reported none).
    """

    kind = "error"

    def __init__(self, model_id: str, reason: str, status: int | None = None, *, prompt_tokens: int = 0,
                 completion_tokens: int = 0, cost_usd: float = 0.0):
        super().__init__(f"{model_id}: {reason}")
        self.model_id = model_id
        self.reason = reason
        self.status = status
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost_usd = cost_usd


class ProviderTimeout(ProviderError):
    """The provider did not answer within the timeout."""

    kind = "timeout"


class ProviderUnavailable(ProviderError):
    """Rate limited, a server error or unreachable, after every retry. ``retry_after_s``: the
    wait the server asked for (``Retry-After``), when it sent one."""

    kind = "unavailable"
    retry_after_s: float | None = None


def shorten(text: object, limit: int = 200) -> str:
    """``text`` on one line (white space folded), cut to ``limit`` characters with "...": for
    reasons that quote what a provider or a client said."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
