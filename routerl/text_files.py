"""Reading a user's text file (a config, a catalog, a splits file) with errors that name it.

``read_text(path, "catalog")`` returns the file's UTF-8 text. A missing file raises
``FileNotFoundError("catalog not found: <path>")``; a directory or text that is not UTF-8 raises
``ValueError("<path>: ...")``, one line each, which the CLI prints as ``routerl: error: ...``.
``write_text_atomically(path, text)`` replaces a file so that a reader (or a crash) sees the old
text or the new, never half of it.
"""

from __future__ import annotations

import os
import tempfile
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


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then move it over ``path`` (keeping the
    mode of the file it replaces; a symlink's target is written)."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
