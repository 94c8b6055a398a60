"""The persistent model registry: model descriptors in SQLite.

* One row per model (``id``, the descriptor as JSON, a registration sequence number), plus a
  ``meta`` table holding the schema version and the registry ``version`` counter.
* A new database is seeded from a catalog YAML in the same transaction that creates the schema, so
  a failed seed leaves no half-made registry, and a database that exists is never re-seeded (a
  model removed at run time stays removed across restarts).
* A file that holds other tables, or a registry of a newer schema, is refused before anything in
  it is changed (its journal mode included).
* Every write runs in one ``BEGIN IMMEDIATE`` transaction that also bumps ``version``, and is
  committed (WAL, ``synchronous=FULL``) before the method returns: once ``add`` returns, the model
  survives a crash of the process or a power loss.
* Readers get an immutable ``Snapshot``, read in one transaction through a read-only connection
  of its own; it is rebuilt on the next read after the file changed (``PRAGMA data_version``: a
  write through this store or another process). A write waiting for another process's write lock
  does not hold up readers.

Errors: ``ModelExistsError`` (an id registered twice), ``ModelNotFoundError`` (an unknown id),
``DescriptorError`` (an invalid descriptor, naming the field), ``ModelChangedError`` (a
``modify`` against an ``etag`` the model no longer has), ``StoreError`` (an unusable file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Union

from routerl.descriptors.model import DescriptorError, ModelDescriptor, shown_id

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE models (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    descriptor  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX models_seq ON models (seq);
"""


class StoreError(RuntimeError):
    """The registry file cannot be used (not a routerl registry, newer schema, I/O error)."""


class ModelExistsError(KeyError):
    """A model with this id is already registered."""

    def __init__(self, model_id: str):
        super().__init__(f"model {shown_id(model_id)!r} is already registered")
        self.model_id = model_id

    def __str__(self) -> str:
        return self.args[0]


class ModelNotFoundError(KeyError):
    """No model with this id is registered."""

    def __init__(self, model_id: str):
        super().__init__(f"model {shown_id(model_id)!r} is not registered")
        self.model_id = model_id

    def __str__(self) -> str:
        return self.args[0]


class ModelChangedError(RuntimeError):
    """An update was made against a descriptor (its ``etag``) that has changed since it was read."""

    def __init__(self, model_id: str, expected: str, current: str):
        super().__init__(f"model {shown_id(model_id)!r} changed since it was read (etag {expected!r}, now {current!r}): "
                         "read it again and reapply the change")
        self.model_id = model_id


def descriptor_etag(desc: ModelDescriptor) -> str:
    """A short hash of the stored form of ``desc``: equal exactly when the descriptors are equal,
    so a read-modify-write can check that nothing changed in between (``ModelStore.modify``)."""
    return hashlib.sha256(_encode(desc).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """The registry at one version: models in registration order, and by id."""

    version: int
    models: tuple[ModelDescriptor, ...]
    # Each model's registration sequence number (increasing in registration order): a position
    # that other registrations and removals do not shift, for paging through the registry.
    seqs: tuple[int, ...] = ()
    by_id: dict[str, ModelDescriptor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {m.id: m for m in self.models})
        if not self.seqs:
            object.__setattr__(self, "seqs", tuple(range(1, len(self.models) + 1)))

    def get(self, model_id: str) -> ModelDescriptor | None:
        return self.by_id.get(model_id)

    def __len__(self) -> int:
        return len(self.models)


CatalogSource = Union[Iterable[ModelDescriptor], Callable[[], Iterable[ModelDescriptor]]]


def _encode(desc: ModelDescriptor) -> str:
    return json.dumps(desc.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)


class ModelStore:
    """The model registry in a SQLite file (``":memory:"`` for a throwaway one).

    ``catalog``: the models to seed a *new* database with, or a function returning them (called
    only when the database is new, so an existing registry never needs its catalog file). It is
    ignored when the file already holds a registry. Thread-safe: writes go through one connection
    under a lock; snapshots are read through a second, read-only connection under its own lock, so
    a write waiting for the file's write lock (another process mid-write) never holds up routing
    (in WAL mode readers are not blocked by a writer). A ``":memory:"`` registry has one connection.
    """

    def __init__(self, path: str | Path, catalog: CatalogSource | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create its directory ({exc.strerror}: {exc.filename})") from None
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the model registry ({exc})") from None
        try:
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._check_owner()  # before the journal mode changes: a refused file is left as it was
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and self.path != ":memory:":
                log.warning("%s: SQLite refused WAL mode (journal_mode=%s); writes stay durable but slower", self.path, mode)
            self._db.execute("PRAGMA synchronous = FULL")
            self.seeded = self._init_schema(catalog)
            if self.path == ":memory:":
                self._rdb, self._read_lock = self._db, self._lock
            else:
                self._rdb = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
                self._rdb.execute("PRAGMA busy_timeout = 30000")
                self._rdb.execute("PRAGMA query_only = ON")
                self._read_lock = threading.RLock()
            self._data_version = -1
            self._snapshot = Snapshot(0, ())
            self._reload()
        except BaseException as exc:
            self._db.close()
            if getattr(self, "_rdb", self._db) is not self._db:
                self._rdb.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot open the model registry ({exc})") from None
            raise

    # -- setup ---------------------------------------------------------------------------------
    def _tables(self) -> set[str]:
        """The names of the tables in the file."""
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _foreign(self, tables: set[str]) -> StoreError:
        return StoreError(f"{self.path}: not a routerl model registry (it holds tables {sorted(tables)})")

    def _check_owner(self) -> None:
        """Raise ``StoreError`` unless the file is new (no tables) or a registry this routerl can
        read. Only reads: it runs before anything is changed (``_init_schema`` checks again under
        its write lock, in case another process made the file meanwhile)."""
        tables = self._tables()
        if "meta" in tables:
            self._check_schema()
        elif tables:
            raise self._foreign(tables)

    def _init_schema(self, catalog: CatalogSource | None) -> bool:
        """Create the schema (and seed it) when the file is new; return whether it was seeded."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                tables = self._tables()
                if "meta" in tables:
                    self._db.execute("ROLLBACK")
                    self._check_schema()
                    return False
                if tables:
                    raise self._foreign(tables)
                if callable(catalog):
                    catalog = catalog()
                catalog = list(catalog or ())
                # Statement by statement: executescript() would commit the open transaction.
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                now = time.time()
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("version", "0"), ("created_at", repr(now))],
                )
                seeded = bool(catalog)
                for seq, desc in enumerate(catalog or (), start=1):
                    self._db.execute(
                        "INSERT INTO models (id, seq, descriptor, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                        (desc.id, seq, _encode(desc), now, now),
                    )
                if seeded:
                    self._db.execute("UPDATE meta SET value = '1' WHERE key = 'version'")
                self._db.execute("COMMIT")
                if seeded:
                    log.info("%s: new model registry seeded with %d models", self.path, len(catalog or ()))
                return seeded
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _check_schema(self) -> None:
        rows = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        if not rows:
            raise StoreError(f"{self.path}: not a routerl model registry (no schema_version)")
        try:
            schema = int(rows[0][0])
        except (TypeError, ValueError):
            raise StoreError(f"{self.path}: not a routerl model registry (schema_version {rows[0][0]!r})") from None
        if schema > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: registry schema {schema} is newer than this routerl ({SCHEMA_VERSION})")

    # -- reads ---------------------------------------------------------------------------------
    def _reload(self) -> None:
        """Rebuild the snapshot from the file (called with the read lock held or during __init__).

        One read transaction: ``data_version``, the rows and the version all come from the same
        state of the file. (Read one by one, a commit by another process in between could leave a
        snapshot of the old rows stamped with the new ``data_version``, never reloaded.)"""
        db = self._rdb
        db.execute("BEGIN")
        try:
            data_version = db.execute("PRAGMA data_version").fetchone()[0]
            rows = db.execute("SELECT id, seq, descriptor FROM models ORDER BY seq").fetchall()
            version = int(db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])
        finally:
            db.execute("COMMIT")
        models, seqs = [], []
        for model_id, seq, blob in rows:
            try:
                models.append(ModelDescriptor.from_dict(json.loads(blob)))
                seqs.append(int(seq))
            except (DescriptorError, ValueError, TypeError) as exc:
                # Kept in the file (nothing stored is deleted), but not served.
                log.error("%s: stored model %r is not valid and is not served: %s", self.path, model_id, exc)
        self._snapshot = Snapshot(version, tuple(models), tuple(seqs))
        self._data_version = data_version

    def snapshot(self) -> Snapshot:
        """The current registry (reloaded first when the file changed: a write through this store
        or another process)."""
        with self._read_lock:
            if self._rdb.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
                self._reload()
            return self._snapshot

    @property
    def version(self) -> int:
        return self.snapshot().version

    def get(self, model_id: str) -> ModelDescriptor:
        desc = self.snapshot().get(model_id)
        if desc is None:
            raise ModelNotFoundError(model_id)
        return desc

    def list(self) -> list[ModelDescriptor]:
        return list(self.snapshot().models)

    # -- writes --------------------------------------------------------------------------------
    def _write(self, fn) -> int:
        """Run ``fn(now)`` in one immediate transaction that bumps and returns the version (the
        next ``snapshot()`` shows the write)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                fn(time.time())
                self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")
                version = int(self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        if self.path == ":memory:":  # one connection: data_version does not see its own commits
            with self._read_lock:
                self._reload()
        return version

    def add(self, desc: ModelDescriptor) -> int:
        """Register a new model; ``ModelExistsError`` when its id is taken. Returns the new version."""
        desc.validate()
        blob = _encode(desc)

        def insert(now: float) -> None:
            if self._db.execute("SELECT 1 FROM models WHERE id = ?", (desc.id,)).fetchone():
                raise ModelExistsError(desc.id)
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM models").fetchone()[0]
            self._db.execute(
                "INSERT INTO models (id, seq, descriptor, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (desc.id, seq, blob, now, now),
            )

        return self._write(insert)

    def update(self, desc: ModelDescriptor) -> int:
        """Replace a registered model's descriptor (keeping its place); ``ModelNotFoundError``."""
        desc.validate()
        blob = _encode(desc)

        def replace(now: float) -> None:
            cur = self._db.execute("UPDATE models SET descriptor = ?, updated_at = ? WHERE id = ?", (blob, now, desc.id))
            if cur.rowcount == 0:
                raise ModelNotFoundError(desc.id)

        return self._write(replace)

    def modify(self, model_id: str, change: Callable[[ModelDescriptor], ModelDescriptor], etag: str = "") -> tuple[ModelDescriptor, int]:
        """Read-modify-write in one transaction: ``change(current)`` gives the new descriptor, read
        from the file itself (another process may have written it), so concurrent updates of
        different fields never undo each other. With ``etag``, ``ModelChangedError`` unless the
        stored descriptor still has it. ``ModelNotFoundError``; errors from ``change`` leave the
        registry as it was. Returns the stored descriptor and the new version."""
        result: list[ModelDescriptor] = []

        def replace(now: float) -> None:
            row = self._db.execute("SELECT descriptor FROM models WHERE id = ?", (model_id,)).fetchone()
            if row is None:
                raise ModelNotFoundError(model_id)
            current = ModelDescriptor.from_dict(json.loads(row[0]))
            if etag and descriptor_etag(current) != etag:
                raise ModelChangedError(model_id, etag, descriptor_etag(current))
            desc = change(current)
            if desc.id != model_id:
                raise DescriptorError("id", f"an update cannot rename a model ({model_id!r} -> {desc.id!r})")
            desc.validate()
            self._db.execute("UPDATE models SET descriptor = ?, updated_at = ? WHERE id = ?", (_encode(desc), now, model_id))
            result.append(desc)

        version = self._write(replace)
        return result[0], version

    def remove(self, model_id: str) -> int:
        """Remove a model; ``ModelNotFoundError`` when it is not registered."""

        def delete(now: float) -> None:
            if self._db.execute("DELETE FROM models WHERE id = ?", (model_id,)).rowcount == 0:
                raise ModelNotFoundError(model_id)

        return self._write(delete)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._rdb is not self._db:
            with self._read_lock:
                self._rdb.close()

    def __enter__(self) -> "ModelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
