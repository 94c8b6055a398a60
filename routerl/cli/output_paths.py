"""Output paths of CLI commands, checked before the work that fills them runs.

``output_file(path, "--out")`` fails at once, naming the flag, when the file could not be written
later (the path is a directory, or a file stands where one of its parent directories must be),
instead of after a benchmark or a catalog build has run. ``output_dir`` does the same for a
directory. Neither creates anything.
"""

from __future__ import annotations

from pathlib import Path

from routerl.cli import CliError


def _check_parents(path: Path, flag: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CliError(f"{flag}: {parent} is a file, so {path} cannot be created")
            return


def output_file(path: str | Path, flag: str) -> Path:
    """``path`` as a ``Path``, after checking that a file can be written there."""
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{flag}: {path} is a directory; give a file path")
    _check_parents(path, flag)
    return path


def output_dir(path: str | Path, flag: str) -> Path:
    """``path`` as a ``Path``, after checking that it is or can become a directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag}: {path} exists and is not a directory")
    _check_parents(path, flag)
    return path
