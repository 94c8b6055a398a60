"""YAML as routerl's files read and write it: ``1e-4`` is a number, as in YAML 1.2.

PyYAML follows YAML 1.1, where an exponent without a dot (``1e-4``, ``5e-2``) is text and only
``1.0e-4`` is a float, so a catalog price or a learning rate written the usual way failed as "must
be a number, got '5e-2'". Every YAML file routerl reads (training configs and ``--set`` values,
model catalogs, server configs, a checkpoint's ``routerl_config.yaml``) goes through ``load_yaml``;
every file it writes goes through ``dump_yaml``, which quotes a string that ``load_yaml`` would
read as a number, so a written file reads back as it was. Both are PyYAML's safe variants (no
arbitrary objects).

    load_yaml("lr: 1e-4")                  # {'lr': 0.0001}
    read_yaml_file("cat.yaml", "catalog")  # the same, with errors that name the file
    dump_yaml({"id": "1e5"})               # "id: '1e5'\\n"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from routerl.text_files import read_text

# An exponent with or without a dot: YAML 1.2's float form that YAML 1.1 lacks (1e-4, 5E3, .5e1).
_EXPONENT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
_FIRST = list("-+0123456789.")


class NumberLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` as a float."""


class NumberDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes strings ``NumberLoader`` would read as floats."""


for _cls in (NumberLoader, NumberDumper):  # copies SafeLoader's / SafeDumper's resolvers first: they are unchanged
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, _FIRST)


def load_yaml(text: str) -> Any:
    """``text`` parsed as YAML (see the module docstring); raises ``yaml.YAMLError`` on bad syntax."""
    return yaml.load(text, Loader=NumberLoader)


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The YAML document in ``path``. Errors name the file, on one line: a missing file raises
    ``FileNotFoundError("<what> not found: <path>")``; a directory, text that is not UTF-8 or bad
    syntax raise ``ValueError("<path>: ...")`` (syntax errors with their line and column)."""
    text = read_text(path, what)
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``exc`` in one line: what is wrong and where (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def dump_yaml(data: Any, **kwargs) -> str:
    """``data`` as YAML text that ``load_yaml`` reads back unchanged; ``kwargs`` as ``yaml.dump``'s."""
    return yaml.dump(data, Dumper=NumberDumper, **kwargs)
