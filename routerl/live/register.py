"""Where a probed descriptor goes: a catalog YAML file, or a running router server.

``register_in_catalog(desc, path)`` appends the descriptor to a catalog (creating it), or
replaces the entry with the same id when ``replace`` is set. ``RegisterHook`` is any callable
taking the descriptor; ``register_remote(target, desc)`` hands it to the hook installed with
``set_remote_registrar`` (``fn(target, descriptor)``); without one it uses the gRPC client
(``routerl.client.RouterClient.register_model``), so ``routerl probe --register HOST:PORT``
registers with a running ``routerl serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from routerl.descriptors.catalog import load_catalog, save_catalog
from routerl.descriptors.model import ModelDescriptor

RegisterHook = Callable[[ModelDescriptor], None]
RemoteRegistrar = Callable[[str, ModelDescriptor], None]

_remote_registrar: RemoteRegistrar | None = None


def register_in_catalog(desc: ModelDescriptor, path: str | Path, *, replace: bool = False) -> None:
    """Append ``desc`` to the catalog at ``path`` (an existing id is an error unless ``replace``)."""
    path = Path(path)
    models = load_catalog(path) if path.exists() else []
    ids = [m.id for m in models]
    if desc.id in ids:
        if not replace:
            raise ValueError(f"{path}: field 'id': model {desc.id!r} is already in the catalog (use --replace to overwrite it)")
        models[ids.index(desc.id)] = desc
    else:
        models.append(desc)
    save_catalog(models, path)


def catalog_hook(path: str | Path, *, replace: bool = False) -> RegisterHook:
    """A ``RegisterHook`` writing to the catalog at ``path``."""
    return lambda desc: register_in_catalog(desc, path, replace=replace)


def set_remote_registrar(fn: RemoteRegistrar | None) -> None:
    """Install (or remove, with None) the function that registers a descriptor with a server."""
    global _remote_registrar
    _remote_registrar = fn


def grpc_registrar(target: str, desc: ModelDescriptor) -> None:
    """The default registrar: ``RegisterModel`` through ``routerl.client.RouterClient``."""
    from routerl.client import RouterClient

    with RouterClient(target) as client:
        client.register_model(desc)


def register_remote(target: str, desc: ModelDescriptor) -> None:
    """Register ``desc`` with the server at ``target`` through the installed registrar (by
    default ``grpc_registrar``, when the gRPC client is importable)."""
    registrar = _remote_registrar
    if registrar is None:
        try:
            import routerl.client  # noqa: F401
        except ImportError:
            raise ValueError(
                f"cannot register with {target!r}: no server registrar is installed "
                "(routerl.live.register.set_remote_registrar); write a catalog with --catalog instead"
            ) from None
        registrar = grpc_registrar
    registrar(target, desc)
