"""Reading a user's text file (a config, a catalog, a splits file) with errors that name it.

``read_text(path, "catalog")`` returns the file's UTF-8 text. A missing file raises
``FileNotFoundError("catalog not found: <path>")``; a directory or text that is not UTF-8 raises
``ValueError("<path>: ...")``, one line each, which the CLI prints as ``routerl: error: ...``.
"""

from __future__ import annotations

from pathlib import Path


def read_text(path: str | Path, what: str) -> str:
    """The text of ``path`` (see the module docstring); ``what`` names the kind of file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory (expected the {what})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
