"""Where a probed descriptor goes: a catalog YAML file, or a running router server.

``register_in_catalog(desc, path)`` appends the descriptor to a catalog (creating it), or
replaces the entry with the same id when ``replace`` is set; the file's leading comment block
(e.g. the rebuild command ``routerl catalog build`` writes) is kept, and the file is replaced
atomically (a temporary file beside it, then ``os.replace``), so an interrupted write never
leaves half a catalog. The read, the change and the replace happen under an exclusive lock on a
side file (``<catalog>.lock``, ``fcntl.flock``), so two registrations finishing together (two
probe runs writing one catalog) both land. ``check_catalog(path, model_id)`` checks the same things first (the file
parses, the id is free unless ``replace``, the place is writable), before a probe run spends
anything. ``RegisterHook`` is any callable
taking the descriptor; ``register_remote(target, desc)`` hands it to the hook installed with
``set_remote_registrar`` (``fn(target, descriptor)``); without one it uses the gRPC client
(``routerl.client.RouterClient.register_model``; ``replace`` updates a model already registered,
``client_options`` such as ``token_env``/``tls_ca`` go to the client), so
``routerl probe --register HOST:PORT`` registers with a running ``routerl serve``.
``check_remote(target, model_id)`` asks the server first (reachable, token accepted, the id free
unless ``replace``), so a probe run does not spend money on a descriptor that cannot be
registered.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: registrations are not serialized
    fcntl = None

from routerl.descriptors.catalog import CATALOG_VERSION, load_catalog
from routerl.descriptors.model import ModelDescriptor
from routerl.text_files import write_text_atomically
from routerl.yaml_numbers import dump_yaml

RegisterHook = Callable[[ModelDescriptor], None]
RemoteRegistrar = Callable[[str, ModelDescriptor], None]

_remote_registrar: RemoteRegistrar | None = None


def _catalog_models(path: Path, model_id: str, replace: bool) -> list[ModelDescriptor]:
    """The models of the catalog at ``path`` ([] when absent); ``ValueError`` when it is malformed
    or already holds ``model_id`` (unless ``replace``)."""
    models = load_catalog(path) if path.exists() else []
    if not replace and any(m.id == model_id for m in models):
        raise ValueError(f"{path}: field 'id': model {model_id!r} is already in the catalog (use --replace to overwrite it)")
    return models


def check_catalog(path: str | Path, model_id: str, *, replace: bool = False) -> None:
    """Before probing: the catalog at ``path`` parses (when it exists), does not hold ``model_id``
    yet (unless ``replace``) and can be written; ``ValueError`` otherwise."""
    path = Path(path)
    _catalog_models(path, model_id, replace)  # a directory fails in read_text
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot write the catalog here ({folder} is not a writable directory)")


def _leading_comments(text: str) -> str:
    """The comment block (and blank lines) at the top of a YAML text."""
    kept = []
    for line in text.splitlines(keepends=True):
        if line.strip() and not line.lstrip().startswith("#"):
            break
        kept.append(line)
    header = "".join(kept)
    return header if not header or header.endswith("\n") else header + "\n"


@contextmanager
def catalog_lock(path: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of the catalog at ``path`` (``<path>.lock``, created when absent
    and left in place) for a ``with`` block; other processes registering there wait."""
    path = Path(os.path.realpath(path))  # one lock per file, whatever link it is reached by
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def register_in_catalog(desc: ModelDescriptor, path: str | Path, *, replace: bool = False) -> None:
    """Append ``desc`` to the catalog at ``path`` (an existing id is an error unless ``replace``),
    keeping the file's leading comments; the file is replaced atomically, under the catalog's
    lock (``catalog_lock``), so concurrent registrations do not undo each other."""
    path = Path(path)
    with catalog_lock(path):
        models = _catalog_models(path, desc.id, replace)
        header = _leading_comments(path.read_text(encoding="utf-8")) if path.exists() else ""
        ids = [m.id for m in models]
        if desc.id in ids:
            models[ids.index(desc.id)] = desc
        else:
            models.append(desc)
        body = dump_yaml({"version": CATALOG_VERSION, "models": [m.to_dict() for m in models]}, sort_keys=False)
        write_text_atomically(path, header + body)


def catalog_hook(path: str | Path, *, replace: bool = False) -> RegisterHook:
    """A ``RegisterHook`` writing to the catalog at ``path``."""
    return lambda desc: register_in_catalog(desc, path, replace=replace)


def set_remote_registrar(fn: RemoteRegistrar | None) -> None:
    """Install (or remove, with None) the function that registers a descriptor with a server."""
    global _remote_registrar
    _remote_registrar = fn


def grpc_registrar(target: str, desc: ModelDescriptor, *, replace: bool = False, **client_options) -> None:
    """The default registrar: ``RegisterModel`` through ``routerl.client.RouterClient`` (with
    ``replace``, ``UpdateModel`` when the id is already registered)."""
    import grpc

    from routerl.client import RouterClient, RouterClientError

    with RouterClient(target, **client_options) as client:
        try:
            client.register_model(desc)
        except RouterClientError as exc:
            if not (replace and exc.code == grpc.StatusCode.ALREADY_EXISTS):
                raise
            client.update_model(desc)


def _default_registrar_available(target: str) -> bool:
    if _remote_registrar is not None:
        return False
    try:
        import routerl.client  # noqa: F401
    except ImportError:
        raise ValueError(
            f"cannot register with {target!r}: no server registrar is installed "
            "(routerl.live.register.set_remote_registrar); write a catalog with --catalog instead"
        ) from None
    return True


def check_remote(target: str, model_id: str, *, replace: bool = False, **client_options) -> None:
    """Before probing: the server at ``target`` answers, accepts the token, and ``model_id`` is
    not registered yet (unless ``replace``); ``ValueError`` or ``RouterClientError`` otherwise.
    Nothing is checked when a custom registrar is installed."""
    if not _default_registrar_available(target):
        return
    import grpc

    from routerl.client import RouterClient, RouterClientError

    with RouterClient(target, **client_options) as client:
        try:
            client.get_model(model_id)
        except RouterClientError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return
            raise
    if not replace:
        raise ValueError(f"model {model_id!r} is already registered with {target}; pass --replace to update it")


def register_remote(target: str, desc: ModelDescriptor, *, replace: bool = False, **client_options) -> None:
    """Register ``desc`` with the server at ``target`` through the installed registrar (by
    default ``grpc_registrar``, when the gRPC client is importable; ``replace`` and
    ``client_options`` apply to it only)."""
    if _default_registrar_available(target):
        grpc_registrar(target, desc, replace=replace, **client_options)
    else:
        _remote_registrar(target, desc)
