"""Shared pieces of the CLI commands that call a running server (``route``, ``models``,
``complete --target``, ``probe --register``).

``add_client_args`` adds ``--target``/``--timeout``/``--json`` and the security flags
``--token-env NAME`` (the environment variable holding the bearer token; default
``ROUTERL_TOKEN``, used when set), ``--tls-ca PEM`` and ``--tls``; ``connect(args)`` opens a
``RouterClient`` whose failures surface as ``CliError`` (``routerl: error: NOT_FOUND: ...``,
exit code 2). The token itself is never a flag: command lines are visible to every local user.
``check_target`` and ``check_timeout`` reject a malformed address or deadline up front, naming the
flag (``connect`` applies them to ``--target``/``--timeout``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from contextlib import contextmanager
from typing import Iterator

from routerl.cli import CliError

TARGET_ENV = "ROUTERL_TARGET"
TOKEN_ENV = "ROUTERL_TOKEN"
MAX_TIMEOUT_S = 86_400.0  # a day: a longer deadline is a mistake (and inf overflows gRPC's deadline at once)
# gRPC target schemes whose address is no host:port (a socket path, or a list of addresses)
_UNCHECKED_SCHEMES = ("unix:", "unix-abstract:", "vsock:", "ipv4:", "ipv6:")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.%\w]+\]|[A-Za-z0-9_.\-]+)$")


def add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV, "localhost:50051"),
        help=f"server address host:port (default ${TARGET_ENV} or localhost:50051)",
    )
    parser.add_argument("--timeout", type=float, default=10.0,
                        help=f"deadline of each call in seconds (default 10, at most {MAX_TIMEOUT_S:g})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_security_args(parser)


def add_security_args(parser: argparse.ArgumentParser) -> None:
    """``--token-env``, ``--tls-ca`` and ``--tls`` (for commands that add their own ``--target``)."""
    parser.add_argument("--token-env", default=TOKEN_ENV, metavar="NAME",
                        help=f"environment variable holding the bearer token (default {TOKEN_ENV}; sent when set)")
    parser.add_argument("--tls-ca", metavar="PEM", help="CA certificate of a TLS server (turns TLS on)")
    parser.add_argument("--tls", action="store_true", help="TLS with the system's trusted roots")


def client_options(args: argparse.Namespace) -> dict:
    """``RouterClient`` keyword arguments from the security flags (``token_env``, ``tls``, ``tls_ca``)."""
    token_env = getattr(args, "token_env", None)
    if token_env and token_env != TOKEN_ENV and not os.environ.get(token_env, "").strip():
        raise CliError(f"--token-env {token_env}: the environment variable is not set or empty")
    return {"token_env": token_env, "tls": getattr(args, "tls", False), "tls_ca": getattr(args, "tls_ca", None)}


def client_error(exc, target: str, token_env: str | None) -> CliError:
    """The one-line ``CliError`` for a failed call (a ``RouterClientError``)."""
    where = f" (field {exc.field})" if exc.field and exc.field not in exc.details else ""
    hint = ""
    if exc.code.name == "UNAUTHENTICATED":
        hint = f"; put the token in ${token_env or TOKEN_ENV} (or name another variable with --token-env)"
    return CliError(f"{exc.code.name}: {exc.details}{where}{hint} [{target}]")


def check_target(target: str | None, flag: str = "--target") -> str:
    """``target`` when it is a server address ``host:port`` (port 1-65535; an IPv6 host in
    brackets; ``dns:///host:port`` too; ``unix:PATH`` and gRPC's other socket schemes unchecked),
    else a ``CliError`` naming ``flag``."""
    if target is None or not target.strip():
        raise CliError(f"{flag} is empty; give the server address as host:port (e.g. localhost:50051)")
    if target != target.strip() or any(c.isspace() for c in target):
        raise CliError(f"{flag} {target!r}: the address must not contain spaces")
    if target.startswith(_UNCHECKED_SCHEMES):
        return target
    address = target
    if address.startswith("dns:"):
        address = address[len("dns:"):]
        if address.startswith("//"):  # dns://[authority]/host:port
            address = address[2:].partition("/")[2]
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise CliError(f"{flag} {target!r}: expected host:port (e.g. localhost:50051)")
    if ":" in host and not host.startswith("["):
        raise CliError(f"{flag} {target!r}: put an IPv6 address in brackets, e.g. [::1]:50051")
    if not _HOST.match(host):
        raise CliError(f"{flag} {target!r}: {host!r} is not a host name or address")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise CliError(f"{flag} {target!r}: the port must be a number from 1 to 65535, got {port!r}")
    return target


def check_timeout(value: float | None, flag: str = "--timeout", *, maximum: float = MAX_TIMEOUT_S) -> float | None:
    """``value`` (seconds) when it is a finite number in (0, ``maximum``] (or None), else a
    ``CliError`` naming ``flag``."""
    if value is not None and not (math.isfinite(value) and 0 < value <= maximum):
        raise CliError(f"{flag} must be a number of seconds greater than 0 and at most {maximum:g}, got {value:g}")
    return value


@contextmanager
def connect(args: argparse.Namespace) -> Iterator["RouterClient"]:  # noqa: F821
    """A client for ``args.target``; a failed call becomes a ``CliError`` naming the status."""
    from routerl.client import RouterClient, RouterClientError

    check_target(args.target)
    check_timeout(args.timeout)
    options = client_options(args)
    try:
        client = RouterClient(args.target, timeout=args.timeout, **options)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        yield client
    except RouterClientError as exc:
        raise client_error(exc, args.target, options["token_env"]) from None
    finally:
        client.close()


def key_values(pairs: list[str] | None, name: str, convert=str) -> dict:
    """Parse repeated ``KEY=VALUE`` flags; a malformed one is a ``CliError`` naming the flag."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{name} expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = convert(value)
        except ValueError:
            raise CliError(f"{name} {key}: not a valid {convert.__name__}: {value!r}") from None
    return out
