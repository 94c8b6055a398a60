"""Bearer-token authentication of ``routerl.v1.Router`` calls.

A server started with tokens checks the ``authorization: Bearer <token>`` request metadata of
every ``routerl.v1.Router`` call (health checking and reflection stay open):

* the **routing token** (``--auth-token-env``/``--auth-token-file``) may call ``Route``,
  ``GetModel`` and ``ListModels``;
* the **admin token** (``--admin-token-env``/``--admin-token-file``) may call everything,
  including the registry writes ``RegisterModel``, ``UpdateModel`` and ``RemoveModel``.

No token, a malformed header or an unknown token: ``UNAUTHENTICATED``. The routing token on a
registry write (or any token on a write when no admin token is configured): ``PERMISSION_DENIED``.
When only an admin token is configured, every call needs it.

Tokens come from environment variables or files (never from the command line, where ``ps`` shows
them), are compared in constant time (``hmac.compare_digest``, against every configured token),
and are never logged or echoed in an error message.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

WRITE_METHODS = frozenset({"RegisterModel", "UpdateModel", "RemoveModel"})
AUTH_METADATA_KEY = "authorization"
ROUTING, ADMIN = "routing", "admin"


class AuthFailure(Exception):
    """A refused call: ``code`` is UNAUTHENTICATED or PERMISSION_DENIED."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def read_token(env: str | None = None, path: str | None = None, *, what: str) -> bytes | None:
    """The token named by an environment variable or held in a file (``None`` when neither is set).

    ``ValueError`` (naming the variable or file, never the value) when it is unset, empty or holds
    whitespace inside; surrounding whitespace (a file's trailing newline) is stripped.
    """
    if env and path:
        raise ValueError(f"{what}: give an environment variable or a file, not both")
    if env:
        value = os.environ.get(env, "")
        source = f"environment variable {env}"
    elif path:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{what} file {path} cannot be read ({type(exc).__name__})") from None
        source = f"file {path}"
    else:
        return None
    value = value.strip()
    if not value:
        raise ValueError(f"{what}: {source} is not set or empty")
    if any(ch.isspace() for ch in value) or not value.isprintable() or not value.isascii():
        raise ValueError(f"{what}: {source} must hold one token of printable ASCII without spaces")
    return value.encode("ascii")


@dataclass(frozen=True)
class TokenAuth:
    """The configured tokens; ``check`` names the role of a call's token or raises ``AuthFailure``."""

    routing_token: bytes | None = field(default=None, repr=False)
    admin_token: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.routing_token is not None and self.routing_token == self.admin_token:
            raise ValueError("the routing token and the admin token must differ")

    @property
    def enabled(self) -> bool:
        return self.routing_token is not None or self.admin_token is not None

    def check(self, method: str, metadata) -> str | None:
        """The caller's role (``routing``/``admin``; ``None`` when auth is off) or ``AuthFailure``."""
        if not self.enabled:
            return None
        presented = _bearer(metadata)
        if presented is None:
            raise AuthFailure(grpc.StatusCode.UNAUTHENTICATED,
                              "missing credentials: send the metadata 'authorization: Bearer <token>'")
        # Compare against every configured token, whatever matches, so timing tells nothing.
        is_admin = _equal(presented, self.admin_token)
        is_routing = _equal(presented, self.routing_token)
        if not (is_admin or is_routing):
            raise AuthFailure(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        if method in WRITE_METHODS and not is_admin:
            raise AuthFailure(grpc.StatusCode.PERMISSION_DENIED,
                              f"{method} changes the registry and needs the admin token")
        return ADMIN if is_admin else ROUTING


def _equal(presented: bytes, expected: bytes | None) -> bool:
    if expected is None:
        hmac.compare_digest(presented, presented)  # same work either way
        return False
    return hmac.compare_digest(presented, expected)


def _bearer(metadata) -> bytes | None:
    """The token of the (first) ``authorization`` metadata entry, when it is ``Bearer <token>``."""
    for key, value in metadata or ():
        if key != AUTH_METADATA_KEY:
            continue
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                return None
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return token.encode("ascii")
        except UnicodeEncodeError:
            return None
    return None
