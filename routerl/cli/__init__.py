"""The ``routerl`` command line.

Each ``routerl/cli/cmd_<name>.py`` module defines ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` on the parser; ``main`` discovers them. A command returns an exit
code; a ``CliError`` (or a ValueError/FileNotFoundError from validation) prints ``routerl: error:
...`` and exits with 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routerl", description="LLM router: evaluate, train, serve and query.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    package = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`routerl route ... | head`): stop quietly, like a killed-by-SIGPIPE
        # tool, and point stdout at /dev/null so the flush at exit does not complain either.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except (CliError, ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"routerl: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that is a directory, under a file, not writable, ...: no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"routerl: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
